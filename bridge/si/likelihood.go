package si

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// Divergence estimators for the likelihood.
const (
	DivAuto       = "auto"       // exact for d <= ExactMaxDim, else Hutchinson
	DivExact      = "exact"      // d VJP calls with one-hot vectors
	DivHutchinson = "hutchinson" // Rademacher probes, unbiased
)

// DefaultExactMaxDim is where "auto" switches from the exact divergence
// (cost d VJPs per evaluation) to Hutchinson (cost Probes VJPs).
const DefaultExactMaxDim = 16

// LikelihoodOptions configure LogLikelihood.
type LikelihoodOptions struct {
	Method      string  // euler, heun, rk4 or dopri5 on the augmented (x, log-density) system
	Steps       int     // fixed steps; unused by dopri5
	RTol, ATol  float64 // dopri5's tolerances; 0 means DefaultRTol/DefaultATol
	Divergence  string  // auto (default), exact or hutchinson
	Probes      int     // Hutchinson probes per evaluation; 0 means 1
	ExactMaxDim int     // threshold for auto; 0 means DefaultExactMaxDim
	// Seed keys the probes: sample i's probe p is the stream
	// (Seed, PurposeProbe, First+i, p), fixed along the whole trajectory.
	Seed  uint64
	First int
	Chunk int // samples per network call and per goroutine; 0 means DefaultChunk
	// Workers bounds the goroutines that integrate chunks; 0 means one per
	// core (GOMAXPROCS). The result is the same bytes for any value.
	Workers int
}

// LogLikelihood returns log rho1(x1) for each point of x1 (n*d values) under
// the flow of b: it integrates the probability-flow ODE backward from t = 1
// to t = 0 jointly with L(t) = int_t^1 div b(s, X_s) ds, and returns
// log rho0(X_0) - L(0), i.e. log rho1(x1) = log rho0(x0) - int_0^1 div b dt.
// Chunks of opts.Chunk samples run on up to opts.Workers goroutines, each
// with its own fork of b (one goroutine unless b is a [Forker]); the result
// does not depend on the worker count.
func LogLikelihood(ctx context.Context, b JacobianField, rho0 LogDensity, x1 []float32, opts LikelihoodOptions) ([]float64, error) {
	r, err := LogLikelihoodODE(ctx, b, rho0, x1, opts)
	if err != nil {
		return nil, err
	}
	return r.LogP, nil
}

// LikelihoodResult is a per-point log-likelihood with its error bar.
type LikelihoodResult struct {
	LogP []float64
	// StdErr is the Monte Carlo standard error of each LogP (the SDE
	// estimator); nil for the ODE, whose only error is the solver's.
	StdErr []float64
	// Evals is the number of right-hand-side evaluations of the longest
	// chunk (each covers every row of its chunk; one costs d VJPs with the
	// exact divergence, Probes with Hutchinson's): 4 Steps for rk4.
	Evals int
}

// LogLikelihoodODE is LogLikelihood with the solver's evaluation count.
func LogLikelihoodODE(ctx context.Context, b JacobianField, rho0 LogDensity, x1 []float32, opts LikelihoodOptions) (*LikelihoodResult, error) {
	d := b.Dim()
	if d <= 0 || len(x1)%d != 0 {
		return nil, fmt.Errorf("si likelihood: %d values is not a multiple of dimension %d", len(x1), d)
	}
	if rho0 == nil {
		return nil, fmt.Errorf("si likelihood: rho0 needs a log density")
	}
	if opts.Method == MethodDopri5 {
		if _, err := newDopri(0, opts.RTol, opts.ATol); err != nil {
			return nil, fmt.Errorf("si likelihood: %w", err)
		}
	} else {
		if opts.Steps <= 0 {
			return nil, fmt.Errorf("si likelihood: steps %d, want > 0", opts.Steps)
		}
		if _, err := newStepper(opts.Method, 0); err != nil {
			return nil, fmt.Errorf("si likelihood: %w", err)
		}
	}
	if opts.ExactMaxDim == 0 {
		opts.ExactMaxDim = DefaultExactMaxDim
	}
	if opts.Probes == 0 {
		opts.Probes = 1
	}
	if opts.Probes < 0 {
		return nil, fmt.Errorf("si likelihood: probes %d, want > 0", opts.Probes)
	}
	exact := false
	switch opts.Divergence {
	case "", DivAuto:
		exact = d <= opts.ExactMaxDim
	case DivExact:
		exact = true
	case DivHutchinson:
	default:
		return nil, fmt.Errorf("si likelihood: divergence %q: want %s, %s or %s", opts.Divergence, DivAuto, DivExact, DivHutchinson)
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("si likelihood: workers %d, want >= 0 (0 = one per core)", opts.Workers)
	}
	chunk := opts.Chunk
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	n := len(x1) / d
	// Chunks run on the pool and leave X_0 and L(0) per sample; rho0 is
	// then read on this goroutine alone, so it need not be safe for
	// concurrent use.
	x0 := make([]float64, n*d)
	logDet := make([]float64, n)
	chunks := (n + chunk - 1) / chunk
	fields := forkFields(b, par.Size(opts.Workers, chunks))
	evals := make([]int, chunks)
	err := par.Do(ctx, len(fields), chunks, func(ctx context.Context, w, c int) error {
		lo := c * chunk
		jb, ok := fields[w].(JacobianField)
		if !ok {
			return fmt.Errorf("si likelihood: a fork of %T has no VJP", b)
		}
		var err error
		evals[c], err = likelihoodChunk(ctx, jb, x1, lo, min(lo+chunk, n), exact, opts, x0, logDet)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &LikelihoodResult{LogP: make([]float64, n)}
	for i := range res.LogP {
		res.LogP[i] = rho0.LogProb(x0[i*d:(i+1)*d]) + logDet[i]
	}
	for _, e := range evals {
		res.Evals = max(res.Evals, e)
	}
	return res, nil
}

// likelihoodChunk integrates samples lo..hi-1 back to t = 0, writing their
// X_0 into x0 and L(0) into logDet.
func likelihoodChunk(ctx context.Context, b JacobianField, x1 []float32, lo, hi int, exact bool, opts LikelihoodOptions, x0, logDet []float64) (int, error) {
	d := b.Dim()
	m := hi - lo
	div := newDivergence(b, m, exact, opts.Probes, opts.Seed, rng.PurposeProbe, uint64(opts.First+lo))
	// y = (x, L); dx/dt = b, dL/dt = div b. From L(1) = 0 backward, L(0) is
	// -int_0^1 div b dt.
	y := make([]float64, m*d+m)
	for i := 0; i < m*d; i++ {
		y[i] = float64(x1[lo*d+i])
	}
	evals := 0
	f := func(t float64, y, dy []float64) error {
		evals++
		return div.eval(t, y[:m*d], dy[:m*d], dy[m*d:])
	}
	if opts.Method == MethodDopri5 {
		dp, err := newDopri(m*d+m, opts.RTol, opts.ATol)
		if err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := dp.integrate(f, 1, 0, y, 0); err != nil {
			return 0, fmt.Errorf("si likelihood: %w", err)
		}
	} else {
		st, err := newStepper(opts.Method, m*d+m)
		if err != nil {
			return 0, err
		}
		h := -1 / float64(opts.Steps)
		for k := 0; k < opts.Steps; k++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			t := 1 + float64(k)*h
			if err := st.step(f, t, h, y); err != nil {
				return 0, fmt.Errorf("si likelihood: %w", err)
			}
		}
	}
	copy(x0[lo*d:hi*d], y[:m*d])
	copy(logDet[lo:hi], y[m*d:])
	return evals, nil
}

// divergence evaluates b and div b on a chunk of m samples.
type divergence struct {
	b         JacobianField
	m, d      int
	exact     bool
	probes    [][]float32 // Hutchinson: per probe, m*d Rademacher values
	t, x, v   []float32
	fout, vjp []float32
}

// newDivergence draws the Hutchinson probes of rows first..first+m-1 from
// the streams (seed, purpose, row, probe).
func newDivergence(b JacobianField, m int, exact bool, probes int, seed uint64, purpose rng.Purpose, first uint64) *divergence {
	d := b.Dim()
	dv := &divergence{
		b: b, m: m, d: d, exact: exact,
		t: make([]float32, m), x: make([]float32, m*d), v: make([]float32, m*d),
		fout: make([]float32, m*d), vjp: make([]float32, m*d),
	}
	if !exact {
		dv.probes = make([][]float32, probes)
		for p := range dv.probes {
			pr := make([]float32, m*d)
			for i := 0; i < m; i++ {
				s := rng.New(seed, purpose, first+uint64(i), uint64(p))
				for j := 0; j < d; j++ {
					pr[i*d+j] = float32(s.Rademacher())
				}
			}
			dv.probes[p] = pr
		}
	}
	return dv
}

func (dv *divergence) eval(t float64, x, dx, ddiv []float64) error {
	m, d := dv.m, dv.d
	for i := range dv.t {
		dv.t[i] = float32(t)
	}
	for i, v := range x {
		dv.x[i] = float32(v)
	}
	clear(ddiv)
	var calls int
	if dv.exact {
		calls = d
	} else {
		calls = len(dv.probes)
	}
	for c := 0; c < calls; c++ {
		if dv.exact {
			clear(dv.v)
			for i := 0; i < m; i++ {
				dv.v[i*d+c] = 1
			}
		} else {
			copy(dv.v, dv.probes[c])
		}
		if err := dv.b.VJP(dv.t, dv.x, dv.v, dv.fout, dv.vjp); err != nil {
			return fmt.Errorf("vjp at t=%.4g: %w", t, err)
		}
		for i := 0; i < m; i++ {
			if dv.exact {
				ddiv[i] += float64(dv.vjp[i*d+c])
				continue
			}
			var s float64
			for j := 0; j < d; j++ {
				s += float64(dv.vjp[i*d+j]) * float64(dv.v[i*d+j])
			}
			ddiv[i] += s / float64(calls)
		}
	}
	for i, v := range dv.fout {
		dx[i] = float64(v)
	}
	for _, v := range ddiv {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("divergence at t=%.4g is %v", t, v)
		}
	}
	return nil
}
