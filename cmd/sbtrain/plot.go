package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/storage"
)

// throughputPlot is the file `sbtrain plot` draws samples/s into.
const throughputPlot = "throughput.png"

func init() {
	register(&command{name: "plot", summary: "draw a distributed run's loss curves and throughput from its metrics.jsonl in storage", run: runPlot})
}

func runPlot(ctx context.Context, args []string) error {
	fs := newFlagSet("plot", "--run ID [--store URL] [--out DIR]")
	sf := addStoreFlags(fs)
	fs.Lookup("store").DefValue = "file://./runs"
	sf.url = "file://./runs"
	run := fs.String("run", "", "run ID in the store (required)")
	out := fs.String("out", "", "directory for "+experiment.LossPlot+" and "+throughputPlot+" (default runs/<run>)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if *run == "" {
		return usagef("--run is required: the run ID whose metrics to plot")
	}
	if err := storage.ValidateRunID(*run); err != nil {
		return usageError{err}
	}
	if *out == "" {
		*out = filepath.Join("runs", *run)
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	recs, err := coordinator.ReadMetrics(ctx, store, *run)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return usagef("run %s in %s has no metrics (%s*.jsonl): the coordinator of a distributed run writes them",
			*run, store, coordinator.MetricsPrefix(*run))
	}
	return writePlots(recs, *run, *out, os.Stdout)
}

// writePlots draws the loss curves and throughput of records into dir.
func writePlots(recs []coordinator.MetricsRecord, run, dir string, w io.Writer) error {
	losses, phases := lossCurves(recs)
	rates := throughputCurves(recs)
	if len(losses) == 0 && len(rates) == 0 {
		return fmt.Errorf("run %s: its metrics hold no progress reports yet", run)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	var wrote []string
	if len(losses) > 0 {
		path := filepath.Join(dir, experiment.LossPlot)
		if err := eval.SavePNG(path, func(w io.Writer) error {
			return eval.PlotLoss(w, losses, run+": training loss per phase")
		}); err != nil {
			return err
		}
		wrote = append(wrote, fmt.Sprintf("%s (%d phases)", path, phases))
	}
	if len(rates) > 0 {
		path := filepath.Join(dir, throughputPlot)
		if err := eval.SavePNG(path, func(w io.Writer) error {
			return eval.PlotLines(w, rates, run+": training throughput per trainer", "seconds since the first record", "samples/s")
		}); err != nil {
			return err
		}
		wrote = append(wrote, fmt.Sprintf("%s (%d trainers)", path, len(rates)))
	}
	for _, s := range wrote {
		fmt.Fprintf(w, "wrote %s\n", s)
	}
	return nil
}

// lossCurves is one curve per phase with reports: the loss at each step
// reported (every member reports the same global loss; the first report of
// a step counts), in step order, named as the newest run record names the
// phases.
func lossCurves(recs []coordinator.MetricsRecord) ([]eval.Curve, int) {
	var names []string
	byPhase := map[int]map[int64]float64{}
	for _, r := range recs {
		switch r.Kind {
		case coordinator.RecordRun:
			names = r.PhaseNames
		case coordinator.RecordProgress:
			if r.Loss == nil || r.Step < 1 || r.Phase < 0 {
				continue
			}
			m := byPhase[r.Phase]
			if m == nil {
				m = map[int64]float64{}
				byPhase[r.Phase] = m
			}
			if _, seen := m[r.Step]; !seen {
				m[r.Step] = *r.Loss
			}
		}
	}
	phases := make([]int, 0, len(byPhase))
	for p := range byPhase {
		phases = append(phases, p)
	}
	slices.Sort(phases)
	var out []eval.Curve
	for _, p := range phases {
		steps := make([]int64, 0, len(byPhase[p]))
		for s := range byPhase[p] {
			steps = append(steps, s)
		}
		slices.Sort(steps)
		c := eval.Curve{Name: fmt.Sprintf("phase %d", p)}
		if p < len(names) {
			c.Name = names[p]
		}
		for _, s := range steps {
			c.X = append(c.X, float64(s))
			c.Y = append(c.Y, byPhase[p][s])
		}
		out = append(out, c)
	}
	return out, len(phases)
}

// throughputCurves is each trainer's reported samples/s over the seconds
// since the first record, trainers in ID order.
func throughputCurves(recs []coordinator.MetricsRecord) []eval.Curve {
	if len(recs) == 0 {
		return nil
	}
	t0 := recs[0].Time
	byTrainer := map[string]*eval.Curve{}
	for _, r := range recs {
		if r.Kind != coordinator.RecordProgress || r.Trainer == "" || r.SamplesPerSec <= 0 {
			continue
		}
		c := byTrainer[r.Trainer]
		if c == nil {
			c = &eval.Curve{Name: r.Trainer}
			byTrainer[r.Trainer] = c
		}
		c.X = append(c.X, r.Time.Sub(t0).Seconds())
		c.Y = append(c.Y, r.SamplesPerSec)
	}
	ids := make([]string, 0, len(byTrainer))
	for id := range byTrainer {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]eval.Curve, len(ids))
	for i, id := range ids {
		out[i] = *byTrainer[id]
	}
	return out
}
