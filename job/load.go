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
	Train     time.Duration
	Workers   int
	AllReduce *float64 // mean share of step time in the all-reduce
	// From is where this command's training started (a resumed run
	// trained only the steps after it).
	From Position
}

// Conclude evaluates a finished run from its checkpoints as `sbtrain train`
// evaluates the run it trains in process, and returns the same outcome:
// the figures of every iteration from the model of that iteration's
// phase-end checkpoint (which checkpoint GC keeps), the final figures from
// the newest checkpoint, and the loss history it holds. It also names the
// checkpoint the final model came from.
func (j *Job) Conclude(ctx context.Context, ckpts *storage.Checkpoints, fig RunFigures) (*experiment.Outcome, storage.ID, error) {
	st, id, err := j.LoadLatest(ctx, ckpts)
	if err != nil {
		return nil, storage.ID{}, fmt.Errorf("load the final checkpoint: %w", err)
	}
	model, err := st.Model()
	if err != nil {
		return nil, id, err
	}
	ev, err := j.Setup.NewEvaluator()
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
	// A resumed run only trained the steps after its checkpoint; its rate
	// counts those alone.
	if train := fig.Train; train > 0 || fig.Wall > 0 {
		if train == 0 {
			train = fig.Wall
		}
		done := (int64(fig.From.Phase)*j.StepsPerPhase() + fig.From.Step) * int64(j.Batch())
		m.SamplesPerSec = float64(rows-done) / train.Seconds()
	}
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
		if !ph.Evaluate {
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
