package dsbm

import (
	"math"
	"strings"
	"testing"
)

func TestBridgePointTargetsAreTheBridgeDrifts(t *testing.T) {
	x0 := []float64{-1, 0.5, 2}
	x1 := []float64{1.5, -0.25, 2}
	z := []float64{0.3, -1.2, 0.8}
	for _, tc := range []struct {
		dir   Direction
		sigma float64
		t     float64
	}{
		{Forward, 1, 0.001}, {Forward, 1, 0.5}, {Forward, 0.3, 0.97},
		{Backward, 1, 0.003}, {Backward, 2, 0.5}, {Backward, 1, 0.999},
	} {
		xt := make([]float32, 3)
		target := make([]float32, 3)
		BridgePoint(tc.dir, tc.sigma, tc.t, x0, x1, z, xt, target)
		for i := range x0 {
			wantX := (1-tc.t)*x0[i] + tc.t*x1[i] + tc.sigma*math.Sqrt(tc.t*(1-tc.t))*z[i]
			// The regression targets are the Brownian bridge's drift
			// towards the end it is pinned to.
			want := (x1[i] - wantX) / (1 - tc.t)
			if tc.dir == Backward {
				want = (x0[i] - wantX) / tc.t
			}
			if math.Abs(float64(xt[i])-wantX) > 1e-6 {
				t.Errorf("%v t=%v coord %d: x_t %v, want %v", tc.dir, tc.t, i, xt[i], wantX)
			}
			if tol := 1e-5 * (1 + math.Abs(want)); math.Abs(float64(target[i])-want) > tol {
				t.Errorf("%v t=%v coord %d: target %v, want %v", tc.dir, tc.t, i, target[i], want)
			}
		}
	}
}

func TestChainValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Chain)
		want string
	}{
		{"sigma", func(c *Chain) { c.Sigma = 0 }, "sigma"},
		{"eps", func(c *Chain) { c.Eps = 0.5 }, "eps"},
		{"steps", func(c *Chain) { c.Steps = 0 }, "steps"},
		{"coupling", func(c *Chain) { c.First = "ot" }, "first coupling"},
		{"data dim", func(c *Chain) { c.Data = gaussian{3, 0, 1} }, "data"},
		{"cache", func(c *Chain) { c.CacheSize = 241 }, "cache size"},
		{"batch", func(c *Chain) { c.Batch = 30 }, "batch"},
		{"refresh", func(c *Chain) { c.Refresh = -1 }, "refresh"},
	} {
		c := testChain(2)
		if err := c.Validate(); err != nil {
			t.Fatalf("valid chain: %v", err)
		}
		tc.edit(c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one starting with %q", tc.name, err, tc.want)
		}
	}
}

func TestFrozenSequencesThePhases(t *testing.T) {
	for _, tc := range []struct {
		phase PhaseID
		want  PhaseID
		ok    bool
	}{
		{PhaseID{Iteration: 1, Dir: Backward}, PhaseID{}, false},
		{PhaseID{Iteration: 1, Dir: Forward}, PhaseID{Iteration: 1, Dir: Backward}, true},
		{PhaseID{Iteration: 2, Dir: Backward}, PhaseID{Iteration: 1, Dir: Forward}, true},
		{PhaseID{Iteration: 3, Dir: Forward}, PhaseID{Iteration: 3, Dir: Backward}, true},
	} {
		got, ok := Frozen(tc.phase)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Frozen(%v) = %v, %v; want %v, %v", tc.phase, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSBCovUnitVariances(t *testing.T) {
	if got, want := SBCov(1, 1, 1), (math.Sqrt(5)-1)/2; math.Abs(got-want) > 1e-12 {
		t.Fatalf("SBCov(1, 1, 1) = %v, want %v", got, want)
	}
	// As sigma -> 0 the bridge is the optimal transport map, c -> sqrt(v0 v1).
	if got := SBCov(1, 4, 1e-4); math.Abs(got-2) > 1e-6 {
		t.Fatalf("SBCov(1, 4, ~0) = %v, want 2", got)
	}
}
