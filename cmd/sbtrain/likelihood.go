package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/experiment"
)

func init() {
	register(&command{name: "likelihood", summary: "score points under a trained SI run: per-point log-likelihood and its error bar (CSV)", run: runLikelihood})
}

func runLikelihood(ctx context.Context, args []string) error {
	fs := newFlagSet("likelihood", "--run DIR --points FILE [--estimator ode|sde] [--probes K] [--out FILE.csv]")
	dir := fs.String("run", "", "run directory written by 'sbtrain train' (required; method si)")
	pointsPath := fs.String("points", "", "CSV file of points, one per line, of the run's dimension (required)")
	estimator := fs.String("estimator", "ode", "ode: the probability-flow ODE; sde: the SDE model's Feynman-Kac average over reverse paths")
	probes := fs.Int("probes", 0, "sde: reverse paths K per point (0: 64); ode: Hutchinson probes (0: the run's si.probes)")
	method := fs.String("method", "rk4", "ode solver: euler, heun, rk4 or dopri5")
	steps := fs.Int("steps", 0, "fixed steps (0: the run's si.likelihood_steps)")
	eps := fs.Float64("eps", math.NaN(), "sde: the diffusion scale (default: the run's si.epsilon)")
	epsSchedule := fs.String("eps-schedule", "", "sde: constant, gamma or gamma2 (default: the run's si.eps_schedule)")
	seed := fs.Uint64("seed", 1, "seed of the probes and paths")
	out := fs.String("out", "-", "CSV file for index,log_likelihood,std_err; - is standard output")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if *dir == "" {
		return usagef("--run is required")
	}
	if *pointsPath == "" {
		return usagef("--points is required")
	}
	if *estimator != "ode" && *estimator != "sde" {
		return usagef("--estimator %q, want ode or sde", *estimator)
	}
	if *probes < 0 || *probes > 1<<10 {
		return usagef("--probes %d, want 0..%d", *probes, 1<<10)
	}
	if *steps < 0 {
		return usagef("--steps %d, want >= 0", *steps)
	}
	setup, model, err := experiment.Load(*dir)
	if err != nil {
		return usageError{err}
	}
	m, ok := model.(*experiment.SIModel)
	if !ok {
		return usagef("--run %s: method %s has no likelihood estimator (only si runs do)", *dir, setup.Config.Method)
	}
	cfg := setup.Config.SI
	if *estimator == "sde" && m.Denoiser == nil {
		return usagef("--estimator sde: run %s has no score network (si.train_denoiser was false), only the ode estimator applies", *dir)
	}
	rho0, ok := setup.Prior.(dataset.LogDensity)
	switch {
	case m.Path.OneSided():
		rho0, ok = si.StandardNormal(setup.Dim), true
	case m.Path.Mirror():
		rho0, ok = setup.Data.(dataset.LogDensity)
	}
	if !ok {
		return usagef("--run %s: its prior %q has no log density, so no likelihood estimator applies", *dir, setup.Prior.Name())
	}
	x, err := readPointsCSV(*pointsPath, setup.Dim, *dir)
	if err != nil {
		return usageError{err}
	}
	b, score, err := m.Fields()
	if err != nil {
		return err
	}
	jb, ok := b.(si.JacobianField)
	if !ok {
		return fmt.Errorf("likelihood: the velocity %T has no VJP", b)
	}
	if *steps == 0 {
		*steps = cfg.LikelihoodSteps
	}
	var res *si.LikelihoodResult
	if *estimator == "ode" {
		res, err = si.LogLikelihoodODE(ctx, jb, rho0, x, si.LikelihoodOptions{
			Method: *method, Steps: *steps, RTol: cfg.RTol, ATol: cfg.ATol,
			Divergence: cfg.Divergence, Probes: firstNonZero(*probes, cfg.Probes), Seed: *seed,
		})
	} else {
		e := cfg.Epsilon
		if !math.IsNaN(*eps) {
			e = *eps
		}
		sched := cfg.EpsSchedule
		if *epsSchedule != "" {
			sched = *epsSchedule
		}
		js, ok := score.(si.JacobianField)
		if !ok {
			return fmt.Errorf("likelihood: the score %T has no VJP", score)
		}
		res, err = si.SDELogLikelihood(ctx, m.Path, jb, js, rho0, x, si.SDELikelihoodOptions{
			Method: si.MethodSDEHeun, Steps: *steps, Eps: e, EpsSchedule: sched, Paths: *probes,
			Divergence: cfg.Divergence, Probes: cfg.Probes, Seed: *seed,
		})
	}
	if err != nil {
		return usageError{fmt.Errorf("likelihood --estimator %s: %w", *estimator, err)}
	}
	var sb strings.Builder
	sb.WriteString("index,log_likelihood,std_err\n")
	for i, v := range res.LogP {
		se := 0.0
		if res.StdErr != nil {
			se = res.StdErr[i]
		}
		fmt.Fprintf(&sb, "%d,%s,%s\n", i, strconv.FormatFloat(v, 'g', 8, 64), strconv.FormatFloat(se, 'g', 4, 64))
	}
	summary := fmt.Sprintf("likelihood: %d points, mean %.4f nats, %d evaluations per chunk", len(res.LogP), meanFloat(res.LogP), res.Evals)
	if h, se, err := si.CrossEntropy(res.LogP); err == nil {
		// Over points drawn from the data, this is the model's cross-entropy.
		summary += fmt.Sprintf("; cross-entropy %.4f ± %.4f nats if the points are data draws", h, se)
	}
	fmt.Fprintln(os.Stderr, summary)
	if *out == "-" {
		_, err := os.Stdout.WriteString(sb.String())
		return err
	}
	if err := os.WriteFile(*out, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write likelihoods: %w", err)
	}
	return nil
}

func firstNonZero(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func meanFloat(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x / float64(len(v))
	}
	return s
}

// readPointsCSV reads one point per line (a first line without numbers is
// a header; blank lines are skipped) and holds each to the run's dimension.
func readPointsCSV(path string, dim int, run string) ([]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--points: %w", err)
	}
	defer f.Close()
	var out []float32
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		cells := strings.Split(text, ",")
		vals := make([]float32, 0, len(cells))
		numeric := true
		for _, c := range cells {
			v, err := strconv.ParseFloat(strings.TrimSpace(c), 64)
			if err != nil {
				numeric = false
				break
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("--points %s line %d: %v is not a finite number", path, line, v)
			}
			vals = append(vals, float32(v))
		}
		if !numeric {
			if line == 1 && len(out) == 0 {
				continue // header
			}
			return nil, fmt.Errorf("--points %s line %d: %q is not a row of numbers", path, line, text)
		}
		if len(vals) != dim {
			return nil, fmt.Errorf("--points %s line %d: %d values, but run %s has dimension %d", path, line, len(vals), run, dim)
		}
		out = append(out, vals...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--points %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--points %s: no points", path)
	}
	return out, nil
}
