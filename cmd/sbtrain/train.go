package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/nn"
)

func init() {
	register(&command{name: "train", summary: "train a DSB, SI or DSBM run in this process and write metrics, plots and networks", run: runTrain})
}

func runTrain(ctx context.Context, args []string) error {
	fs := newFlagSet("train", "[--config FILE] [--out DIR]")
	cfgPath := fs.String("config", "", "run config (YAML); empty uses the embedded default (see 'sbtrain config')")
	out := fs.String("out", "runs/train", "directory for config.yaml, metrics.json, PNG plots and safetensors networks")
	quiet := fs.Bool("quiet", false, "print only the final summary")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to `file` (go tool pprof reads it)")
	cpus := addCPUsFlag(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if err := bindCPUs(*cpus); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	setup, err := loadSetup(*cfgPath)
	if err != nil {
		return err
	}
	cfg := setup.Config
	slog.Info("training", "name", cfg.Name, "method", cfg.Method, "dim", setup.Dim, "blas", nn.BLAS(), "config_hash", cfg.Hash(), "out", *out)
	var progressOut io.Writer = os.Stderr
	if *quiet {
		progressOut = nil
	}
	progress := newProgressPrinter(progressOut)
	defer progress.captureLog()()
	outcome, err := experiment.Train(ctx, setup, progress.print)
	progress.finish()
	if err != nil {
		return err
	}
	if err := outcome.Write(*out); err != nil {
		return err
	}
	printSummary(os.Stdout, outcome.Metrics)
	fmt.Printf("wrote %s\n", outcome.WrittenSummary(*out))
	return nil
}

// loadSetup reads the config (or the embedded default) and builds it; every
// failure here is the user's input, so it is a usage error.
func loadSetup(path string) (*experiment.Setup, error) {
	var cfg *config.Config
	var err error
	if path == "" {
		cfg, err = config.Default()
	} else {
		cfg, err = config.Load(path)
	}
	if err != nil {
		return nil, usageError{err}
	}
	setup, err := experiment.Prepare(cfg)
	if err != nil {
		if path == "" {
			path = "default config"
		}
		return nil, usagef("config %s: %w", path, err)
	}
	return setup, nil
}

// progressPrinter prints training progress: on a terminal as a bar per
// phase redrawn in place, elsewhere as a line at most every plainEvery;
// both at every phase end, with the run's ETA.
type progressPrinter struct {
	out   *progressLine
	last  time.Time
	start time.Time
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{out: newProgressLine(w), start: time.Now()}
}

func (p *progressPrinter) print(pr experiment.Progress) {
	if p.out == nil {
		return
	}
	now := time.Now()
	end := pr.Step == pr.Steps
	if !end && now.Sub(p.last) < p.out.every() {
		return
	}
	p.last = now
	// The rate over the whole run so far: per-phase rates count the cache
	// simulation at a phase's start and would make early ETAs absurd.
	done := pr.PhaseIndex*pr.Steps + pr.Step
	left := pr.Phases*pr.Steps - done
	eta := time.Duration(float64(left) * float64(now.Sub(p.start)) / float64(done)).Round(time.Second)
	p.out.print(progressUpdate{
		label: fmt.Sprintf("%s %d/%d", pr.Phase, pr.PhaseIndex+1, pr.Phases),
		phase: pr.PhaseIndex, step: int64(pr.Step), total: int64(pr.Steps),
		rest: []string{fmt.Sprintf("loss %.4g", pr.Loss), fmt.Sprintf("%.0f samples/s", pr.SamplesPerSec),
			"elapsed " + now.Sub(p.start).Round(time.Second).String(), "ETA " + eta.String()},
	})
}

// finish ends the progress bar's line (see progressLine.finish).
func (p *progressPrinter) finish() { p.out.finish() }

// captureLog routes log lines around the progress bar (see
// progressLine.captureLog).
func (p *progressPrinter) captureLog() func() { return p.out.captureLog() }

func printSummary(w io.Writer, m *experiment.Metrics) {
	fmt.Fprintf(w, "%s (%s): %.1fs, %.0f training samples/s, BLAS %s\n", m.Name, m.Method, m.WallSeconds, m.SamplesPerSec, m.BLAS)
	kind := "IPF"
	if m.Method == "dsbm" {
		kind = "IMF" // iterative Markovian fitting
	}
	for _, f := range m.Iterations {
		fmt.Fprintf(w, "  after %s iteration %d: %s\n", kind, f.Iteration, figuresLine(f))
	}
	if m.Final != nil {
		fmt.Fprintf(w, "  final: %s\n", figuresLine(m.Final))
	}
}

func figuresLine(f *experiment.Figures) string {
	s := fmt.Sprintf("sliced W2 %.4g (%.2fx two data draws), energy %.4g (%.2fx)", f.Distances.SlicedW2, f.SlicedW2Ratio, f.Distances.Energy, f.EnergyRatio)
	if g := f.Gaussian; g != nil {
		s += fmt.Sprintf(", mean err %.3f, var err %.3f", g.MeanMaxErr, g.VarMaxErr)
		if g.CovMaxErr != nil {
			s += fmt.Sprintf(", Cov(X0,XN) diag %s vs closed form %.3f (max err %.3f)", fmtVec(g.CovX0XN), g.CovClosedForm[0], *g.CovMaxErr)
		}
	}
	if l := f.Likelihood; l != nil {
		s += fmt.Sprintf(", log-lik %.4f nats", l.Mean)
		if l.Exact != nil {
			s += fmt.Sprintf(" (exact %.4f, err %.4f nats/dim)", *l.Exact, *l.ErrorDim)
		}
	}
	if f.VelocityRelL2 != nil {
		s += fmt.Sprintf(", velocity rel. L2 err %.4f", *f.VelocityRelL2)
	}
	if im := f.Image; im != nil {
		s += fmt.Sprintf(", Fréchet %.4g (%.2fx the test-vs-test floor %.4g, %d samples), classes min share %.3f entropy %.3f (classifier test accuracy %.4f)",
			im.Frechet, im.FrechetRatio, im.FrechetFloor, im.Samples, im.MinClassShare, im.ClassEntropy, im.ClassifierAccuracy)
	}
	if fw := f.Forward; fw != nil {
		s += fmt.Sprintf("; forward: sliced W2 %.4g (%.2fx two prior draws), energy %.4g (%.2fx)", fw.Distances.SlicedW2, fw.SlicedW2Ratio, fw.Distances.Energy, fw.EnergyRatio)
	}
	return s
}

func fmtVec(v []float64) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.3f", x)
	}
	return s + "]"
}
