package dsbm

import (
	"context"
	"math"
	"slices"
	"testing"
)

// With the exact drift of a Gaussian coupling's Markovian projection, the
// Euler-Maruyama sampler must carry each end's law to the other's, and for
// the Schrödinger bridge's coupling reproduce its covariance.
func TestSampleWithExactDriftHasTheCouplingsMoments(t *testing.T) {
	const dim, rows = 5, 20000
	sb := SBCov(1, 1, 1)
	for _, tc := range []struct {
		name           string
		v0, v1, c      float64
		steps          int
		tolVar, tolCov float64
		checkCov       bool
	}{
		// N = 20 is the benchmark's grid; its Euler error shows in the
		// variance at the percent level.
		{name: "sb N=20", v0: 1, v1: 1, c: sb, steps: 20, tolVar: 0.04, tolCov: 0.02, checkCov: true},
		{name: "sb N=200", v0: 1, v1: 1, c: sb, steps: 200, tolVar: 0.02, tolCov: 0.015, checkCov: true},
		// An independent coupling of unequal variances: the projection is
		// not the coupling, but it keeps the marginals.
		{name: "ind N=200", v0: 1, v1: 2.25, c: 0, steps: 200, tolVar: 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := GaussianCoupling{M0: fill(dim, -0.1), V0: fill(dim, tc.v0), M1: fill(dim, 0.1), V1: fill(dim, tc.v1),
				C: fill(dim, tc.c), Sigma: 1}
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			c := testChain(dim)
			c.Steps = tc.steps
			for _, dir := range []Direction{Forward, Backward} {
				mean, v, from := -0.1, tc.v0, 0.1
				startStd := math.Sqrt(tc.v1)
				if dir == Forward {
					mean, v, from, startStd = 0.1, tc.v1, -0.1, math.Sqrt(tc.v0)
				}
				start := draw(gaussian{dim, from, startStd}, 3, uint64(dir), rows)
				out, err := c.Sample(context.Background(), GaussianDrift{Coupling: g, Dir: dir}, dir, start, SampleOptions{Seed: 11})
				if err != nil {
					t.Fatal(err)
				}
				s := pairStats(start, out.End, dim)
				if math.Abs(s.mean-mean) > 0.02 {
					t.Errorf("%v: mean %.4f, want %.4f", dir, s.mean, mean)
				}
				if math.Abs(s.variance-v) > tc.tolVar {
					t.Errorf("%v: variance %.4f, want %.4f within %v", dir, s.variance, v, tc.tolVar)
				}
				if tc.checkCov && math.Abs(s.cov-tc.c) > tc.tolCov {
					t.Errorf("%v: Cov(X0, X1) %.4f, want %.4f within %v", dir, s.cov, tc.c, tc.tolCov)
				}
				t.Logf("%v: mean %.4f var %.4f cov %.4f", dir, s.mean, s.variance, s.cov)
			}
		})
	}
}

func TestSampleBytesDoNotDependOnWorkersOrCalls(t *testing.T) {
	const dim = 3
	c := testChain(dim)
	g := unitCoupling(dim)
	start := draw(gaussian{dim, 0.1, 1}, 1, 0, 1000)
	drift := GaussianDrift{Coupling: g, Dir: Backward}
	one, err := c.Sample(context.Background(), drift, Backward, start, SampleOptions{Seed: 5, Chunk: 64, Workers: 1, Path: true})
	if err != nil {
		t.Fatal(err)
	}
	many, err := c.Sample(context.Background(), drift, Backward, start, SampleOptions{Seed: 5, Chunk: 64, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(one.End, many.End) {
		t.Fatal("3 workers sampled other bytes than 1")
	}
	// Rows 600.. sampled on their own, as a second process would.
	tail, err := c.Sample(context.Background(), drift, Backward, start[600*dim:], SampleOptions{Seed: 5, First: 600})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tail.End, one.End[600*dim:]) {
		t.Fatal("rows sampled in a second call differ from the same rows of one call")
	}
	if len(one.Path) != c.Steps+1 || !slices.Equal(one.Path[0], start) || !slices.Equal(one.Path[c.Steps], one.End) {
		t.Fatalf("path has %d states, want %d from the start to the end", len(one.Path), c.Steps+1)
	}
}

// Denoise must change the last step alone: the same path up to it, then
// the drift's step without noise, in both directions.
func TestSampleDenoiseDropsOnlyTheLastNoise(t *testing.T) {
	const dim = 3
	c := testChain(dim)
	g := unitCoupling(dim)
	start := draw(gaussian{dim, 0.1, 1}, 1, 0, 50)
	for _, dir := range []Direction{Backward, Forward} {
		drift := GaussianDrift{Coupling: g, Dir: dir}
		noisy, err := c.Sample(context.Background(), drift, dir, start, SampleOptions{Seed: 5, Path: true})
		if err != nil {
			t.Fatal(err)
		}
		clean, err := c.Sample(context.Background(), drift, dir, start, SampleOptions{Seed: 5, Path: true, Denoise: true})
		if err != nil {
			t.Fatal(err)
		}
		n := c.Steps
		for i := 0; i < n; i++ {
			if !slices.Equal(noisy.Path[i], clean.Path[i]) {
				t.Fatalf("%v: denoise changed state %d of %d, want only the last", dir, i, n)
			}
		}
		last := float32(float64(n-1) / float64(n))
		if dir == Backward {
			last = float32(1 / float64(n))
		}
		times := make([]float32, len(start)/dim)
		for r := range times {
			times[r] = last
		}
		v := make([]float32, len(start))
		if err := drift.Forward(times, clean.Path[n-1], v); err != nil {
			t.Fatal(err)
		}
		for j, x := range clean.Path[n-1] {
			if want := float32(float64(x) + float64(v[j])/float64(n)); clean.End[j] != want {
				t.Fatalf("%v: denoised end[%d] = %v, want the noiseless step %v", dir, j, clean.End[j], want)
			}
		}
		if slices.Equal(noisy.End, clean.End) {
			t.Fatalf("%v: denoise left the end points as they were", dir)
		}
	}
}

// unitCoupling is N(-0.1, I) at t = 0 and N(0.1, I) at t = 1 with
// covariance 0.5 between them, under a Brownian reference of scale 1.
func unitCoupling(dim int) GaussianCoupling {
	return GaussianCoupling{M0: fill(dim, -0.1), V0: fill(dim, 1), M1: fill(dim, 0.1), V1: fill(dim, 1),
		C: fill(dim, 0.5), Sigma: 1}
}

// scaledOracle is the exact drift multiplied by DriftScale: what a
// ScaledDrift network learns.
type scaledOracle struct{ drift GaussianDrift }

func (s scaledOracle) Forward(t, x, out []float32) error {
	if err := s.drift.Forward(t, x, out); err != nil {
		return err
	}
	dim := len(out) / len(t)
	for r, tr := range t {
		for i := r * dim; i < (r+1)*dim; i++ {
			out[i] = float32(float64(out[i]) * DriftScale(s.drift.Dir, float64(tr)))
		}
	}
	return nil
}

// Under ScaledDrift the chain must divide the scale back out wherever it
// uses a network as a drift (the sampler and the cache simulation) and put
// it into the regression targets, so a scaled network of the same drift
// gives the plain chain's samples, shards and (scaled) targets.
func TestScaledDriftIsTheSameDrift(t *testing.T) {
	const dim, rows = 3, 200
	g := unitCoupling(dim)
	plain := testChain(dim)
	scaled := testChain(dim)
	scaled.ScaledDrift = true
	near := func(what string, a, b []float32, tol float64) {
		t.Helper()
		if len(a) != len(b) {
			t.Fatalf("%s: %d values against %d", what, len(a), len(b))
		}
		worst := 0.0
		for i := range a {
			worst = max(worst, math.Abs(float64(a[i])-float64(b[i])))
		}
		if worst > tol {
			t.Errorf("%s: differ by up to %g, want <= %g", what, worst, tol)
		}
	}
	for _, dir := range []Direction{Forward, Backward} {
		exact := GaussianDrift{Coupling: g, Dir: dir}
		start := draw(gaussian{dim, 0.1, 1}, 5, uint64(dir), rows)
		want, err := plain.Sample(context.Background(), exact, dir, start, SampleOptions{Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		got, err := scaled.Sample(context.Background(), scaledOracle{exact}, dir, start, SampleOptions{Seed: 2})
		if err != nil {
			t.Fatal(err)
		}
		near(dir.String()+" samples", got.End, want.End, 1e-4)
	}

	// Backward phase 2 simulates its pairs with forward phase 1's drift.
	id := PhaseID{Iteration: 2, Dir: Backward}
	exact := GaussianDrift{Coupling: g, Dir: Forward}
	want, err := plain.SimulateShard(exact, id, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := scaled.SimulateShard(scaledOracle{exact}, id, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	near("shard x0", got.X0, want.X0, 0)
	near("shard x1", got.X1, want.X1, 1e-4)

	for _, dir := range []Direction{Forward, Backward} {
		id := PhaseID{Iteration: 2, Dir: dir}
		shard := &Shard{Phase: id, Gen: 0, Index: 0, Pairs: want.Pairs, Dim: dim, X0: want.X0, X1: want.X1}
		pb, err := plain.MakeBatch(id, 0, []*Shard{shard})
		if err != nil {
			t.Fatal(err)
		}
		sb, err := scaled.MakeBatch(id, 0, []*Shard{shard})
		if err != nil {
			t.Fatal(err)
		}
		near(dir.String()+" batch times", sb.T, pb.T, 0)
		near(dir.String()+" batch points", sb.X, pb.X, 0)
		scaledTarget := slices.Clone(pb.Target)
		for r, tr := range pb.T {
			for i := r * dim; i < (r+1)*dim; i++ {
				scaledTarget[i] = float32(float64(scaledTarget[i]) * DriftScale(dir, float64(tr)))
			}
		}
		near(dir.String()+" batch targets", sb.Target, scaledTarget, 1e-6)
	}
}

func TestDriftScale(t *testing.T) {
	for _, tc := range []struct {
		dir  Direction
		t    float64
		want float64
	}{
		{Backward, 1, 1}, {Backward, 0.25, 0.5}, {Backward, 0.01, 0.1},
		{Forward, 0, 1}, {Forward, 0.75, 0.5}, {Forward, 0.99, 0.1},
	} {
		if got := DriftScale(tc.dir, tc.t); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("DriftScale(%v, %v) = %v, want %v", tc.dir, tc.t, got, tc.want)
		}
	}
}
