package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/dashboard"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
)

// previewPoints is how many samples the dashboard's plot shows: enough to
// see the shape, few enough to draw in well under half a second.
const previewPoints = 300

// liveSamples draws the dashboard's samples plot at every phase-end
// checkpoint, from the coordinator's OnCommit hook: load the checkpoint,
// take the model its finished networks make and generate from held-out
// prior points.
type liveSamples struct {
	j     *job.Job
	ckpts *storage.Checkpoints
	// dash is set once the coordinator (which owns it) has started.
	dash atomic.Pointer[dashboard.Dashboard]
}

func newLiveSamples(j *job.Job, store storage.Store, run string) (*liveSamples, error) {
	// Loading skips a checkpoint still being written, which it would log
	// at every phase end; the coordinator reports real trouble.
	ckpts, err := storage.NewCheckpoints(store, run, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return &liveSamples{j: j, ckpts: ckpts}, nil
}

// onCommit is the coordinator's OnCommit hook.
func (l *liveSamples) onCommit(ctx context.Context, name string, pos coordinator.Position) {
	d := l.dash.Load()
	if d == nil || pos.Step != 0 || pos.Phase == 0 || l.j.Setup.Dim < 2 {
		return
	}
	began := time.Now()
	png, caption, err := l.render(ctx)
	if err != nil {
		if ctx.Err() == nil {
			slog.Warn("samples plot for the dashboard", "checkpoint", name, "err", err)
		}
		return
	}
	d.SetSamples(png, caption)
	slog.Debug("samples plot for the dashboard", "checkpoint", name, "took", time.Since(began).Round(time.Millisecond))
}

// render draws the samples of the newest checkpoint.
func (l *liveSamples) render(ctx context.Context) ([]byte, string, error) {
	st, id, err := l.j.LoadLatest(ctx, l.ckpts)
	if err != nil {
		return nil, "", err
	}
	model, err := st.SamplingModel()
	if err != nil {
		return nil, "", err
	}
	data, gen, err := l.j.Setup.Preview(ctx, model, previewPoints)
	if err != nil {
		return nil, "", err
	}
	done := st.Position().Phase // phases finished; SamplingModel needs one
	after := l.j.PhaseName(done - 1)
	cfg := l.j.Setup.Config
	var buf bytes.Buffer
	if err := eval.PlotSamples(&buf, data, gen, fmt.Sprintf("%s after %s", cfg.Name, after)); err != nil {
		return nil, "", err
	}
	caption := fmt.Sprintf("%d generated samples over held-out data after phase %d of %d (%s), checkpoint %s",
		gen.Len(), done, l.j.Phases(), after, id)
	return buf.Bytes(), caption, nil
}
