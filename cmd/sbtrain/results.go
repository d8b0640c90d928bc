package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sbtrain/sbtrain/experiment"
)

func init() {
	register(&command{name: "results", summary: "train every example config and print each result beside its target", run: runResults})
}

// check is one acceptance figure of an example: measure reads it from the
// run's metrics (ok=false when the run did not produce it).
type check struct {
	result  string
	target  string
	measure func(m *experiment.Metrics) (value float64, ok bool)
	pass    func(v float64) bool
}

// exampleChecks are the project's published results: the example file and
// the figures it must reach.
var exampleChecks = []struct {
	file   string
	checks []check
}{
	{"gaussian-d5-dsb.yaml", []check{
		{"DSB Gaussian d=5: X0 mean max |err|, IPF iteration 1", "(shown)", iterGaussian(0, func(g *experiment.GaussianFigures) float64 { return g.MeanMaxErr }), always},
		{"DSB Gaussian d=5: X0 variance max |err|, IPF iteration 1", "(shown)", iterGaussian(0, func(g *experiment.GaussianFigures) float64 { return g.VarMaxErr }), always},
		{"DSB Gaussian d=5: Cov(X0,XN) diag max |err| vs 0.618, IPF iteration 1", "(shown)", iterGaussian(0, covErr), always},
		{"DSB Gaussian d=5: X0 mean max |err|", "<= 0.05", iterGaussian(-1, func(g *experiment.GaussianFigures) float64 { return g.MeanMaxErr }), atMost(0.05)},
		{"DSB Gaussian d=5: X0 variance max |err|", "<= 0.1", iterGaussian(-1, func(g *experiment.GaussianFigures) float64 { return g.VarMaxErr }), atMost(0.1)},
		{"DSB Gaussian d=5: Cov(X0,XN) diag max |err| vs 0.618", "<= 0.07", iterGaussian(-1, covErr), atMost(0.07)},
		{"DSB Gaussian d=5: IPF moves Cov(X0,XN) toward closed form (err last - err iter 1)", "< 0", func(m *experiment.Metrics) (float64, bool) {
			first, ok1 := iterGaussian(0, covErr)(m)
			last, ok2 := iterGaussian(-1, covErr)(m)
			return last - first, ok1 && ok2
		}, below(0)},
	}},
	{"gaussian-d5-dsbm.yaml", []check{
		{"DSBM Gaussian d=5: X0 mean max |err|", "<= 0.03", iterGaussian(-1, func(g *experiment.GaussianFigures) float64 { return g.MeanMaxErr }), atMost(0.03)},
		{"DSBM Gaussian d=5: X0 variance max |err|", "<= 0.05", iterGaussian(-1, func(g *experiment.GaussianFigures) float64 { return g.VarMaxErr }), atMost(0.05)},
		{"DSBM Gaussian d=5: Cov(X0,X1) diag max |err| vs 0.618", "<= 0.02", iterGaussian(-1, covErr), atMost(0.02)},
	}},
	{"moons-8gaussians-dsbm.yaml", []check{
		{"DSBM moons <-> 8gaussians: sliced W2 / (two data draws), 8gaussians to moons", "<= 2", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil {
				return 0, false
			}
			return m.Final.SlicedW2Ratio, true
		}, atMost(2)},
		{"DSBM moons <-> 8gaussians: sliced W2 / (two prior draws), moons to 8gaussians", "<= 2", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.Forward == nil {
				return 0, false
			}
			return m.Final.Forward.SlicedW2Ratio, true
		}, atMost(2)},
	}},
	{"moons-dsb.yaml", []check{
		{"DSB moons: sliced W2 to held-out, IPF iteration 1", "(shown)", iterW2(0), always},
		{"DSB moons: sliced W2 falls from iteration 1 to last (last - first)", "< 0", func(m *experiment.Metrics) (float64, bool) {
			first, ok1 := iterW2(0)(m)
			last, ok2 := iterW2(-1)(m)
			return last - first, ok1 && ok2
		}, below(0)},
		{"DSB moons: sliced W2 / (two data draws), last iteration", "<= 2", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil {
				return 0, false
			}
			return m.Final.SlicedW2Ratio, true
		}, atMost(2)},
	}},
	{"gaussian-si.yaml", []check{
		{"SI Gaussian: velocity relative L2 error, t in [0.05, 0.95]", "< 0.1", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.VelocityRelL2 == nil {
				return 0, false
			}
			return *m.Final.VelocityRelL2, true
		}, below(0.1)},
		{"SI Gaussian: |log-likelihood - exact| per dimension (nats)", "<= 0.05", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.Likelihood == nil || m.Final.Likelihood.ErrorDim == nil {
				return 0, false
			}
			return *m.Final.Likelihood.ErrorDim, true
		}, atMost(0.05)},
	}},
	{"gaussian-si-score.yaml", []check{
		{"SI Gaussian: learned score relative L2 error, t in [0.05, 0.95]", "< 0.1", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.ScoreRelL2 == nil {
				return 0, false
			}
			return *m.Final.ScoreRelL2, true
		}, below(0.1)},
		{"SI Gaussian: b = v - g g' s from the learned pair, relative L2 error", "(shown)", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.VelocityRelL2 == nil {
				return 0, false
			}
			return *m.Final.VelocityRelL2, true
		}, always},
	}},
	{"gaussian-mirror-si.yaml", []check{
		{"SI mirror interpolant: learned score relative L2 error, t in [0.05, 0.95]", "< 0.1", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.ScoreRelL2 == nil {
				return 0, false
			}
			return *m.Final.ScoreRelL2, true
		}, below(0.1)},
	}},
	{"checkerboard-si.yaml", []check{
		{"SI checkerboard: energy distance / (two data draws)", "<= 2", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil {
				return 0, false
			}
			return m.Final.EnergyRatio, true
		}, atMost(2)},
		{"SI checkerboard: mean log-likelihood of held-out points (exact -3.466)", "in [-3.766, -3.416]", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.Likelihood == nil {
				return 0, false
			}
			return m.Final.Likelihood.Mean, true
		}, inCheckerboardRange},
		{"SI checkerboard: SDE model's mean log-likelihood (Feynman-Kac, first 128 points)", "in [-3.766, -3.416]", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.Likelihood == nil || m.Final.Likelihood.SDE == nil {
				return 0, false
			}
			return *m.Final.Likelihood.SDE, true
		}, inCheckerboardRange},
		{"SI checkerboard: |SDE - ODE log-likelihood| on the same points", "<= 0.1", func(m *experiment.Metrics) (float64, bool) {
			if m.Final == nil || m.Final.Likelihood == nil || m.Final.Likelihood.SDE == nil || m.Final.Likelihood.ODEOnThem == nil {
				return 0, false
			}
			return math.Abs(*m.Final.Likelihood.SDE - *m.Final.Likelihood.ODEOnThem), true
		}, atMost(0.1)},
	}},
}

// acrossChecks compare examples trained in the same results run; one is
// made when any of its files ran, and is missing unless all of them did.
var acrossChecks = []struct {
	files   []string
	result  string
	target  string
	measure func(ran map[string]*experiment.Metrics) (value float64, ok bool)
	pass    func(v float64) bool
}{
	{[]string{"gaussian-d5-dsb.yaml", "gaussian-d5-dsbm.yaml"},
		"Gaussian d=5: DSBM's Cov(X0,X1) max |err| minus DSB's, same run and budget", "<= 0",
		func(ran map[string]*experiment.Metrics) (float64, bool) {
			dsb, dsbm := ran["gaussian-d5-dsb.yaml"], ran["gaussian-d5-dsbm.yaml"]
			if dsb == nil || dsbm == nil {
				return 0, false
			}
			a, ok1 := iterGaussian(-1, covErr)(dsbm)
			b, ok2 := iterGaussian(-1, covErr)(dsb)
			return a - b, ok1 && ok2
		}, atMost(0)},
}

func inCheckerboardRange(v float64) bool { return v >= -math.Log(32)-0.3 && v <= -math.Log(32)+0.05 }

func always(float64) bool                 { return true }
func atMost(t float64) func(float64) bool { return func(v float64) bool { return v <= t } }
func below(t float64) func(float64) bool  { return func(v float64) bool { return v < t } }

func covErr(g *experiment.GaussianFigures) float64 {
	if g.CovMaxErr == nil {
		return math.NaN()
	}
	return *g.CovMaxErr
}

// iterFigures picks IPF iteration i (negative counts from the end).
func iterFigures(m *experiment.Metrics, i int) *experiment.Figures {
	if i < 0 {
		i += len(m.Iterations)
	}
	if i < 0 || i >= len(m.Iterations) {
		return nil
	}
	return m.Iterations[i]
}

func iterGaussian(i int, pick func(*experiment.GaussianFigures) float64) func(*experiment.Metrics) (float64, bool) {
	return func(m *experiment.Metrics) (float64, bool) {
		f := iterFigures(m, i)
		if f == nil || f.Gaussian == nil {
			return 0, false
		}
		v := pick(f.Gaussian)
		return v, !math.IsNaN(v)
	}
}

func iterW2(i int) func(*experiment.Metrics) (float64, bool) {
	return func(m *experiment.Metrics) (float64, bool) {
		f := iterFigures(m, i)
		if f == nil {
			return 0, false
		}
		return f.Distances.SlicedW2, true
	}
}

func runResults(ctx context.Context, args []string) error {
	fs := newFlagSet("results", "[--set points|images] [--examples DIR] [--out DIR] [--only FILE]")
	set := fs.String("set", "points", "which examples: points (2D toys and Gaussians) or images (MNIST, Fashion-MNIST; hours on 2 cores)")
	examples := fs.String("examples", "examples", "directory of the example configs")
	out := fs.String("out", "results", "directory for each example's run outputs")
	only := fs.String("only", "", "run only these example files, comma-separated (e.g. moons-dsb.yaml)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	type row struct {
		c     check
		value float64
		ok    bool
	}
	var rows []row
	failed := 0
	list := exampleChecks
	switch *set {
	case "points":
	case "images":
		list = imageExampleChecks
	default:
		return usagef("--set %q: want points or images", *set)
	}
	ran := map[string]*experiment.Metrics{}
	var picked []string
	if *only != "" {
		picked = strings.Split(*only, ",")
	}
	for _, ex := range list {
		if picked != nil && !slices.Contains(picked, ex.file) {
			continue
		}
		path := filepath.Join(*examples, ex.file)
		setup, err := loadSetup(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "results: training %s\n", path)
		start := time.Now()
		progress := newProgressPrinter(os.Stderr)
		restoreLog := progress.captureLog()
		outcome, err := experiment.Train(ctx, setup, progress.print)
		restoreLog()
		if err != nil {
			return fmt.Errorf("example %s: %w", path, err)
		}
		if err := outcome.Write(filepath.Join(*out, setup.Config.Name)); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "results: %s took %s\n", path, time.Since(start).Round(time.Second))
		for _, c := range ex.checks {
			v, ok := c.measure(outcome.Metrics)
			if !ok || !c.pass(v) {
				failed++
			}
			rows = append(rows, row{c, v, ok})
		}
		ran[ex.file] = outcome.Metrics
	}
	for _, a := range acrossChecks {
		some := false
		for _, f := range a.files {
			some = some || ran[f] != nil
		}
		if !some {
			continue
		}
		v, ok := a.measure(ran)
		if !ok || !a.pass(v) {
			failed++
		}
		rows = append(rows, row{check{result: a.result, target: a.target, pass: a.pass}, v, ok})
	}
	closed, values, err := runClosedForm(ctx, *examples, *only)
	if err != nil {
		return err
	}
	for i, c := range closed {
		v, ok := c.measure(nil)
		if !ok || !c.pass(v) {
			failed++
		}
		rows = append(rows, row{c, values[i], ok})
	}
	printResults(os.Stdout, len(rows), failed, func(w io.Writer) {
		for _, r := range rows {
			verdict, value := "pass", fmt.Sprintf("%.4f", r.value)
			if r.value != 0 && math.Abs(r.value) < 1e-3 {
				value = fmt.Sprintf("%.2e", r.value) // 1 vs 3 workers, solver errors
			}
			switch {
			case !r.ok:
				verdict, value = "FAIL", "missing"
			case r.c.target == "(shown)":
				verdict = "-"
			case !r.c.pass(r.value):
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.c.result, value, r.c.target, verdict)
		}
	})
	printIterations(os.Stdout, ran["gaussian-d5-dsb.yaml"], ran["gaussian-d5-dsbm.yaml"])
	if failed > 0 {
		return fmt.Errorf("%d of %d results missed their target", failed, len(rows))
	}
	return nil
}

func printResults(w io.Writer, n, failed int, body func(io.Writer)) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "result\tmeasured\ttarget\tpass/fail\n")
	body(tw)
	tw.Flush()
	fmt.Fprintf(w, "%d checks, %d failed\n", n, failed)
}

// printIterations prints the Gaussian benchmark's figures after each IPF
// (DSB) and IMF (DSBM) iteration side by side, for the runs that were made.
func printIterations(w io.Writer, dsb, dsbm *experiment.Metrics) {
	if dsb == nil && dsbm == nil {
		return
	}
	n := 0
	for _, m := range []*experiment.Metrics{dsb, dsbm} {
		if m != nil {
			n = max(n, len(m.Iterations))
		}
	}
	cell := func(m *experiment.Metrics, i int, pick func(*experiment.GaussianFigures) float64) string {
		if m == nil || i >= len(m.Iterations) || m.Iterations[i].Gaussian == nil {
			return "-"
		}
		v := pick(m.Iterations[i].Gaussian)
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.4f", v)
	}
	mean := func(g *experiment.GaussianFigures) float64 { return g.MeanMaxErr }
	variance := func(g *experiment.GaussianFigures) float64 { return g.VarMaxErr }
	fmt.Fprintf(w, "\nGaussian d=5 benchmark, max |err| after each iteration (Cov(X0,X1) diag vs 0.618, X0 mean, X0 variance)\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "iteration\tDSB cov\tDSBM cov\tDSB mean\tDSBM mean\tDSB var\tDSBM var\n")
	for i := range n {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, cell(dsb, i, covErr), cell(dsbm, i, covErr),
			cell(dsb, i, mean), cell(dsbm, i, mean), cell(dsb, i, variance), cell(dsbm, i, variance))
	}
	tw.Flush()
}
