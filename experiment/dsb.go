package experiment

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/nn"
)

// DSBOptions maps the config onto the DSB trainer's options.
func (s *Setup) DSBOptions() (dsb.Options, error) {
	c := s.Config
	ref := dsb.Reference{Kind: dsb.ReferenceKind(c.DSB.Reference), Var: c.DSB.OUVar}
	if c.DSB.OUMean != 0 {
		ref.Mu = make([]float64, s.Dim)
		for i := range ref.Mu {
			ref.Mu[i] = c.DSB.OUMean
		}
	}
	o := dsb.Options{
		Data: s.Data, Prior: s.Prior, Dim: s.Dim,
		N: c.DSB.Steps, GammaMin: c.DSB.GammaMin, GammaMax: c.DSB.GammaMax,
		Reference:     ref,
		Net:           s.Net,
		Iterations:    c.DSB.Iterations,
		StepsPerPhase: c.Train.Steps,
		Batch:         c.Train.Batch,
		Hyper:         dsb.Hyper{LR: c.Train.LR, EMADecay: c.Train.EMADecay, GradClip: c.Train.GradClip},
		CacheSize:     c.DSB.CacheSize,
		Shards:        c.DSB.CacheShards,
		Refresh:       c.DSB.CacheRefresh,
		WarmStart:     c.DSB.WarmStart,
		Seed:          c.Seed,
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("dsb: %w", err)
	}
	return o, nil
}

// schedule is the DSB time grid of the config.
func (s *Setup) schedule() (dsb.Schedule, error) {
	return dsb.NewSchedule(s.Config.DSB.Steps, s.Config.DSB.GammaMin, s.Config.DSB.GammaMax)
}

// DSBModel samples with the backward network: X_N ~ prior, then the chain
// X_k = B(k+1, X_{k+1}) + sqrt(2 gamma_{k+1}) Z down to X_0.
type DSBModel struct {
	Sched             dsb.Schedule
	Dim               int
	Backward, Forward *nn.Net // sampling weights (EMA when trained with it)
}

// Generate runs the backward chain from start.
func (m *DSBModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	mean := &dsb.NetMean{Net: m.Backward, Dir: dsb.Backward, Sched: m.Sched, Dim: m.Dim}
	out, err := dsb.SampleContext(ctx, mean, m.Sched, m.Dim, start, dsb.SampleOptions{Seed: seed, Path: paths})
	if err != nil {
		return nil, fmt.Errorf("dsb sample: %w", err)
	}
	g := &Generated{End: out.End}
	if paths {
		// The chain runs from k = N down to 0; plots read prior to data.
		for k := len(out.Path) - 1; k >= 0; k-- {
			g.Paths = append(g.Paths, out.Path[k])
		}
	}
	return g, nil
}

// Nets are the backward and forward networks.
func (m *DSBModel) Nets() []RoleNet {
	nets := []RoleNet{{Role: "backward", Net: m.Backward}}
	if m.Forward != nil {
		nets = append(nets, RoleNet{Role: "forward", Net: m.Forward})
	}
	return nets
}

// ModelFromDSB freezes the trained nets with their sampling weights.
func (s *Setup) ModelFromDSB(r *dsb.Result) (*DSBModel, error) {
	sched, err := s.schedule()
	if err != nil {
		return nil, err
	}
	m := &DSBModel{Sched: sched, Dim: s.Dim}
	if m.Backward, err = samplingNet(r.B, r.BEMA); err != nil {
		return nil, fmt.Errorf("backward net: %w", err)
	}
	if r.F != nil {
		if m.Forward, err = samplingNet(r.F, r.FEMA); err != nil {
			return nil, fmt.Errorf("forward net: %w", err)
		}
	}
	return m, nil
}

// samplingNet copies net and gives it the EMA weights when there are any.
func samplingNet(net *nn.Net, ema []float32) (*nn.Net, error) {
	if net == nil {
		return nil, fmt.Errorf("not trained")
	}
	cp, err := net.Clone()
	if err != nil {
		return nil, err
	}
	if ema != nil {
		copy(cp.Params(), ema)
	}
	return cp, nil
}
