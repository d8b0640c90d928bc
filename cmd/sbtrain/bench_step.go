package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
	"gonum.org/v1/gonum/blas"
	"gorgonia.org/gorgonia"
)

func init() {
	registerBenchmark(&benchmark{name: "step", summary: "one training step (loss, gradient, Adam) of a network, beside an SGEMM of matching size", run: runBenchStep})
}

// stepBenchConfig is what `bench step` measures, after its flags are checked.
type stepBenchConfig struct {
	spec    nn.Spec
	batch   int
	threads int
	steps   int
	warmup  int
}

func runBenchStep(ctx context.Context, args []string) error {
	fs := newFlagSet("bench step", "--arch mlp|dsb2d|unet [flags]")
	arch := fs.String("arch", nn.ArchMLP, "network: mlp, dsb2d or unet")
	dim := fs.Int("dim", 2, "data dimension of mlp and dsb2d (the unet's is C*H*W of --image)")
	hidden := fs.String("hidden", "256,256,256", "mlp hidden widths")
	timeEmbed := fs.Int("time-embed", 0, "sinusoidal time embedding size; 0 is the architecture's default (mlp: raw t)")
	activation := fs.String("activation", "", "mlp and dsb2d activation (leakyrelu, silu, relu, tanh); empty is the architecture's default")
	channels := fs.String("channels", "32,64,64", "unet channels, one per level")
	image := fs.String("image", "1,28,28", "unet input shape C,H,W")
	batch := fs.Int("batch", 512, "samples per step")
	threads := fs.Int("threads", 1, "threads for the step (Go and BLAS), 1..CPUs")
	steps := fs.Int("steps", 0, "timed steps; 0 picks enough for about 3 s")
	warmup := fs.Int("warmup", 2, "untimed steps first")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := stepBenchFlags(*arch, *dim, *hidden, *timeEmbed, *activation, *channels, *image, *batch, *threads, *steps, *warmup)
	if err != nil {
		return err
	}
	return benchStep(ctx, cfg)
}

// stepBenchFlags checks the flags of `bench step` and builds the network spec.
func stepBenchFlags(arch string, dim int, hidden string, timeEmbed int, activation, channels, image string,
	batch, threads, steps, warmup int) (stepBenchConfig, error) {
	cpus := allowedCPUs()
	if threads < 1 || threads > cpus {
		return stepBenchConfig{}, usagef("--threads %d: want 1..%d (the CPUs this process may use)", threads, cpus)
	}
	if batch < 1 || batch > 1<<16 {
		return stepBenchConfig{}, usagef("--batch %d: want 1..%d", batch, 1<<16)
	}
	if steps < 0 || steps > 1e6 {
		return stepBenchConfig{}, usagef("--steps %d: want 0..1000000", steps)
	}
	if warmup < 0 || warmup > 1000 {
		return stepBenchConfig{}, usagef("--warmup %d: want 0..1000", warmup)
	}
	spec := nn.Spec{Arch: arch, Dim: dim, TimeEmbed: timeEmbed, Activation: nn.Activation(activation)}
	switch arch {
	case nn.ArchMLP:
		h, err := parseInts(hidden)
		if err != nil {
			return stepBenchConfig{}, usagef("--hidden: %v", err)
		}
		spec.Hidden = h
	case nn.ArchDSB2D:
	case nn.ArchUNet:
		c, err := parseInts(channels)
		if err != nil {
			return stepBenchConfig{}, usagef("--channels: %v", err)
		}
		shape, err := parseInts(image)
		if err != nil || len(shape) != 3 {
			return stepBenchConfig{}, usagef("--image %q: want C,H,W, three positive integers", image)
		}
		spec.Channels = c
		spec.Image = [3]int{shape[0], shape[1], shape[2]}
		spec.Dim = shape[0] * shape[1] * shape[2]
	default:
		return stepBenchConfig{}, usagef("--arch %q: want mlp, dsb2d or unet", arch)
	}
	if err := spec.Validate(); err != nil {
		return stepBenchConfig{}, usagef("%v", err)
	}
	return stepBenchConfig{spec: spec.WithDefaults(), batch: batch, threads: threads, steps: steps, warmup: warmup}, nil
}

// parseInts reads "256,256,256".
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func benchStep(ctx context.Context, cfg stepBenchConfig) error {
	prevProcs := runtime.GOMAXPROCS(cfg.threads)
	defer runtime.GOMAXPROCS(prevProcs)
	prevBLAS := nn.BLASThreads()
	nn.SetBLASThreads(cfg.threads)
	defer nn.SetBLASThreads(prevBLAS)

	net, err := nn.New(cfg.spec, 1)
	if err != nil {
		return fmt.Errorf("bench step: %w", err)
	}
	t, x, target := stepBenchBatch(cfg.batch, cfg.spec.Dim)
	opt := nn.NewAdam(net.NumParams(), 1e-4)
	step := func() error {
		if _, err := net.LossGrad(t, x, target); err != nil {
			return err
		}
		opt.Step(net.Params(), net.Grads())
		return nil
	}
	for range max(cfg.warmup, 1) {
		if err := step(); err != nil {
			return fmt.Errorf("bench step: %w", err)
		}
	}
	steps := cfg.steps
	if steps == 0 {
		start := time.Now()
		if err := step(); err != nil {
			return fmt.Errorf("bench step: %w", err)
		}
		steps = int(min(max(3*time.Second/max(time.Since(start), time.Microsecond), 3), 10000))
	}
	fmt.Fprintf(errOut, "bench step: %s, %d parameters, batch %d, %d thread(s), %s, %d timed steps\n",
		describeSpec(cfg.spec), net.NumParams(), cfg.batch, cfg.threads, nn.BLAS(), steps)

	net.SetLayerTiming(true) // only the unet is timed by layer kind
	defer net.SetLayerTiming(false)
	times := make([]time.Duration, 0, steps)
	var total time.Duration
	for i := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		if err := step(); err != nil {
			return fmt.Errorf("bench step %d: %w", i, err)
		}
		d := time.Since(start)
		times = append(times, d)
		total += d
	}
	slices.Sort(times)
	median := times[len(times)/2]
	flops := net.StepFLOPs(cfg.batch)
	stepRate := flops / median.Seconds() / 1e9
	ref := largestGEMM(net.StepGEMMs(cfg.batch))
	gemmRate := sgemmRate(ref, time.Second)
	fmt.Fprintf(errOut, "step: %.3f ms median (min %.3f, max %.3f), %.0f samples/s\n",
		ms(median), ms(times[0]), ms(times[len(times)-1]), float64(cfg.batch)/median.Seconds())
	fmt.Fprintf(errOut, "arithmetic: %.2f GFLOP a step in matrix products, %.1f GFLOP/s\n", flops/1e9, stepRate)
	fmt.Fprintf(errOut, "sgemm %dx%dx%d (the step's largest product) in the same run: %.1f GFLOP/s; the step runs at %.2f of it\n",
		ref.M, ref.N, ref.K, gemmRate, stepRate/gemmRate)
	if byKind := net.LayerTimes(); byKind != nil {
		printLayerShares(byKind, total, steps)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// describeSpec is the network's shape in one phrase.
func describeSpec(s nn.Spec) string {
	switch s.Arch {
	case nn.ArchUNet:
		return fmt.Sprintf("unet channels %v on %dx%dx%d", s.Channels, s.Image[0], s.Image[1], s.Image[2])
	case nn.ArchMLP:
		return fmt.Sprintf("mlp %d -> %v -> %d (%s)", s.Dim, s.Hidden, s.Dim, s.Activation)
	default:
		return fmt.Sprintf("%s dim %d (%s)", s.Arch, s.Dim, s.Activation)
	}
}

// stepBenchBatch is a fixed random batch: times mixing step indices and
// [0, 1], inputs and targets standard normal.
func stepBenchBatch(batch, dim int) (t, x, target []float32) {
	s := rng.New(1, rng.PurposeBench, 2)
	t = make([]float32, batch)
	for i := range t {
		if i%2 == 0 {
			t[i] = float32(s.Intn(20))
		} else {
			t[i] = float32(s.Float64())
		}
	}
	x, target = make([]float32, batch*dim), make([]float32, batch*dim)
	for i := range x {
		x[i], target[i] = float32(s.Norm()), float32(s.Norm())
	}
	return t, x, target
}

// largestGEMM is the product that carries the most arithmetic.
func largestGEMM(gs []nn.GEMM) nn.GEMM {
	best := nn.GEMM{M: 1, N: 1, K: 1, Count: 1}
	for _, g := range gs {
		if g.FLOPs()/float64(g.Count) > best.FLOPs()/float64(best.Count) {
			best = g
		}
	}
	best.Count = 1
	return best
}

// sgemmRate times C = A B of g's shape through the configured BLAS for
// about budget and returns GFLOP/s.
func sgemmRate(g nn.GEMM, budget time.Duration) float64 {
	a, b, c := make([]float32, g.M*g.K), make([]float32, g.K*g.N), make([]float32, g.M*g.N)
	s := rng.New(1, rng.PurposeBench, 3)
	for i := range a {
		a[i] = float32(s.Norm())
	}
	for i := range b {
		b[i] = float32(s.Norm())
	}
	impl := gorgonia.WhichBLAS()
	run := func() { impl.Sgemm(blas.NoTrans, blas.NoTrans, g.M, g.N, g.K, 1, a, g.K, b, g.N, 0, c, g.N) }
	run()
	var times []time.Duration
	deadline := time.Now().Add(budget)
	for len(times) < 3 || (time.Now().Before(deadline) && len(times) < 10000) {
		start := time.Now()
		run()
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return g.FLOPs() / times[len(times)/2].Seconds() / 1e9
}

// printLayerShares prints each layer kind's share of the timed steps.
func printLayerShares(byKind map[string]time.Duration, total time.Duration, steps int) {
	kinds := make([]string, 0, len(byKind))
	var counted time.Duration
	for k, d := range byKind {
		kinds = append(kinds, k)
		counted += d
	}
	slices.SortFunc(kinds, func(a, b string) int { return int(byKind[b] - byKind[a]) })
	fmt.Fprintf(errOut, "share of the step by layer kind:\n")
	for _, k := range kinds {
		fmt.Fprintf(errOut, "  %-14s %5.1f%%  %8.3f ms/step\n", k, 100*float64(byKind[k])/float64(total), ms(byKind[k])/float64(steps))
	}
	if rest := total - counted; rest > 0 {
		fmt.Fprintf(errOut, "  %-14s %5.1f%%\n", "untimed", 100*float64(rest)/float64(total))
	}
}
