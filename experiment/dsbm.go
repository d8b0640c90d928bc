package experiment

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/dsbm"
	"github.com/sbtrain/sbtrain/nn"
)

// DSBMOptions maps the config onto the DSBM trainer's options.
func (s *Setup) DSBMOptions() (dsbm.Options, error) {
	c := s.Config
	o := dsbm.Options{
		Data: s.Data, Prior: s.Prior, Dim: s.Dim,
		Sigma: c.DSBM.Sigma, Eps: c.DSBM.Eps, Steps: c.DSBM.Steps,
		First:         dsbm.Coupling(c.DSBM.FirstCoupling),
		Net:           s.Net,
		Iterations:    c.DSBM.Iterations,
		StepsPerPhase: c.Train.Steps,
		Batch:         c.Train.Batch,
		Hyper:         dsb.Hyper{LR: c.Train.LR, EMADecay: c.Train.EMADecay, GradClip: c.Train.GradClip},
		CacheSize:     c.DSBM.CacheSize,
		Shards:        c.DSBM.CacheShards,
		Refresh:       c.DSBM.CacheRefresh,
		WarmStart:     c.DSBM.WarmStart,
		Seed:          c.Seed,
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("dsbm: %w", err)
	}
	return o, nil
}

// dsbmChain is the chain the config describes, for sampling.
func (s *Setup) dsbmChain() (*dsbm.Chain, error) {
	o, err := s.DSBMOptions()
	if err != nil {
		return nil, err
	}
	return o.Chain()
}

// DSBMModel samples with the backward drift: x ~ prior at t = 1, then
// Euler-Maruyama down to t = 0.
type DSBMModel struct {
	Chain             *dsbm.Chain
	Backward, Forward *nn.Net // sampling weights (EMA when trained with it)
}

// Generate runs the backward SDE from start.
func (m *DSBMModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	out, err := m.Chain.Sample(ctx, m.Backward, dsbm.Backward, start, dsbm.SampleOptions{Seed: seed, Path: paths})
	if err != nil {
		return nil, fmt.Errorf("dsbm sample: %w", err)
	}
	// The backward SDE already runs from the prior to the data, the order
	// plots read.
	return &Generated{End: out.End, Paths: out.Path}, nil
}

// GenerateForward runs the forward SDE from data points start; nil
// without a forward drift (a run stopped after a backward phase).
func (m *DSBMModel) GenerateForward(ctx context.Context, start []float32, seed uint64) ([]float32, error) {
	if m.Forward == nil {
		return nil, nil
	}
	out, err := m.Chain.Sample(ctx, m.Forward, dsbm.Forward, start, dsbm.SampleOptions{Seed: seed})
	if err != nil {
		return nil, fmt.Errorf("dsbm forward sample: %w", err)
	}
	return out.End, nil
}

// Nets are the backward and forward drifts.
func (m *DSBMModel) Nets() []RoleNet {
	nets := []RoleNet{{Role: "backward", Net: m.Backward}}
	if m.Forward != nil {
		nets = append(nets, RoleNet{Role: "forward", Net: m.Forward})
	}
	return nets
}

// ModelFromDSBM freezes the trained drifts with their sampling weights.
func (s *Setup) ModelFromDSBM(r *dsbm.Result) (*DSBMModel, error) {
	m := &DSBMModel{Chain: r.Chain}
	var err error
	if m.Backward, err = r.Drift(dsbm.Backward); err != nil {
		return nil, fmt.Errorf("backward drift: %w", err)
	}
	if r.F != nil {
		if m.Forward, err = r.Drift(dsbm.Forward); err != nil {
			return nil, fmt.Errorf("forward drift: %w", err)
		}
	}
	return m, nil
}

func (s *Setup) trainDSBM(ctx context.Context, ev *Evaluator, m *Metrics, progress func(Progress)) (Model, error) {
	opts, err := s.DSBMOptions()
	if err != nil {
		return nil, err
	}
	phases := 2 * opts.Iterations
	opts.AfterIteration = func(ctx context.Context, it int, r *dsbm.Result) error {
		model, err := s.ModelFromDSBM(r)
		if err != nil {
			return err
		}
		f, _, err := ev.Evaluate(ctx, model)
		if err != nil {
			return fmt.Errorf("evaluate imf iteration %d: %w", it, err)
		}
		f.Iteration = it
		m.Iterations = append(m.Iterations, f)
		return nil
	}
	res, err := dsbm.Train(ctx, opts, func(p dsbm.Progress) {
		name := imfPhaseName(p.Phase)
		progress(Progress{
			Phase: name, PhaseIndex: int(p.Phase.Key()), Phases: phases,
			Step: p.Step + 1, Steps: p.Steps, Loss: p.Loss, SamplesPerSec: p.SamplesPerSec,
		})
		if p.Step+1 == p.Steps {
			m.Phases = append(m.Phases, PhaseSummary{Name: name, Steps: p.Steps, FinalLoss: p.Loss, SamplesPerSec: p.SamplesPerSec})
		}
	})
	if err != nil {
		return nil, err
	}
	for i, pl := range res.Losses {
		if i < len(m.Phases) {
			m.Phases[i].Loss = pl.Loss
			m.Phases[i].LossSteps = steps(len(pl.Loss))
		}
	}
	return s.ModelFromDSBM(res)
}

// imfPhaseName names a DSBM phase as DSB's PhaseID.String names an IPF one.
func imfPhaseName(p dsbm.PhaseID) string { return fmt.Sprintf("imf %d %s", p.Iteration, p.Dir) }
