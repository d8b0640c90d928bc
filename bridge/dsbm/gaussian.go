package dsbm

import (
	"fmt"
	"math"
)

// GaussianCoupling is a coupling of (X0, X1) whose coordinates are
// independent pairs of Gaussians: coordinate i has means M0[i], M1[i],
// variances V0[i], V1[i] and covariance C[i]. Its Brownian-bridge mixture
// (scale Sigma) has a closed-form Markovian projection, [GaussianDrift].
type GaussianCoupling struct {
	M0, V0, M1, V1, C []float64
	Sigma             float64
}

// SBCov is the covariance of the Schrödinger bridge's coupling between
// N(., v0) and N(., v1) in one coordinate, for a Brownian reference of scale
// sigma on [0, 1] (DESIGN.md "Ground truths", scalar case):
// (sqrt(4 v0 v1 + sigma^4) - sigma^2)/2.
func SBCov(v0, v1, sigma float64) float64 {
	s2 := sigma * sigma
	return (math.Sqrt(4*v0*v1+s2*s2) - s2) / 2
}

// Validate checks the shapes and that every coordinate's covariance matrix
// is positive definite.
func (g GaussianCoupling) Validate() error {
	d := len(g.M0)
	if d == 0 {
		return fmt.Errorf("gaussian coupling: no coordinates")
	}
	for name, v := range map[string][]float64{"v0": g.V0, "m1": g.M1, "v1": g.V1, "c": g.C} {
		if len(v) != d {
			return fmt.Errorf("gaussian coupling %s: %d values, want %d", name, len(v), d)
		}
	}
	if !(g.Sigma > 0) {
		return fmt.Errorf("gaussian coupling sigma: must be positive, got %v", g.Sigma)
	}
	for i := range d {
		if !(g.V0[i] > 0 && g.V1[i] > 0 && g.C[i]*g.C[i] < g.V0[i]*g.V1[i]) {
			return fmt.Errorf("gaussian coupling coordinate %d: variances %v, %v and covariance %v are not positive definite", i, g.V0[i], g.V1[i], g.C[i])
		}
	}
	return nil
}

// GaussianDrift is the exact drift of one direction of the Markovian
// projection of a Gaussian coupling's bridge mixture: with X_t the bridge
// point, v_f(t, x) = (E[X1 | X_t = x] - x)/(1-t) and v_b(t, x) =
// (E[X0 | X_t = x] - x)/t, both linear in x. Run with [Chain.Sample] it
// carries the law of X0 to that of X1 (or back) exactly up to the
// Euler-Maruyama error; for the Schrödinger bridge's coupling (C = SBCov)
// the sampled pairs have the coupling's covariance too. It is the oracle the
// sampler and the training are tested against.
type GaussianDrift struct {
	Coupling GaussianCoupling
	Dir      Direction
}

// Forward writes v(t_b, x_b) for every row; it satisfies [Model].
func (g GaussianDrift) Forward(t, x, out []float32) error {
	c := g.Coupling
	d := len(c.M0)
	if len(x) != len(t)*d || len(out) != len(x) {
		return fmt.Errorf("gaussian drift: %d times, %d inputs and %d outputs for dim %d", len(t), len(x), len(out), d)
	}
	s2 := c.Sigma * c.Sigma
	for r, tf := range t {
		tt := float64(tf)
		if (g.Dir == Forward && tt >= 1) || (g.Dir == Backward && tt <= 0) {
			return fmt.Errorf("gaussian drift: %s drift at t = %v is not defined", g.Dir, tt)
		}
		for i := range d {
			mt := (1-tt)*c.M0[i] + tt*c.M1[i]
			vt := (1-tt)*(1-tt)*c.V0[i] + tt*tt*c.V1[i] + 2*tt*(1-tt)*c.C[i] + s2*tt*(1-tt)
			xi := float64(x[r*d+i])
			var v float64
			if g.Dir == Forward {
				e1 := c.M1[i] + ((1-tt)*c.C[i]+tt*c.V1[i])/vt*(xi-mt)
				v = (e1 - xi) / (1 - tt)
			} else {
				e0 := c.M0[i] + ((1-tt)*c.V0[i]+tt*c.C[i])/vt*(xi-mt)
				v = (e0 - xi) / tt
			}
			out[r*d+i] = float32(v)
		}
	}
	return nil
}
