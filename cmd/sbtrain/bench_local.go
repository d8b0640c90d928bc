package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/internal/cpuset"
	"github.com/sbtrain/sbtrain/nn"
)

func init() {
	registerBenchmark(&benchmark{name: "local", summary: "training samples/s of `local` with N trainer processes against `train` in one process", run: runBenchLocal})
}

func runBenchLocal(ctx context.Context, args []string) error {
	fs := newFlagSet("bench local", "[--config FILE] [--workers 1,2,4] [--steps N] [--iterations K] [--samples N]")
	cfgPath := fs.String("config", "", "run config (YAML); empty uses the embedded default")
	workersFlag := fs.String("workers", "1,2,4", "comma-separated trainer counts to measure")
	steps := fs.Int("steps", 300, "override train.steps (steps per phase) to keep the benchmark short; 0 keeps the config's")
	iterations := fs.Int("iterations", 2, "override dsb.iterations (dsbm.iterations for DSBM); 0 keeps the config's")
	samples := fs.Int("samples", 0, "override eval.samples, the held-out evaluation's size, to keep an image config's evaluation short; 0 keeps the config's")
	dir := fs.String("dir", "", "working directory for stores and outputs (default: a temporary one, removed after)")
	bind := fs.Bool("bind", true, "passed to local: bind each trainer to its share of the CPUs")
	oneCPU := fs.Bool("one-cpu", true, "also time `local --workers 1` bound to one CPU: the baseline of the speed-up that workers on more cores give")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	workers, err := parseInts(*workersFlag)
	if err == nil && slices.Max(workers) > 64 {
		err = errors.New("a count over 64")
	}
	if err != nil {
		return usagef("--workers %q: want comma-separated counts in 1..64", *workersFlag)
	}
	if *steps < 0 || *iterations < 0 || *samples < 0 {
		return usagef("--steps, --iterations and --samples must be >= 0")
	}
	var cfg *config.Config
	if *cfgPath == "" {
		cfg, err = config.Default()
	} else {
		cfg, err = config.Load(*cfgPath)
	}
	if err != nil {
		return usageError{err}
	}
	if *steps > 0 {
		cfg.Train.Steps = *steps
	}
	if *iterations > 0 {
		switch cfg.Method {
		case config.MethodDSB:
			cfg.DSB.Iterations = *iterations
		case config.MethodDSBM:
			cfg.DSBM.Iterations = *iterations
		}
	}
	if *samples > 0 {
		cfg.Eval.Samples = *samples
	}
	cfg.Name = "bench-local"
	y := cfg.YAML()
	if _, err := config.Parse(y, "benchmark config"); err != nil {
		return usagef("config with the overrides: %w", err)
	}
	work := *dir
	if work == "" {
		if work, err = os.MkdirTemp("", "sbtrain-bench-local-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	if work, err = filepath.Abs(work); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	cfgFile := filepath.Join(work, "config.yaml")
	if err := os.WriteFile(cfgFile, y, 0o644); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	allowed, err := cpuset.Allowed()
	if err != nil {
		return fmt.Errorf("CPUs to run on: %w", err)
	}
	all := cpuset.Format(allowed)
	fmt.Printf("# %s (%s), %d phases x %d steps, batch %d, BLAS %s\n", cfg.Name, cfg.Method, phasesOf(cfg), cfg.Train.Steps, cfg.Train.Batch, blasLine())
	fmt.Printf("# %-8s %8s %8s %11s %9s %9s %16s %8s\n", "mode", "workers", "CPUs", "samples/s", "vs train", "vs 1 CPU", "all-reduce share", "wall s")
	measure := func(mode string, workers int, cpus string) (*experiment.Metrics, error) {
		out := filepath.Join(work, fmt.Sprintf("%s-%d-cpus-%s", mode, workers, cpus))
		args := []string{mode, "--config", cfgFile, "--quiet", "--out", out, "--cpus", cpus}
		if mode == "local" {
			args = append(args, "--workers", strconv.Itoa(workers), "--bind="+strconv.FormatBool(*bind),
				"--store", "file://"+filepath.Join(out, "store"))
		}
		return benchChild(ctx, exe, out, args...)
	}
	base, err := measure("train", 1, all)
	if err != nil {
		return err
	}
	var one *experiment.Metrics
	if *oneCPU {
		if one, err = measure("local", 1, cpuset.Format(allowed[:1])); err != nil {
			return err
		}
	}
	printRow := func(mode string, workers int, cpus string, m *experiment.Metrics) {
		vsOne, share := "-", "-"
		if one != nil {
			vsOne = fmt.Sprintf("%.2fx", m.SamplesPerSec/one.SamplesPerSec)
		}
		if m.AllReduceFraction != nil {
			share = fmt.Sprintf("%.1f%%", 100**m.AllReduceFraction)
		}
		fmt.Printf("  %-8s %8d %8s %11.0f %8.2fx %9s %16s %8.1f\n", mode, workers, cpus, m.SamplesPerSec,
			m.SamplesPerSec/base.SamplesPerSec, vsOne, share, m.WallSeconds)
	}
	printRow("train", 1, all, base)
	if one != nil {
		printRow("local", 1, cpuset.Format(allowed[:1]), one)
	}
	for _, n := range workers {
		m, err := measure("local", n, all)
		if err != nil {
			return err
		}
		printRow("local", n, all, m)
	}
	return nil
}

func phasesOf(cfg *config.Config) int {
	switch cfg.Method {
	case config.MethodDSB:
		return 2 * cfg.DSB.Iterations
	case config.MethodDSBM:
		if cfg.DSBM.LastPhase == config.LastPhaseBackward {
			return 2*cfg.DSBM.Iterations - 1
		}
		return 2 * cfg.DSBM.Iterations
	}
	return 1
}

func blasLine() string {
	if v := os.Getenv("OPENBLAS_NUM_THREADS"); v != "" {
		return fmt.Sprintf("%s, OPENBLAS_NUM_THREADS=%s", nn.BLAS(), v)
	}
	return nn.BLAS()
}

// benchChild runs this binary with args and reads the metrics.json it
// writes into out.
func benchChild(ctx context.Context, exe, out string, args ...string) (*experiment.Metrics, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, exe, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tail := stderr.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, fmt.Errorf("sbtrain %s: %w\n%s", strings.Join(args, " "), err, tail)
	}
	b, err := os.ReadFile(filepath.Join(out, experiment.MetricsFile))
	if err != nil {
		return nil, err
	}
	var m experiment.Metrics
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(out, experiment.MetricsFile), err)
	}
	return &m, nil
}
