package dsb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// parallelChain is a small chain with a frozen MLP mean, so that a pool of
// workers evaluates real networks on forks.
func parallelChain(t *testing.T) (*Chain, *NetMean) {
	t.Helper()
	sched, err := NewSchedule(6, 0.05, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	c := testChain(t, Reference{Kind: Brownian}, sched, 3, 70, 7)
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: 3, Hidden: []int{32, 32}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	return c, &NetMean{Net: net, Dir: Backward, Sched: sched, Dim: 3}
}

func sameFloats(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// simulateByHand is SimulateShard as first written: a fresh rng.New per
// trajectory and step. The optimised loop must give the same bytes.
func simulateByHand(c *Chain, frozen Mean, phase PhaseID, gen uint64, shard int) (*Shard, error) {
	per, n, dim := c.PerShard(), c.Sched.N(), c.Dim
	first := uint64(shard * per)
	start := c.Data
	if phase.Dir == Forward {
		start = c.Prior
	}
	x := make([]float32, per*dim)
	drawRows(start, x, dim, func(j int) rng.Stream {
		return rng.New(c.Seed, rng.PurposeData, phase.Key(), gen, first+uint64(j))
	})
	s := &Shard{Phase: phase, Gen: gen, Index: shard, Trajectories: per, Steps: n, Dim: dim,
		Inputs: make([]float32, per*n*dim), Targets: make([]float32, per*n*dim)}
	next, mean, atNew := make([]float32, per*dim), make([]float32, per*dim), make([]float32, per*dim)
	for step := 0; step < n; step++ {
		k := step
		if phase.Dir == Forward {
			k = n - 1 - step
		}
		if err := frozen.Eval(k, x, mean); err != nil {
			return nil, err
		}
		sd := c.Sched.noiseScale(k)
		for j := 0; j < per; j++ {
			z := rng.New(c.Seed, rng.PurposeNoise, phase.Key(), gen, first+uint64(j), uint64(k))
			for i := 0; i < dim; i++ {
				next[j*dim+i] = float32(float64(mean[j*dim+i]) + sd*z.Norm())
			}
		}
		if err := frozen.Eval(k, next, atNew); err != nil {
			return nil, err
		}
		for j := 0; j < per; j++ {
			row := (j*n + k) * dim
			copy(s.Inputs[row:row+dim], next[j*dim:(j+1)*dim])
			for i := 0; i < dim; i++ {
				s.Targets[row+i] = mean[j*dim+i] - atNew[j*dim+i]
			}
		}
		x, next = next, x
	}
	return s, nil
}

// TestSimulateShardsIsWorkerCountInvariant builds every shard of a
// generation on 1, 2 and 5 goroutines: each must have the bytes of the
// shard built alone, and of the loop as first written.
func TestSimulateShardsIsWorkerCountInvariant(t *testing.T) {
	c, frozen := parallelChain(t)
	phase := PhaseID{Iteration: 2, Dir: Forward}
	all := []int{0, 1, 2, 3, 4, 5, 6}
	want := make([]*Shard, len(all))
	for i := range all {
		s, err := simulateByHand(c, frozen, phase, 3, i)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = s
		alone, err := c.SimulateShard(frozen, phase, 3, i)
		if err != nil {
			t.Fatal(err)
		}
		sameFloats(t, fmt.Sprintf("shard %d inputs, optimised loop", i), alone.Inputs, s.Inputs)
		sameFloats(t, fmt.Sprintf("shard %d targets, optimised loop", i), alone.Targets, s.Targets)
	}
	for _, workers := range []int{1, 2, 5} {
		got, err := c.SimulateShards(context.Background(), frozen, phase, 3, all, workers)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range got {
			if err := c.Check(s, phase, 3, i); err != nil {
				t.Fatalf("%d workers: %v", workers, err)
			}
			sameFloats(t, fmt.Sprintf("%d workers, shard %d inputs", workers, i), s.Inputs, want[i].Inputs)
			sameFloats(t, fmt.Sprintf("%d workers, shard %d targets", workers, i), s.Targets, want[i].Targets)
		}
	}
	// A subset in any order comes back in the order asked.
	some, err := c.SimulateShards(context.Background(), frozen, phase, 3, []int{5, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if some[0].Index != 5 || some[1].Index != 1 {
		t.Fatalf("shards %d, %d, want 5, 1", some[0].Index, some[1].Index)
	}
}

func TestSimulateShardsStopsOnErrorAndCancel(t *testing.T) {
	c, frozen := parallelChain(t)
	phase := PhaseID{Iteration: 2, Dir: Forward}
	all := []int{0, 1, 2, 3, 4, 5, 6}
	// A shard index outside the chain fails its piece; the error says so.
	_, err := c.SimulateShards(context.Background(), frozen, phase, 0, []int{0, 1, 9, 2}, 2)
	if err == nil || !strings.Contains(err.Error(), "shard index 9") {
		t.Fatalf("error %v, want one naming shard index 9", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, workers := range []int{1, 3} {
		if _, err := c.SimulateShards(ctx, frozen, phase, 0, all, workers); !errors.Is(err, context.Canceled) {
			t.Errorf("%d workers, cancelled context: error %v, want context.Canceled", workers, err)
		}
	}
	if _, err := c.SimulateShards(context.Background(), nil, phase, 0, all, 2); err == nil {
		t.Error("SimulateShards accepted no frozen mean")
	}
}

// TestSampleIsWorkerCountInvariant samples with a network mean in chunks
// on 1, 2 and 5 goroutines, with and without paths.
func TestSampleIsWorkerCountInvariant(t *testing.T) {
	c, mean := parallelChain(t)
	start := make([]float32, 3*101)
	for i := range start {
		start[i] = float32(i%11)/5 - 1
	}
	ref, err := Sample(mean, c.Sched, 3, start, SampleOptions{Seed: 8, First: 3, Path: true, Chunk: 20, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{2, 5} {
		got, err := SampleContext(context.Background(), mean, c.Sched, 3, start,
			SampleOptions{Seed: 8, First: 3, Path: true, Chunk: 20, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		sameFloats(t, fmt.Sprintf("%d workers, end points", workers), got.End, ref.End)
		for k := range got.Path {
			sameFloats(t, fmt.Sprintf("%d workers, path %d", workers, k), got.Path[k], ref.Path[k])
		}
	}
	// The default chunk on one worker is the same chain too.
	whole, err := Sample(mean, c.Sched, 3, start, SampleOptions{Seed: 8, First: 3})
	if err != nil {
		t.Fatal(err)
	}
	if nn.BLAS() == "pure-Go (gonum)" { // OpenBLAS may round differently at another batch size
		sameFloats(t, "one chunk against chunks of 20", whole.End, ref.End)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SampleContext(ctx, mean, c.Sched, 3, start, SampleOptions{Chunk: 20, Workers: 3}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v, want context.Canceled", err)
	}
	if _, err := Sample(mean, c.Sched, 3, start, SampleOptions{Workers: -1}); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Errorf("workers -1: error %v, want one naming workers", err)
	}
}

// TestForkMeans: a network mean forks into evaluators computing the same
// bytes; a mean that cannot fork is used alone.
func TestForkMeans(t *testing.T) {
	_, mean := parallelChain(t)
	ms := ForkMeans(mean, 3)
	if len(ms) != 3 || ms[0] != Mean(mean) {
		t.Fatalf("ForkMeans gave %d means, first %v; want 3, the original first", len(ms), ms[0])
	}
	x := []float32{0.1, -0.2, 0.3, 1, 2, 3}
	want := make([]float32, len(x))
	if err := mean.Eval(2, x, want); err != nil {
		t.Fatal(err)
	}
	for i, m := range ms[1:] {
		got := make([]float32, len(x))
		if err := m.Eval(2, x, got); err != nil {
			t.Fatal(err)
		}
		sameFloats(t, fmt.Sprintf("fork %d", i+1), got, want)
	}
	if got := ForkMeans(affineMean{Backward, 1, 0}, 4); len(got) != 1 {
		t.Errorf("a mean without Fork gave %d means, want 1", len(got))
	}
	if got := ForkMeans(ReferenceMean{}, 4); len(got) != 4 {
		t.Errorf("the reference mean gave %d means, want 4", len(got))
	}
}

// TestWideNetCacheIsWorkerCountInvariant uses the benchmark's 256x256 net at
// shards of 1000 rows, big enough for a multi-threaded BLAS to split its
// products: one worker (BLAS threads as configured) and several (BLAS on one
// thread) must still give the same bytes.
func TestWideNetCacheIsWorkerCountInvariant(t *testing.T) {
	sched, err := NewSchedule(2, 0.025, 0.025)
	if err != nil {
		t.Fatal(err)
	}
	c := testChain(t, Reference{Kind: Brownian}, sched, 5, 3000, 3)
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: 5, Hidden: []int{256, 256}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	frozen := &NetMean{Net: net, Dir: Backward, Sched: sched, Dim: 5}
	all := []int{0, 1, 2}
	one, err := c.SimulateShards(context.Background(), frozen, PhaseID{1, Forward}, 0, all, 1)
	if err != nil {
		t.Fatal(err)
	}
	three, err := c.SimulateShards(context.Background(), frozen, PhaseID{1, Forward}, 0, all, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range all {
		sameFloats(t, fmt.Sprintf("shard %d inputs", i), three[i].Inputs, one[i].Inputs)
		sameFloats(t, fmt.Sprintf("shard %d targets", i), three[i].Targets, one[i].Targets)
	}
}

// TestTrainIsWorkerCountInvariant trains through several cache generations
// per phase with one worker (each generation built when its first step
// needs it) and with several (the next generation built while the steps
// train): the networks and EMA shadows must be the same bytes.
func TestTrainIsWorkerCountInvariant(t *testing.T) {
	var ref *Result
	for _, workers := range []int{1, 3} {
		o := gaussianOptions(3, 2, 60)
		o.Net.Hidden = []int{128, 128}
		o.CacheSize, o.Refresh, o.Workers = 256, 7, workers
		res, err := Train(context.Background(), o, nil)
		if err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		if ref == nil {
			ref = res
			continue
		}
		for _, c := range []struct {
			name      string
			got, want []float32
		}{
			{"backward net", res.B.Params(), ref.B.Params()},
			{"forward net", res.F.Params(), ref.F.Params()},
			{"backward EMA", res.BEMA, ref.BEMA},
			{"forward EMA", res.FEMA, ref.FEMA},
		} {
			if i := firstBitDifference(c.got, c.want); i >= 0 {
				t.Fatalf("workers %d: %s differs from 1 worker's at %d: %v vs %v", workers, c.name, i, c.got[i], c.want[i])
			}
		}
	}
}

func firstBitDifference(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}
