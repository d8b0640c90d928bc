package dsbm

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/nn"
)

func testNet(t *testing.T, dim int, seed uint64) *nn.Net {
	t.Helper()
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: dim, Hidden: []int{16, 16}, Activation: nn.SiLU}, seed)
	if err != nil {
		t.Fatal(err)
	}
	return net
}

func TestFirstCouplings(t *testing.T) {
	const dim = 4
	id := PhaseID{Iteration: 1, Dir: Backward}
	for _, tc := range []struct {
		first Coupling
		// x1 - x0 per coordinate: variance sigma^2 under ref; under ind the
		// pair is independent, so 2 (unit variances) with mean 0.2.
		diffMean, diffVar, cov float64
	}{
		{CouplingRef, 0, 0.25, 1},
		{CouplingInd, 0.2, 2, 0},
	} {
		c := testChain(dim)
		c.First, c.Sigma, c.CacheSize, c.Shards = tc.first, 0.5, 8000, 4
		shards, err := c.SimulateShards(context.Background(), nil, id, 0, []int{0, 1, 2, 3}, 2)
		if err != nil {
			t.Fatal(err)
		}
		var x0, x1, diff []float32
		for _, s := range shards {
			x0 = append(x0, s.X0...)
			x1 = append(x1, s.X1...)
		}
		for i := range x0 {
			diff = append(diff, x1[i]-x0[i])
		}
		d := pairStats(x0, diff, dim)
		s := pairStats(x0, x1, dim)
		if math.Abs(d.mean-tc.diffMean) > 0.03 || math.Abs(d.variance-tc.diffVar) > 0.05*tc.diffVar {
			t.Errorf("%s: x1 - x0 has mean %.3f and variance %.3f, want %v and %v", tc.first, d.mean, d.variance, tc.diffMean, tc.diffVar)
		}
		if math.Abs(s.cov-tc.cov) > 0.04 {
			t.Errorf("%s: Cov(x0, x1) %.3f, want %v", tc.first, s.cov, tc.cov)
		}
	}
}

// A shard's bytes depend on (seed, phase, gen, index) and the frozen
// weights only: built alone, in a pool of any size, or again.
func TestShardsAreWorkerCountInvariant(t *testing.T) {
	const dim = 3
	c := testChain(dim)
	net := testNet(t, dim, 1)
	all := []int{0, 1, 2, 3}
	for _, id := range []PhaseID{{Iteration: 1, Dir: Forward}, {Iteration: 2, Dir: Backward}} {
		one, err := c.SimulateShards(context.Background(), net, id, 2, all, 1)
		if err != nil {
			t.Fatal(err)
		}
		three, err := c.SimulateShards(context.Background(), net, id, 2, all, 3)
		if err != nil {
			t.Fatal(err)
		}
		for i := range all {
			alone, err := c.SimulateShard(net, id, 2, i)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []*Shard{one[i], three[i]} {
				if !slices.Equal(s.X0, alone.X0) || !slices.Equal(s.X1, alone.X1) {
					t.Fatalf("%v shard %d differs between pool sizes", id, i)
				}
			}
			if err := c.Check(alone, id, 2, i); err != nil {
				t.Fatal(err)
			}
		}
		// The start side is a fresh draw of the phase's own law; the other
		// is simulated, so it moved.
		s := one[0]
		fixed, moved := s.X0, s.X1
		if id.Dir == Forward {
			fixed, moved = s.X1, s.X0
		}
		if slices.Equal(fixed, moved) {
			t.Fatalf("%v: the simulated end equals the start", id)
		}
		other, err := c.SimulateShard(net, id, 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(other.X0, s.X0) {
			t.Fatalf("%v: generation 3 repeats generation 2", id)
		}
	}
}

func TestSimulateShardRefusesTheWrongFrozenDrift(t *testing.T) {
	c := testChain(2)
	net := testNet(t, 2, 1)
	if _, err := c.SimulateShard(net, PhaseID{Iteration: 1, Dir: Backward}, 0, 0); err == nil || !strings.Contains(err.Error(), "first coupling") {
		t.Errorf("backward phase 1 with a frozen drift: %v", err)
	}
	if _, err := c.SimulateShard(nil, PhaseID{Iteration: 1, Dir: Forward}, 0, 0); err == nil || !strings.Contains(err.Error(), "frozen backward") {
		t.Errorf("forward phase without one: %v", err)
	}
	if _, err := c.SimulateShard(net, PhaseID{Iteration: 1, Dir: Forward}, 0, 4); err == nil {
		t.Error("shard 4 of 4 accepted")
	}
}

func TestMakeBatchChecksItsShards(t *testing.T) {
	c := testChain(2)
	id := PhaseID{Iteration: 1, Dir: Backward}
	s0, err := c.SimulateShard(nil, id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		step   int
		shards []*Shard
		want   string
	}{
		{"wrong generation", 10, []*Shard{s0}, "gen"},
		{"twice", 0, []*Shard{s0, s0}, "twice"},
		{"nil", 0, []*Shard{nil}, "nil"},
	} {
		if _, err := c.MakeBatch(id, tc.step, tc.shards); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	b, err := c.MakeBatch(id, 3, []*Shard{s0})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range b.T {
		if tt < float32(c.Eps) || tt > float32(1-c.Eps) {
			t.Fatalf("time %v outside [eps, 1-eps]", tt)
		}
	}
}

// Workers owning disjoint shards sum to the single-process step: the
// weighted losses and gradients add up to the full batch's.
func TestLocalGradsSumToTheGlobalStep(t *testing.T) {
	const dim = 3
	c := testChain(dim)
	id := PhaseID{Iteration: 2, Dir: Backward}
	frozen := testNet(t, dim, 2)
	shards, err := c.SimulateShards(context.Background(), frozen, id, 0, []int{0, 1, 2, 3}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := Hyper{LR: 1e-3}
	full, err := NewPhase(c, id, frozen, testNet(t, dim, 3), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := full.LocalGrad(5, shards)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(full.Net.Grads())
	split, err := NewPhase(c, id, frozen, testNet(t, dim, 3), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := make([]float32, len(want))
	var lossSum float64
	for _, part := range [][]*Shard{{shards[2]}, {shards[0], shards[3]}, {shards[1]}, nil} {
		l, err := split.LocalGrad(5, part)
		if err != nil {
			t.Fatal(err)
		}
		lossSum += l
		for i, g := range split.Net.Grads() {
			sum[i] += g
		}
	}
	if math.Abs(lossSum-loss) > 1e-9*(1+loss) {
		t.Fatalf("split losses sum to %v, full batch %v", lossSum, loss)
	}
	for i := range want {
		if d := math.Abs(float64(sum[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("gradient %d: split sum %v, full %v", i, sum[i], want[i])
		}
	}
	if _, err := NewPhase(c, PhaseID{Iteration: 1, Dir: Backward}, frozen, testNet(t, dim, 3), h, nil); err == nil {
		t.Fatal("backward phase 1 accepted a frozen drift")
	}
}

// pointMassDrift is the exact drift toward a point mass c at the end a
// direction travels to: (c - x)/t backward, (c - x)/(1-t) forward, so
// every step but the last moves a fraction of the way and the last lands
// on c.
type pointMassDrift struct {
	c   float64
	dir Direction
}

func (p pointMassDrift) Forward(t, x, out []float32) error {
	dim := len(x) / len(t)
	for r, tr := range t {
		left := float64(tr)
		if p.dir == Forward {
			left = 1 - left
		}
		for i := r * dim; i < (r+1)*dim; i++ {
			out[i] = float32((p.c - float64(x[i])) / left)
		}
	}
	return nil
}

// DenoiseCache must drop the last step's noise of both simulations alone:
// toward a point mass the denoised ends are the point, the plain ones
// scatter around it by sigma sqrt(1/N), and the starts are the same.
func TestDenoiseCacheLandsOnTheDriftsEnd(t *testing.T) {
	const dim, c = 2, 0.3
	for _, id := range []PhaseID{{Iteration: 2, Dir: Backward}, {Iteration: 1, Dir: Forward}} {
		plain := testChain(dim)
		clean := testChain(dim)
		clean.DenoiseCache = true
		frozen := pointMassDrift{c, opposite(id.Dir)}
		noisy, err := plain.SimulateShard(frozen, id, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		denoised, err := clean.SimulateShard(frozen, id, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		start, end, noisyStart, noisyEnd := denoised.X0, denoised.X1, noisy.X0, noisy.X1
		if id.Dir == Forward {
			start, end, noisyStart, noisyEnd = denoised.X1, denoised.X0, noisy.X1, noisy.X0
		}
		if !slices.Equal(start, noisyStart) {
			t.Fatalf("%v: denoise_cache changed the simulation's starts", id)
		}
		var spread float64
		for j := range end {
			if math.Abs(float64(end[j])-c) > 1e-5 {
				t.Fatalf("%v: denoised end[%d] = %v, want the point mass %v", id, j, end[j], c)
			}
			spread += (float64(noisyEnd[j]) - c) * (float64(noisyEnd[j]) - c)
		}
		spread = math.Sqrt(spread / float64(len(end)))
		if want := plain.Sigma / math.Sqrt(float64(plain.Steps)); math.Abs(spread-want) > 0.25*want {
			t.Errorf("%v: plain ends scatter %.4f around the point mass, want sigma sqrt(1/N) = %.4f", id, spread, want)
		}
	}
}
