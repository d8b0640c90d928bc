package job

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/storage"
)

// LoadLatest decodes the state held by the run's newest checkpoint that
// verifies, and names that checkpoint.
func (j *Job) LoadLatest(ctx context.Context, ckpts *storage.Checkpoints) (*State, storage.ID, error) {
	l, err := ckpts.LoadLatest(ctx)
	if err != nil {
		return nil, storage.ID{}, err
	}
	return j.decodeLoaded(l)
}

// Load decodes the state held by checkpoint id.
func (j *Job) Load(ctx context.Context, ckpts *storage.Checkpoints, id storage.ID) (*State, error) {
	l, err := ckpts.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	st, _, err := j.decodeLoaded(l)
	return st, err
}

func (j *Job) decodeLoaded(l *storage.Loaded) (*State, storage.ID, error) {
	id := storage.ID{Seq: l.Manifest.Seq, Phase: l.Manifest.Phase, Step: l.Manifest.Step}
	b, ok := l.Blobs[SnapshotBlob]
	if !ok {
		return nil, id, fmt.Errorf("checkpoint %s has no blob %s", id, SnapshotBlob)
	}
	st, err := j.Decode(b, "checkpoint "+id.String()+"/"+SnapshotBlob)
	if err != nil {
		return nil, id, err
	}
	return st, id, nil
}

// RunFigures are what the processes of a distributed run measured.
type RunFigures struct {
	Wall time.Duration // the whole command
	// Train is from the first run plan to the end: samples/s counts it,
	// not process start-up; 0 means unknown (Wall is used).
	Train time.Duration
	// Idle: this command trained nothing (the run was finished before it
	// started), so it has no rate to report.
	Idle      bool
	Workers   int
	AllReduce *float64 // mean share of step time in the all-reduce
	// From is where this command's training started (a resumed run
	// trained only the steps after it).
	From Position
}

// SamplesPerSec is the training rate of this command: the rows of the
// steps it trained (rows in all, less those before From) over its training
// time; 0 when it trained nothing (a finished run started again).
func (f RunFigures) SamplesPerSec(rows, stepsPerPhase int64, batch int) float64 {
	train := f.Train
	if train == 0 {
		train = f.Wall
	}
	done := (int64(f.From.Phase)*stepsPerPhase + f.From.Step) * int64(batch)
	if f.Idle || train <= 0 || rows <= done {
		return 0
	}
	return float64(rows-done) / train.Seconds()
}

// Conclude evaluates a finished run from its checkpoints as `sbtrain train`
// evaluates the run it trains in process, and returns the same outcome:
// the figures of every iteration from the model of that iteration's
// phase-end checkpoint (which checkpoint GC keeps), the final figures from
// the checkpoint at (nil: the newest), and the loss history it holds. It also names the
// checkpoint the final model came from.
func (j *Job) Conclude(ctx context.Context, ckpts *storage.Checkpoints, fig RunFigures, at *storage.ID) (*experiment.Outcome, storage.ID, error) {
	var st *State
	var id storage.ID
	var err error
	if at == nil {
		st, id, err = j.LoadLatest(ctx, ckpts)
	} else {
		st, err = j.Load(ctx, ckpts, *at)
		id = *at
	}
	if err != nil {
		return nil, id, fmt.Errorf("load the final checkpoint: %w", err)
	}
	model, err := st.Model()
	if err != nil {
		return nil, id, err
	}
	ev, err := j.Setup.NewEvaluatorContext(ctx)
	if err != nil {
		return nil, id, err
	}
	m := j.Setup.NewMetrics()
	m.WallSeconds, m.Workers, m.AllReduceFraction = fig.Wall.Seconds(), fig.Workers, fig.AllReduce
	if err := j.iterationFigures(ctx, ckpts, ev, st, m); err != nil {
		return nil, id, err
	}
	m.Phases = experiment.PhaseSummaries(j.phases, st.AllLosses())
	var rows int64
	for _, p := range m.Phases {
		rows += int64(p.Steps) * int64(j.Batch())
	}
	m.SamplesPerSec = fig.SamplesPerSec(rows, j.StepsPerPhase(), j.Batch())
	out, err := ev.Conclude(ctx, model, m)
	if err != nil {
		return nil, id, err
	}
	return out, id, nil
}

// iterationFigures evaluates the model after each phase that ends an
// iteration: the final state for the last phase, else the phase-end
// checkpoint of that phase (the newest, should a resumed run have written
// it twice). A phase end that is missing or does not load is skipped with
// a warning, so that the final figures are not lost with it.
func (j *Job) iterationFigures(ctx context.Context, ckpts *storage.Checkpoints, ev *experiment.Evaluator, final *State, m *experiment.Metrics) error {
	var entries []storage.Entry
	for p, ph := range j.phases {
		if !ph.Evaluate || j.Setup.Config.Eval.FinalOnly {
			continue
		}
		st := final
		if p+1 < len(j.phases) {
			if entries == nil {
				var err error
				if entries, err = ckpts.List(ctx); err != nil {
					return err
				}
			}
			var id *storage.ID
			for _, e := range entries {
				if e.Manifest != nil && e.Manifest.PhaseEnd && e.Manifest.Phase == p {
					id = &e.ID
				}
			}
			if id == nil {
				slog.Warn("no phase-end checkpoint: the metrics lack this iteration", "phase", ph.Name, "iteration", ph.Iteration)
				continue
			}
			var err error
			if st, err = j.Load(ctx, ckpts, *id); err != nil {
				if ctx.Err() != nil {
					return err
				}
				slog.Warn("phase-end checkpoint does not load: the metrics lack this iteration", "phase", ph.Name, "checkpoint", id.String(), "err", err)
				continue
			}
		}
		model, err := st.SamplingModel()
		if err != nil {
			return err
		}
		f, err := ev.Iteration(ctx, model, ph.Iteration)
		if err != nil {
			return err
		}
		m.Iterations = append(m.Iterations, f)
	}
	return nil
}
