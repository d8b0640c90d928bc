package si

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// DefaultLikelihoodPaths is the number K of reverse paths per point of the
// SDE likelihood.
const DefaultLikelihoodPaths = 64

// sdeLikelihoodStream separates the SDE likelihood's path noise from the
// sampler's under PurposeSample.
const sdeLikelihoodStream = 0x5de11c

// SDELikelihoodOptions configure SDELogLikelihood.
type SDELikelihoodOptions struct {
	Method      string  // sde (Euler-Maruyama, the default) or sde-heun
	Steps       int     // fixed steps on [0, 1]
	Eps         float64 // the model's diffusion, as in SampleOptions
	EpsSchedule string
	ScoreTMin   float64
	Paths       int    // K paths per point; 0 means DefaultLikelihoodPaths
	Divergence  string // auto (default), exact or hutchinson, for div b and div s
	Probes      int
	ExactMaxDim int
	// Seed keys the paths: path k of point i at step j draws from
	// (Seed, PurposeSample, sdeLikelihoodStream, First+i, k, j), and its
	// Hutchinson probes from (Seed, PurposeProbe, (First+i) K + k, p).
	Seed  uint64
	First int
	Chunk int // rows (point, path) per network call; 0 means DefaultChunk
	// Workers bounds the goroutines; the result is the same bytes for any value.
	Workers int
}

// SDELogLikelihood estimates log rho1(x) of the forward-SDE model
// dX = b_F dt + sqrt(2 eps(t)) dW, b_F = b + eps(t) s, started from rho0.
// The model density solves the Fokker-Planck equation
// d_t rho + div(b_F rho) = eps Lap rho; read backward in time from t = 1 it
// is a Kolmogorov equation, and Feynman-Kac along paths of the reverse SDE
// dY = b_B dt + sqrt(2 eps) dW-bar, b_B = b - eps s, from Y_1 = x down to
// t = 0 (each step Y -= b_B h, plus sqrt(2 eps h) xi), reweighted by
// Girsanov from the b_F paths Feynman-Kac runs on, gives
//
//	rho(1, x) = E[ rho0(Y_0) exp(-int_0^1 (div b_F + eps |s|^2) dt - int_0^1 sqrt(2 eps) s . dW-bar) ].
//
// For any s this is the model's density; when s is the exact score the
// weight is the same on every path (log rho(t, Y_t) changes by exactly the
// exponent), so the variance is only the discretisation's. The expectation
// is the mean over K paths: LogP is the log of that mean and StdErr its
// delta-method Monte Carlo standard error, sd(w)/(sqrt(K) mean(w)) of the
// path weights w. With eps = 0 the paths are the probability-flow ODE and
// the estimate is LogLikelihood's with Euler (or Heun) steps. score must be
// the score s itself (an [EtaScore] reads a denoiser).
func SDELogLikelihood(ctx context.Context, p Path, b, score JacobianField, rho0 LogDensity, x1 []float32, opts SDELikelihoodOptions) (*LikelihoodResult, error) {
	d := b.Dim()
	if d <= 0 || len(x1)%d != 0 {
		return nil, fmt.Errorf("si sde likelihood: %d values is not a multiple of dimension %d", len(x1), d)
	}
	if rho0 == nil {
		return nil, fmt.Errorf("si sde likelihood: rho0 needs a log density")
	}
	if opts.Steps <= 0 {
		return nil, fmt.Errorf("si sde likelihood: steps %d, want > 0", opts.Steps)
	}
	switch opts.Method {
	case "":
		opts.Method = MethodSDE
	case MethodSDE, MethodSDEHeun:
	default:
		return nil, fmt.Errorf("si sde likelihood: method %q: want %s or %s", opts.Method, MethodSDE, MethodSDEHeun)
	}
	sched, err := NewEpsSchedule(opts.EpsSchedule, opts.Eps, p, opts.ScoreTMin)
	if err != nil {
		return nil, fmt.Errorf("si sde likelihood: %w", err)
	}
	if !sched.Zero() {
		if score == nil {
			return nil, fmt.Errorf("si sde likelihood: eps %v needs the score", opts.Eps)
		}
		if score.Dim() != d {
			return nil, fmt.Errorf("si sde likelihood: the score has dimension %d, b has %d", score.Dim(), d)
		}
	}
	if opts.Paths == 0 {
		opts.Paths = DefaultLikelihoodPaths
	}
	if opts.Paths < 2 {
		return nil, fmt.Errorf("si sde likelihood: paths %d, want >= 2 for a standard error", opts.Paths)
	}
	if opts.ExactMaxDim == 0 {
		opts.ExactMaxDim = DefaultExactMaxDim
	}
	if opts.Probes == 0 {
		opts.Probes = 1
	}
	if opts.Probes < 0 {
		return nil, fmt.Errorf("si sde likelihood: probes %d, want > 0", opts.Probes)
	}
	exact := false
	switch opts.Divergence {
	case "", DivAuto:
		exact = d <= opts.ExactMaxDim
	case DivExact:
		exact = true
	case DivHutchinson:
	default:
		return nil, fmt.Errorf("si sde likelihood: divergence %q: want %s, %s or %s", opts.Divergence, DivAuto, DivExact, DivHutchinson)
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("si sde likelihood: workers %d, want >= 0 (0 = one per core)", opts.Workers)
	}
	chunk := opts.Chunk
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	// A chunk holds whole points, all K paths of each.
	per := max(1, chunk/opts.Paths)
	n := len(x1) / d
	k := opts.Paths
	y0 := make([]float64, n*k*d)
	logDet := make([]float64, n*k)
	chunks := (n + per - 1) / per
	bs := forkFields(b, par.Size(opts.Workers, chunks))
	var ss []Field
	if !sched.Zero() {
		if ss = forkFields(score, len(bs)); len(ss) < len(bs) {
			bs = bs[:len(ss)]
		}
	}
	evals := make([]int, chunks)
	err = par.Do(ctx, len(bs), chunks, func(ctx context.Context, w, c int) error {
		lo := c * per
		jb, ok := bs[w].(JacobianField)
		if !ok {
			return fmt.Errorf("si sde likelihood: a fork of %T has no VJP", b)
		}
		var js JacobianField
		if ss != nil {
			if js, ok = ss[w].(JacobianField); !ok {
				return fmt.Errorf("si sde likelihood: a fork of %T has no VJP", score)
			}
		}
		var err error
		evals[c], err = sdeLikelihoodChunk(ctx, sched, jb, js, x1, lo, min(lo+per, n), exact, opts, y0, logDet)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &LikelihoodResult{LogP: make([]float64, n), StdErr: make([]float64, n)}
	lw := make([]float64, k)
	for i := 0; i < n; i++ {
		for j := range lw {
			r := i*k + j
			lw[j] = rho0.LogProb(y0[r*d:(r+1)*d]) - logDet[r]
		}
		res.LogP[i], res.StdErr[i] = logMeanExp(lw)
	}
	for _, e := range evals {
		res.Evals = max(res.Evals, e)
	}
	return res, nil
}

// logMeanExp returns log mean(exp(lw)) and the delta-method standard error
// of that log, sd(w)/(sqrt(K) mean(w)), computed relative to the largest
// weight so that neither overflows.
func logMeanExp(lw []float64) (float64, float64) {
	top := math.Inf(-1)
	for _, v := range lw {
		top = math.Max(top, v)
	}
	if math.IsInf(top, -1) {
		return top, math.Inf(1)
	}
	var s, s2 float64
	for _, v := range lw {
		w := math.Exp(v - top)
		s += w
		s2 += w * w
	}
	k := float64(len(lw))
	mean := s / k
	variance := math.Max(0, (s2/k-mean*mean)*k/(k-1))
	return top + math.Log(mean), math.Sqrt(variance/k) / mean
}

// CrossEntropy is the mean of -log rho-hat over points drawn from rho1 and
// its standard error over those points: the paper's cross-entropy of the
// model against the data.
func CrossEntropy(logp []float64) (mean, stdErr float64, err error) {
	n := len(logp)
	if n < 2 {
		return 0, 0, fmt.Errorf("cross-entropy of %d points: want at least 2", n)
	}
	for _, v := range logp {
		mean -= v / float64(n)
	}
	var ss float64
	for _, v := range logp {
		ss += (-v - mean) * (-v - mean)
	}
	return mean, math.Sqrt(ss / float64(n-1) / float64(n)), nil
}

// sdeLikelihoodChunk runs the K paths of points lo..hi-1 back to t = 0,
// writing each path's Y_0 and int_0^1 div b_F dt.
func sdeLikelihoodChunk(ctx context.Context, sched EpsSchedule, b, score JacobianField, x1 []float32, lo, hi int, exact bool, opts SDELikelihoodOptions, y0, logDet []float64) (int, error) {
	d, k := b.Dim(), opts.Paths
	m := (hi - lo) * k
	first := uint64((opts.First + lo) * k)
	divB := newDivergence(b, m, exact, opts.Probes, opts.Seed, rng.PurposeProbe, first)
	var divS *divergence
	if score != nil {
		// The score's probes are their own streams: a sum of two traces
		// with shared probes would still be unbiased, but independent ones
		// keep the two estimators separate.
		divS = newDivergence(score, m, exact, opts.Probes, opts.Seed^0x5c0e, rng.PurposeProbe, first)
	}
	y := make([]float64, m*d)
	for r := 0; r < m; r++ {
		i := lo + r/k
		for j := 0; j < d; j++ {
			y[r*d+j] = float64(x1[i*d+j])
		}
	}
	acc := make([]float64, m)
	drift, drift2 := make([]float64, m*d), make([]float64, m*d)
	div1, div2 := make([]float64, m), make([]float64, m)
	sb, sb2, sdiv := make([]float64, m*d), make([]float64, m*d), make([]float64, m)
	yt, noise := make([]float64, m*d), make([]float64, m*d)
	evals := 0
	heun := opts.Method == MethodSDEHeun
	// f writes the reverse drift b_B = b - eps s into out, the score into
	// sOut (0 where eps = 0) and the weight's rate into rate. Euler-Maruyama
	// reads the stochastic integral at each step's start (Ito), so its rate
	// is div b_F + eps |s|^2 = div b + eps (div s + |s|^2). Heun averages the
	// score over the step (Stratonovich), whose mean exceeds Ito's by
	// int eps div s dt: that term leaves the rate, and the trapezoid
	// carries the rest to second order in the drift.
	f := func(t float64, y, out, rate, sOut []float64) error {
		evals++
		if err := divB.eval(t, y, out, rate); err != nil {
			return fmt.Errorf("si sde likelihood: velocity: %w", err)
		}
		e := sched.At(t)
		if e == 0 {
			clear(sOut)
			return nil
		}
		if err := divS.eval(t, y, sOut, sdiv); err != nil {
			return fmt.Errorf("si sde likelihood: score: %w", err)
		}
		for q := range out {
			out[q] -= e * sOut[q]
		}
		for r := range rate {
			var s2 float64
			for j := r * d; j < (r+1)*d; j++ {
				s2 += sOut[j] * sOut[j]
			}
			if heun {
				rate[r] += e * s2
			} else {
				rate[r] += e * (sdiv[r] + s2)
			}
		}
		return nil
	}
	// martingale adds int sqrt(2 eps) s . dW-bar over the step: the noise
	// increment against the score at the step's start (Ito) or the mean of
	// its two ends (Stratonovich, sb2 non-nil).
	martingale := func(sb, sb2 []float64) {
		for r := range acc {
			var v float64
			for j := r * d; j < (r+1)*d; j++ {
				sj := sb[j]
				if sb2 != nil {
					sj = (sj + sb2[j]) / 2
				}
				v += sj * noise[j]
			}
			acc[r] += v
		}
	}
	keys := make([]rng.Key, m)
	base := rng.NewKey(opts.Seed, rng.PurposeSample, sdeLikelihoodStream)
	for r := range keys {
		keys[r] = base.With(uint64(opts.First + lo + r/k)).With(uint64(r % k))
	}
	h := 1 / float64(opts.Steps)
	for step := 0; step < opts.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t := 1 - float64(step)*h
		if err := f(t, y, drift, div1, sb); err != nil {
			return 0, err
		}
		e := sched.At(t)
		if heun {
			e2 := sched.At(t - h)
			if e+e2 > 0 {
				fillNoise(keys, step, d, math.Sqrt((e+e2)*h), noise)
			} else {
				clear(noise)
			}
			for q := range y {
				yt[q] = y[q] - drift[q]*h + noise[q]
			}
			if err := f(t-h, yt, drift2, div2, sb2); err != nil {
				return 0, err
			}
			if e+e2 > 0 {
				martingale(sb, sb2)
			}
			for q := range y {
				y[q] += -(drift[q]+drift2[q])/2*h + noise[q]
			}
			for r := range acc {
				acc[r] += (div1[r] + div2[r]) / 2 * h
			}
			continue
		}
		if e > 0 {
			fillNoise(keys, step, d, math.Sqrt(2*e*h), noise)
		} else {
			clear(noise)
		}
		if e > 0 {
			martingale(sb, nil)
		}
		for q := range y {
			y[q] += -drift[q]*h + noise[q]
		}
		for r := range acc {
			acc[r] += div1[r] * h
		}
	}
	row := lo * k
	copy(y0[row*d:(row+m)*d], y)
	copy(logDet[row:row+m], acc)
	return evals, nil
}
