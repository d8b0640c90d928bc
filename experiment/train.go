package experiment

import (
	"context"
	"fmt"
	"time"

	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/method"
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
	Name      string  `json:"name"`
	Steps     int     `json:"steps"`
	FinalLoss float64 `json:"final_loss"`
	// SamplesPerSec is measured per phase by the single-process run; a
	// cluster run reports only the run's rate (Metrics.SamplesPerSec), so
	// the field is omitted rather than written as 0.
	SamplesPerSec float64   `json:"samples_per_sec,omitempty"`
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
	Start        eval.Cloud   // the held-out prior points Samples were generated from
	Trajectories []eval.Cloud // the first Eval.Trajectories paths
	Files        []string     // what Write wrote into the run directory
	// Marginals are the first MarginalPoints generated rows at the chain
	// states MarginalSteps, of MarginalOf steps from the prior side.
	Marginals     []eval.Cloud
	MarginalSteps []int
	MarginalOf    int
	// Final is the method's state at the end of a run trained in this
	// process (nil when concluded from checkpoints): what a test holds
	// against a distributed run's final state.
	Final method.State
}

// Train runs the whole method in this process, through the same
// method.State a distributed replica drives, and evaluates the result:
// after every phase that ends an iteration, and at the end.
func Train(ctx context.Context, s *Setup, progress func(Progress)) (*Outcome, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	meth, err := s.Method()
	if err != nil {
		return nil, err
	}
	ev, err := s.NewEvaluatorContext(ctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	m := s.NewMetrics()
	st, err := meth.Start()
	if err != nil {
		return nil, err
	}
	phases := meth.Phases()
	losses := make([][]float32, len(phases))
	rates := make([]float64, len(phases))
	for p, ph := range phases {
		if err := st.Open(p); err != nil {
			return nil, err
		}
		if losses[p], rates[p], err = trainPhase(ctx, meth, st, p, progress); err != nil {
			return nil, err
		}
		if err := st.Close(); err != nil {
			return nil, err
		}
		if ph.Evaluate && !s.Config.Eval.FinalOnly {
			model, err := st.Model(p + 1)
			if err != nil {
				return nil, err
			}
			f, err := ev.Iteration(ctx, model, ph.Iteration)
			if err != nil {
				return nil, err
			}
			m.Iterations = append(m.Iterations, f)
		}
	}
	m.Phases = PhaseSummaries(phases, losses)
	for p := range m.Phases {
		m.Phases[p].SamplesPerSec = rates[p]
	}
	model, err := st.Model(len(phases))
	if err != nil {
		return nil, err
	}
	trainSeconds := time.Since(start).Seconds()
	var rows int
	for _, p := range m.Phases {
		rows += p.Steps * s.Config.Train.Batch
	}
	m.SamplesPerSec = float64(rows) / trainSeconds
	out, err := ev.Conclude(ctx, model, m)
	if err != nil {
		return nil, err
	}
	out.Final = st
	m.WallSeconds = time.Since(start).Seconds()
	return out, nil
}

// trainPhase runs the steps of the open phase p with this process owning
// every virtual shard, and returns the loss of every step and the phase's
// rows per second. When the phase has a cache and the process more than
// one core, the next cache generation is simulated while steps train on
// the current one: a generation's bytes do not depend on when it is built.
func trainPhase(ctx context.Context, meth method.Method, st method.State, p int, progress func(Progress)) ([]float32, float64, error) {
	ph := meth.Phases()[p]
	steps := meth.StepsPerPhase()
	all := make([]int, meth.Shards())
	for i := range all {
		all[i] = i
	}
	g := st.GradLen()
	// Summed shard by shard in fixed point, as every replica of a
	// distributed run sums, so that this run and `local` at any worker
	// count give the same bytes; on a one-thread BLAS, held for the phase
	// rather than switched at every step.
	var sum method.ShardSum
	defer par.SingleThreadBLAS()()
	cache := st.Cache()
	var ahead *par.Ahead[[]method.Shard]
	if cache != nil {
		builders := cache.Builders(par.Size(0, len(all)))
		ahead = par.NewAhead(ctx, func(ctx context.Context, gen uint64) ([]method.Shard, error) {
			return method.Build(ctx, builders, gen, all)
		}, cache.Gen(steps-1), par.Workers(0) > 1)
		defer ahead.Stop()
	}
	var shards []method.Shard
	var gen uint64
	have := false
	losses := make([]float32, 0, steps)
	rate := 0.0
	begin := time.Now()
	for s := int64(0); s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, 0, fmt.Errorf("%s step %d: %w", ph.Name, s, err)
		}
		if cache != nil {
			if gg := cache.Gen(s); !have || gg != gen {
				var err error
				if shards, err = ahead.Get(gg); err != nil {
					return nil, 0, fmt.Errorf("%s: %w", ph.Name, err)
				}
				gen, have = gg, true
			}
		}
		buf, err := sum.Step(ctx, st, s, meth.Shards(), all, shards, fixedsum.Alone{})
		if err != nil {
			return nil, 0, err
		}
		loss := float64(buf[g]) + float64(buf[g+1])
		if err := st.Apply(s, buf[:g]); err != nil {
			return nil, 0, err
		}
		losses = append(losses, float32(loss))
		if el := time.Since(begin).Seconds(); el > 0 {
			rate = float64((s+1)*int64(meth.Batch())) / el
		}
		progress(Progress{Phase: ph.Name, PhaseIndex: p, Phases: len(meth.Phases()),
			Step: int(s) + 1, Steps: int(steps), Loss: loss, SamplesPerSec: rate})
	}
	return losses, rate, nil
}

// NewMetrics is the metrics of a run of this config before any figure.
func (s *Setup) NewMetrics() *Metrics {
	return &Metrics{Name: s.Config.Name, Method: s.Config.Method, ConfigHash: s.Config.Hash(), BLAS: nn.BLAS()}
}

// PhaseSummaries are the phases' summaries from the loss of every applied
// step (losses[p] for phase p): how the single-process run and a
// distributed run's conclusion both fill Metrics.Phases.
func PhaseSummaries(phases []method.Phase, losses [][]float32) []PhaseSummary {
	out := make([]PhaseSummary, len(phases))
	for p, ph := range phases {
		ps := PhaseSummary{Name: ph.Name}
		if p < len(losses) {
			l := losses[p]
			ps.Steps = len(l)
			ps.Loss, ps.LossSteps = make([]float64, len(l)), steps(len(l))
			for i, v := range l {
				ps.Loss[i] = float64(v)
			}
			if len(l) > 0 {
				ps.FinalLoss = ps.Loss[len(l)-1]
			}
		}
		out[p] = ps
	}
	return out
}

// Iteration evaluates the model of the networks finished after an
// iteration, as the figures of that iteration.
func (e *Evaluator) Iteration(ctx context.Context, model Model, it int) (*Figures, error) {
	f, _, err := e.Evaluate(ctx, model)
	if err != nil {
		return nil, fmt.Errorf("evaluate iteration %d: %w", it, err)
	}
	f.Iteration = it
	return f, nil
}

// Conclude evaluates the final model against the held-out data, fills
// m.Final and returns what Outcome.Write needs; a model trained elsewhere
// (by the distributed trainers) is concluded exactly as Train concludes.
func (e *Evaluator) Conclude(ctx context.Context, model Model, m *Metrics) (*Outcome, error) {
	s := e.setup
	out := &Outcome{Setup: s, Model: model, Metrics: m, HeldOut: e.HeldOut(), Start: eval.Cloud{Data: e.start, Dim: s.Dim}}
	final, gen, err := e.Evaluate(ctx, model)
	if err != nil {
		return nil, fmt.Errorf("final evaluation: %w", err)
	}
	m.Final = final
	out.Samples = eval.Cloud{Data: gen.End, Dim: s.Dim}
	ch, err := e.chains(ctx, model)
	if err != nil {
		return nil, fmt.Errorf("trajectories: %w", err)
	}
	out.Trajectories, out.Marginals, out.MarginalSteps, out.MarginalOf = ch.trajectories, ch.marginals, ch.marginalSteps, ch.marginalOf
	return out, nil
}

func steps(n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i + 1)
	}
	return x
}
