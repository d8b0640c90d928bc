package si

import (
	"github.com/sbtrain/sbtrain/dataset"
)

// Distribution is what the interpolant bridges: any dataset distribution.
type Distribution = dataset.Distribution

// LogDensity is a distribution whose log density is known; the likelihood
// needs it for rho0.
type LogDensity = dataset.LogDensity

// Field is a time-dependent vector field evaluated on a batch: len(t) = B,
// len(x) = len(out) = B*Dim(). A trained network or a closed form.
type Field interface {
	Dim() int
	Eval(t, x, out []float32) error
}

// JacobianField can also form vector-Jacobian products, which the exact and
// Hutchinson divergences use: vjp_b = v_b^T (d field / d x)(t_b, x_b).
type JacobianField interface {
	Field
	VJP(t, x, v, out, vjp []float32) error
}

// Forker is a Field that can make copies of itself for concurrent use: a
// copy computes bitwise the same values and shares nothing that Eval or VJP
// writes. The samplers and the likelihood run their chunks on several
// goroutines only for Forkers; any other Field runs on one.
type Forker interface {
	Field
	Fork() Field
}

// forkFields returns up to n fields for n goroutines, f itself first and
// forks after it; just f when it cannot fork.
func forkFields(f Field, n int) []Field {
	out := []Field{f}
	fk, ok := f.(Forker)
	if !ok {
		return out
	}
	// A wrapper is a Forker only when what it wraps is.
	if c, ok := f.(interface{ CanFork() bool }); ok && !c.CanFork() {
		return out
	}
	for len(out) < n {
		out = append(out, fk.Fork())
	}
	return out
}

// Fork returns a field on an evaluator of the same network: it shares the
// parameters and owns its workspace.
func (f *NetField) Fork() Field { return &NetField{Net: f.Net.Evaluator()} }

// Fork returns a velocity with the same endpoints and an empty cache.
func (v *GaussianVelocity) Fork() Field { return &GaussianVelocity{path: v.path, g0: v.g0, g1: v.g1} }

// Fork returns a denoiser on a fork of the velocity it reads.
func (e *GaussianDenoiser) Fork() Field {
	return &GaussianDenoiser{v: e.v.Fork().(*GaussianVelocity)}
}
