package experiment

import (
	"context"
	"fmt"
	"time"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/nn"
)

// Progress is one step report, whichever the method.
type Progress struct {
	Phase         string // e.g. "ipf 2 backward", "interpolant"
	PhaseIndex    int    // 0-based
	Phases        int
	Step, Steps   int // Step is 1-based within the phase
	Loss          float64
	SamplesPerSec float64
}

// Metrics is what metrics.json holds.
type Metrics struct {
	Name          string  `json:"name"`
	Method        string  `json:"method"`
	ConfigHash    string  `json:"config_hash"`
	BLAS          string  `json:"blas"`
	WallSeconds   float64 `json:"wall_seconds"`
	SamplesPerSec float64 `json:"train_samples_per_sec"`
	// Workers and AllReduceFraction describe a distributed run: trainer
	// processes, and the mean share of step time spent in the all-reduce.
	Workers           int            `json:"workers,omitempty"`
	AllReduceFraction *float64       `json:"allreduce_fraction,omitempty"`
	Phases            []PhaseSummary `json:"phases"`
	Iterations        []*Figures     `json:"ipf_iterations,omitempty"`
	Final             *Figures       `json:"final"`
}

// PhaseSummary is one training phase.
type PhaseSummary struct {
	Name          string    `json:"name"`
	Steps         int       `json:"steps"`
	FinalLoss     float64   `json:"final_loss"`
	SamplesPerSec float64   `json:"samples_per_sec"`
	Loss          []float64 `json:"-"` // plotted, not stored
	LossSteps     []float64 `json:"-"`
}

// Outcome is a finished run: the model, its figures and what to plot.
type Outcome struct {
	Setup        *Setup
	Model        Model
	Metrics      *Metrics
	Samples      eval.Cloud   // generated from the held-out prior points
	HeldOut      eval.Cloud   // held-out data
	Trajectories []eval.Cloud // the first Eval.Trajectories paths
}

// Train runs the whole method in this process and evaluates the result.
func Train(ctx context.Context, s *Setup, progress func(Progress)) (*Outcome, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	ev, err := s.NewEvaluator()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	m := &Metrics{Name: s.Config.Name, Method: s.Config.Method, ConfigHash: s.Config.Hash(), BLAS: nn.BLAS()}
	var model Model
	switch s.Config.Method {
	case "dsb":
		model, err = s.trainDSB(ctx, ev, m, progress)
	case "si":
		model, err = s.trainSI(ctx, m, progress)
	case "dsbm":
		model, err = s.trainDSBM(ctx, ev, m, progress)
	default:
		err = fmt.Errorf("method %q: want dsb, si or dsbm", s.Config.Method)
	}
	if err != nil {
		return nil, err
	}
	trainSeconds := time.Since(start).Seconds()
	var rows int
	for _, p := range m.Phases {
		rows += p.Steps * s.Config.Train.Batch
	}
	m.SamplesPerSec = float64(rows) / trainSeconds
	out, err := s.conclude(ctx, ev, model, m)
	if err != nil {
		return nil, err
	}
	m.WallSeconds = time.Since(start).Seconds()
	return out, nil
}

// Conclude evaluates a model trained elsewhere (by the distributed
// trainers) against held-out data exactly as Train does, and returns what
// Outcome.Write needs. m carries the training figures; Final is filled in.
func (s *Setup) Conclude(ctx context.Context, model Model, m *Metrics) (*Outcome, error) {
	ev, err := s.NewEvaluator()
	if err != nil {
		return nil, err
	}
	return s.conclude(ctx, ev, model, m)
}

func (s *Setup) conclude(ctx context.Context, ev *Evaluator, model Model, m *Metrics) (*Outcome, error) {
	out := &Outcome{Setup: s, Model: model, Metrics: m, HeldOut: ev.HeldOut()}
	final, gen, err := ev.Evaluate(ctx, model)
	if err != nil {
		return nil, fmt.Errorf("final evaluation: %w", err)
	}
	m.Final = final
	out.Samples = eval.Cloud{Data: gen.End, Dim: s.Dim}
	if out.Trajectories, err = ev.Trajectories(ctx, model); err != nil {
		return nil, fmt.Errorf("trajectories: %w", err)
	}
	return out, nil
}

func (s *Setup) trainDSB(ctx context.Context, ev *Evaluator, m *Metrics, progress func(Progress)) (Model, error) {
	opts, err := s.DSBOptions()
	if err != nil {
		return nil, err
	}
	phases := 2 * opts.Iterations
	opts.AfterIteration = func(ctx context.Context, it int, r *dsb.Result) error {
		model, err := s.ModelFromDSB(r)
		if err != nil {
			return err
		}
		f, _, err := ev.Evaluate(ctx, model)
		if err != nil {
			return fmt.Errorf("evaluate ipf iteration %d: %w", it, err)
		}
		f.Iteration = it
		m.Iterations = append(m.Iterations, f)
		return nil
	}
	res, err := dsb.Train(ctx, opts, func(p dsb.Progress) {
		progress(Progress{
			Phase: p.Phase.String(), PhaseIndex: int(p.Phase.Key()), Phases: phases,
			Step: p.Step + 1, Steps: p.Steps, Loss: p.Loss, SamplesPerSec: p.SamplesPerSec,
		})
		if p.Step+1 == p.Steps {
			m.Phases = append(m.Phases, PhaseSummary{Name: p.Phase.String(), Steps: p.Steps, FinalLoss: p.Loss, SamplesPerSec: p.SamplesPerSec})
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
	return s.ModelFromDSB(res)
}

func (s *Setup) trainSI(ctx context.Context, m *Metrics, progress func(Progress)) (Model, error) {
	opts, err := s.SIOptions()
	if err != nil {
		return nil, err
	}
	opts.ProgressEvery = max(1, opts.Steps/200)
	phase := PhaseSummary{Name: "interpolant", Steps: opts.Steps}
	res, err := si.Train(ctx, opts, func(p si.Progress) {
		loss := p.Loss.Velocity + p.Loss.Denoiser
		phase.Loss = append(phase.Loss, loss)
		phase.LossSteps = append(phase.LossSteps, float64(p.Step))
		phase.FinalLoss, phase.SamplesPerSec = loss, p.SamplesPerSec
		progress(Progress{Phase: phase.Name, Phases: 1, Step: p.Step, Steps: p.Total, Loss: loss, SamplesPerSec: p.SamplesPerSec})
	})
	if err != nil {
		return nil, err
	}
	m.Phases = append(m.Phases, phase)
	return s.ModelFromSI(res)
}

func steps(n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i + 1)
	}
	return x
}
