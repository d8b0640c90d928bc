package dsbm

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/nn"
)

// gaussianOptions is a short run of the public Gaussian benchmark,
// N(-0.1, I) <-> N(+0.1, I) in d = 5 with sigma = 1, sized for a test: a
// smaller network at a higher learning rate, fewer steps, a smaller cache.
func gaussianOptions() Options {
	const dim = 5
	return Options{
		Data: gaussian{dim, -0.1, 1}, Prior: gaussian{dim, 0.1, 1}, Dim: dim,
		Sigma: 1, Eps: DefaultEps, Steps: 20, First: CouplingRef,
		Net:        nn.Spec{Arch: nn.ArchMLP, Dim: dim, Hidden: []int{64, 64}, Activation: nn.SiLU},
		Iterations: 4, StepsPerPhase: 600, Batch: 128,
		Hyper:     Hyper{LR: 1e-3, EMADecay: 0.99},
		CacheSize: 2048, Shards: 4, Refresh: 200,
		WarmStart: true, Seed: 3,
	}
}

// evalCoupling samples the backward drift from held-out prior points and
// returns the generated x0's moments and Cov(X0, X1).
func evalCoupling(t *testing.T, r *Result, n int) stats {
	t.Helper()
	b, err := r.Drift(Backward)
	if err != nil {
		t.Fatal(err)
	}
	start := draw(gaussian{r.Chain.Dim, 0.1, 1}, 99, 0, n)
	out, err := r.Chain.Sample(context.Background(), b, Backward, start, SampleOptions{Seed: 17})
	if err != nil {
		t.Fatal(err)
	}
	return pairStats(start, out.End, r.Chain.Dim)
}

func TestTrainGaussianFindsTheBridgeCoupling(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for several seconds")
	}
	opts := gaussianOptions()
	want := SBCov(1, 1, 1)
	var lastCov float64
	opts.AfterIteration = func(_ context.Context, n int, r *Result) error {
		s := evalCoupling(t, r, 10000)
		t.Logf("iteration %d: mean %.4f var %.4f cov %.4f (want -0.1, 1, %.4f)", n, s.mean, s.variance, s.cov, want)
		lastCov = s.cov
		return nil
	}
	began := time.Now()
	r, err := Train(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained %d iterations in %v", r.Iterations, time.Since(began).Round(time.Millisecond))
	s := evalCoupling(t, r, 10000)
	if math.Abs(s.mean+0.1) > 0.03 {
		t.Errorf("mean %.4f, want -0.1 within 0.03", s.mean)
	}
	if math.Abs(s.variance-1) > 0.05 {
		t.Errorf("variance %.4f, want 1 within 0.05", s.variance)
	}
	if math.Abs(s.cov-want) > 0.04 || math.Abs(lastCov-s.cov) > 1e-12 {
		t.Errorf("Cov(X0, X1) %.4f, want %.4f within 0.04", s.cov, want)
	}
	if len(r.Losses) != 2*opts.Iterations {
		t.Fatalf("%d phase losses, want %d", len(r.Losses), 2*opts.Iterations)
	}
}

func TestTrainBytesDoNotDependOnWorkers(t *testing.T) {
	opts := gaussianOptions()
	opts.Iterations, opts.StepsPerPhase, opts.CacheSize, opts.Refresh = 2, 25, 256, 10
	var nets [2][]float32
	for i, workers := range []int{1, 3} {
		opts.Workers = workers
		r, err := Train(context.Background(), opts, nil)
		if err != nil {
			t.Fatal(err)
		}
		f, err := r.Drift(Forward)
		if err != nil {
			t.Fatal(err)
		}
		nets[i] = f.Params()
	}
	for i := range nets[0] {
		if nets[0][i] != nets[1][i] {
			t.Fatalf("parameter %d: %v with 1 worker, %v with 3", i, nets[0][i], nets[1][i])
		}
	}
}

func TestOptionsValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"iterations", func(o *Options) { o.Iterations = 0 }, "iterations"},
		{"steps", func(o *Options) { o.StepsPerPhase = 0 }, "steps per phase"},
		{"net", func(o *Options) { o.Net.Dim = 2 }, "net dim"},
		{"lr", func(o *Options) { o.Hyper.LR = 0 }, "lr"},
		{"sigma", func(o *Options) { o.Sigma = -1 }, "sigma"},
		{"end on backward", func(o *Options) { o.Iterations, o.EndOnBackward = 1, true }, "end on backward"},
		{"negative warm lr", func(o *Options) { o.WarmLR = -1e-3 }, "warm lr"},
		{"NaN warm lr", func(o *Options) { o.WarmLR = math.NaN() }, "warm lr"},
		{"warm lr without warm start", func(o *Options) { o.WarmLR, o.WarmStart = 1e-4, false }, "warm lr"},
	} {
		o := gaussianOptions()
		tc.edit(&o)
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one starting with %q", tc.name, err, tc.want)
		}
	}
}

// A run that ends on backward is the full run without its last phase: the
// same backward drift, the forward drift of the iteration before, and an
// AfterIteration call for every iteration.
func TestEndOnBackwardDropsOnlyTheLastForwardPhase(t *testing.T) {
	opts := gaussianOptions()
	opts.Iterations, opts.StepsPerPhase, opts.CacheSize, opts.Refresh = 2, 20, 256, 10
	run := func(iterations int, endOnBackward bool) (*Result, []int) {
		o := opts
		o.Iterations, o.EndOnBackward = iterations, endOnBackward
		var after []int
		o.AfterIteration = func(_ context.Context, n int, r *Result) error {
			after = append(after, n)
			if r.Iterations != n {
				t.Errorf("after iteration %d the result counts %d", n, r.Iterations)
			}
			return nil
		}
		r, err := Train(context.Background(), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, after
	}
	full, _ := run(2, false)
	short, after := run(2, true)
	first, _ := run(1, false)
	if len(short.Losses) != 3 || short.Losses[2].Phase != (PhaseID{Iteration: 2, Dir: Backward}) {
		t.Fatalf("phases %v, want imf 1 backward, forward, imf 2 backward", short.Losses)
	}
	if len(after) != 2 || after[1] != 2 || short.Iterations != 2 {
		t.Errorf("AfterIteration called for %v and %d iterations counted, want [1 2] and 2", after, short.Iterations)
	}
	same := func(what string, a, b *nn.Net) {
		t.Helper()
		for i, v := range a.Params() {
			if v != b.Params()[i] {
				t.Fatalf("%s: parameter %d is %v, want %v", what, i, v, b.Params()[i])
			}
		}
	}
	same("backward drift", short.B, full.B)
	same("forward drift", short.F, first.F)
}

func TestPhasesOfARun(t *testing.T) {
	b := func(n int) PhaseID { return PhaseID{Iteration: n, Dir: Backward} }
	f := func(n int) PhaseID { return PhaseID{Iteration: n, Dir: Forward} }
	for _, tc := range []struct {
		iterations    int
		endOnBackward bool
		want          []PhaseID
		ends          []PhaseID
	}{
		{1, false, []PhaseID{b(1), f(1)}, []PhaseID{f(1)}},
		{2, false, []PhaseID{b(1), f(1), b(2), f(2)}, []PhaseID{f(1), f(2)}},
		{2, true, []PhaseID{b(1), f(1), b(2)}, []PhaseID{f(1), b(2)}},
		{3, true, []PhaseID{b(1), f(1), b(2), f(2), b(3)}, []PhaseID{f(1), f(2), b(3)}},
	} {
		o := Options{Iterations: tc.iterations, EndOnBackward: tc.endOnBackward}
		got := o.Phases()
		var ends []PhaseID
		for _, id := range got {
			if o.EndsIteration(id) {
				ends = append(ends, id)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || fmt.Sprint(ends) != fmt.Sprint(tc.ends) {
			t.Errorf("%d iterations, end on backward %v: phases %v ending %v, want %v ending %v",
				tc.iterations, tc.endOnBackward, got, ends, tc.want, tc.ends)
		}
	}
}

// WarmLR must rate exactly the warm-started phases, iteration 2 on in
// both directions, whether a phase is opened fresh or restored mid-way
// with its own network.
func TestWarmLRRatesOnlyTheWarmStartedPhases(t *testing.T) {
	const base, warm = 1e-3, 2e-4
	for _, tc := range []struct {
		name      string
		warmStart bool
		warmLR    float64
		want      map[int]float64 // iteration -> rate
	}{
		{"unset", true, 0, map[int]float64{1: base, 2: base, 3: base}},
		{"warm start", true, warm, map[int]float64{1: base, 2: warm, 3: warm}},
		{"cold start", false, 0, map[int]float64{1: base, 2: base, 3: base}},
	} {
		o := gaussianOptions()
		o.Iterations, o.WarmStart, o.WarmLR = 3, tc.warmStart, tc.warmLR
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		chain, err := o.Chain()
		if err != nil {
			t.Fatal(err)
		}
		r := &Result{Chain: chain, Spec: o.Net}
		for _, id := range o.Phases() {
			p, err := r.OpenPhase(&o, id, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			restored, err := r.OpenPhase(&o, id, p.Net.(*nn.Net), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := p.Hyper.LR, tc.want[id.Iteration]; got != want {
				t.Errorf("%s: %v opened at rate %v, want %v", tc.name, id, got, want)
			}
			if restored.Hyper != p.Hyper {
				t.Errorf("%s: %v restored with %+v, opened with %+v", tc.name, id, restored.Hyper, p.Hyper)
			}
			if err := r.ClosePhase(&o, p); err != nil {
				t.Fatal(err)
			}
		}
	}
}
