package si

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// LearnedInterpolant is the parametric family the max-min objective
// optimises:
//
//	I_theta(t, x0, x1, z) = (1-t) x0 + t x1 + sqrt(t(1-t)) L(t) z,  L(t) = L0 + t L1,
//
// with d x d matrices L0, L1 (row-major). The learned part vanishes at
// t = 0 and t = 1, so I keeps its endpoints. For Gaussian endpoints
// N(0, I) -> N(m, S) the family holds the optimal transport: with
// L L^T = 2 S^{1/2} the marginals are those of the OT map
// ((1-t) I + t S^{1/2}) x0 + t m and the velocity is its, so the transport
// cost int E|b|^2 dt reaches W2^2.
type LearnedInterpolant struct {
	D      int
	L0, L1 []float64
}

// NewLearnedInterpolant starts at L0 = init I, L1 = 0. init = 0 is the
// linear interpolant, a stationary point of the cost (it depends on L L^T),
// so the optimiser needs init != 0.
func NewLearnedInterpolant(d int, init float64) *LearnedInterpolant {
	li := &LearnedInterpolant{D: d, L0: make([]float64, d*d), L1: make([]float64, d*d)}
	for i := 0; i < d; i++ {
		li.L0[i*d+i] = init
	}
	return li
}

// lAt returns L(t) and dL/dt = L1 into l.
func (li *LearnedInterpolant) lAt(t float64, l []float64) {
	for i := range l {
		l[i] = li.L0[i] + t*li.L1[i]
	}
}

// Cost is the exact transport cost int_0^1 E|b_theta(t, x_t)|^2 dt of the
// interpolant between independent Gaussian endpoints, b_theta being its
// exact velocity E[dI/dt | I = x] = mu' + C_t Sigma_t^{-1} (x - mu_t) with
// C_t = Cov(dI/dt, I); the integral is the midpoint rule on n nodes (the
// integrand is finite at both ends).
func (li *LearnedInterpolant) Cost(rho0, rho1 *Gaussian, n int) (float64, error) {
	d := li.D
	if rho0.Dim() != d || rho1.Dim() != d {
		return 0, fmt.Errorf("interpolant cost: dimension %d, endpoints %d and %d", d, rho0.Dim(), rho1.Dim())
	}
	if n <= 0 {
		return 0, fmt.Errorf("interpolant cost: %d nodes, want > 0", n)
	}
	var dm float64
	for i := 0; i < d; i++ {
		v := rho1.mean[i] - rho0.mean[i]
		dm += v * v
	}
	l := make([]float64, d*d)
	var total float64
	for k := 0; k < n; k++ {
		t := (float64(k) + 0.5) / float64(n)
		g2 := t * (1 - t)
		dg2 := 1 - 2*t // (g^2)'
		li.lAt(t, l)
		L := mat.NewDense(d, d, l)
		L1 := mat.NewDense(d, d, li.L1)
		var llt, l1lt mat.Dense
		llt.Mul(L, L.T())
		l1lt.Mul(L1, L.T())
		sigma := mat.NewSymDense(d, nil)
		c := mat.NewDense(d, d, nil)
		for i := 0; i < d; i++ {
			for j := 0; j < d; j++ {
				s := t*t*rho1.cov.At(i, j) + (1-t)*(1-t)*rho0.cov.At(i, j) + g2*llt.At(i, j)
				if j >= i {
					sigma.SetSym(i, j, s)
				}
				// Cov(I', I) with I' = -x0 + x1 + (g' L + g L1) z:
				// -(1-t) S0 + t S1 + g g' L L^T + g^2 L1 L^T.
				c.Set(i, j, -(1-t)*rho0.cov.At(i, j)+t*rho1.cov.At(i, j)+dg2/2*llt.At(i, j)+g2*l1lt.At(i, j))
			}
		}
		var ch mat.Cholesky
		if !ch.Factorize(sigma) {
			return 0, fmt.Errorf("interpolant cost at t=%v: Sigma_t is not positive definite", t)
		}
		var x mat.Dense // Sigma^{-1} C^T
		if err := ch.SolveTo(&x, c.T()); err != nil {
			return 0, fmt.Errorf("interpolant cost at t=%v: %w", t, err)
		}
		var q mat.Dense
		q.Mul(c, &x)
		total += (dm + mat.Trace(&q)) / float64(n)
	}
	return total, nil
}

// W2Squared is the closed-form squared Wasserstein-2 distance between
// Gaussians: |m1 - m0|^2 + tr(S0 + S1 - 2 (S0^{1/2} S1 S0^{1/2})^{1/2}).
func W2Squared(rho0, rho1 *Gaussian) (float64, error) {
	d := rho0.Dim()
	if rho1.Dim() != d {
		return 0, fmt.Errorf("w2: dimensions %d and %d", d, rho1.Dim())
	}
	var dm float64
	for i := 0; i < d; i++ {
		v := rho1.mean[i] - rho0.mean[i]
		dm += v * v
	}
	r0, err := symSqrt(rho0.cov)
	if err != nil {
		return 0, err
	}
	var m mat.Dense
	m.Mul(r0, rho1.cov)
	m.Mul(&m, r0)
	ms := mat.NewSymDense(d, nil)
	for i := 0; i < d; i++ {
		for j := i; j < d; j++ {
			ms.SetSym(i, j, (m.At(i, j)+m.At(j, i))/2)
		}
	}
	cross, err := symSqrt(ms)
	if err != nil {
		return 0, err
	}
	return dm + mat.Trace(rho0.cov) + mat.Trace(rho1.cov) - 2*mat.Trace(cross), nil
}

func symSqrt(s mat.Symmetric) (*mat.Dense, error) {
	var e mat.EigenSym
	if !e.Factorize(s, true) {
		return nil, fmt.Errorf("w2: eigendecomposition failed")
	}
	vals := e.Values(nil)
	var v mat.Dense
	e.VectorsTo(&v)
	d := len(vals)
	out := mat.NewDense(d, d, nil)
	for i := 0; i < d; i++ {
		for j := 0; j < d; j++ {
			var acc float64
			for k := 0; k < d; k++ {
				acc += v.At(i, k) * math.Sqrt(math.Max(vals[k], 0)) * v.At(j, k)
			}
			out.Set(i, j, acc)
		}
	}
	return out, nil
}

// OptimizeOptions configure OptimizeInterpolant.
type OptimizeOptions struct {
	Rho0, Rho1 Distribution
	Net        nn.Spec // the velocity b; Dim 0 means rho1's
	Batch      int
	Steps      int
	LR         float64 // Adam rate of b
	LRTheta    float64 // Adam rate of the interpolant; 0 means LR
	// InnerSteps is how many b steps precede each theta step (0 means 1):
	// the theta gradient is only as good as bhat's fit to b_theta. Both
	// rates decay as (1+cos(pi s/Steps))/2, so the end settles.
	InnerSteps int
	Init       float64 // L0 = Init I at the start; 0 means 0.5
	TMin       float64 // times U[TMin, 1-TMin]; 0 means 0.01
	Seed       uint64
	// ReportEvery steps the callback gets the step and the learned cost
	// estimate mean |bhat|^2 over the batch; 0 means 100.
	ReportEvery int
}

// OptimizeResult is the optimised interpolant and its velocity.
type OptimizeResult struct {
	Interpolant *LearnedInterpolant
	Velocity    *NetField
	// LearnedCost is mean |bhat(t, x_t)|^2 over the last ReportEvery
	// batches: the transport cost as the learned b sees it.
	LearnedCost float64
}

// OptimizeInterpolant solves the paper's max-min problem over the family
// LearnedInterpolant: b descends the velocity loss
// L(bhat, theta) = E[|bhat(t, x_t)|^2/2 - dI_theta/dt . bhat(t, x_t)] and
// theta ascends the same loss, one step each in turn. At the inner minimum
// L = -1/2 int E|b_theta|^2 dt, so the ascent in theta lowers the
// transport cost toward its minimum over the family. The theta gradient
// goes through x_t (a VJP of bhat against bhat - dI/dt) and through dI/dt.
func OptimizeInterpolant(ctx context.Context, opts OptimizeOptions, progress func(step int, learnedCost float64)) (*OptimizeResult, error) {
	if opts.Rho0 == nil || opts.Rho1 == nil {
		return nil, fmt.Errorf("optimize interpolant: rho0 and rho1 must be set")
	}
	d := opts.Rho1.Dim()
	if opts.Rho0.Dim() != d {
		return nil, fmt.Errorf("optimize interpolant: rho0 has dimension %d, rho1 %d", opts.Rho0.Dim(), d)
	}
	if opts.Net.Dim == 0 {
		opts.Net.Dim = d
	}
	if opts.Batch <= 0 || opts.Steps < 0 {
		return nil, fmt.Errorf("optimize interpolant: batch %d and steps %d, want > 0 and >= 0", opts.Batch, opts.Steps)
	}
	if !(opts.LR > 0) || math.IsInf(opts.LR, 0) {
		return nil, fmt.Errorf("optimize interpolant: lr %v, want a finite positive number", opts.LR)
	}
	if opts.LRTheta == 0 {
		opts.LRTheta = opts.LR
	}
	if opts.Init == 0 {
		opts.Init = 0.5
	}
	if opts.InnerSteps == 0 {
		opts.InnerSteps = 1
	}
	if opts.InnerSteps < 0 {
		return nil, fmt.Errorf("optimize interpolant: inner steps %d, want > 0", opts.InnerSteps)
	}
	if opts.TMin == 0 {
		opts.TMin = 0.01
	}
	if !(opts.TMin > 0 && opts.TMin < 0.5) {
		return nil, fmt.Errorf("optimize interpolant: tmin %v, want in (0, 0.5)", opts.TMin)
	}
	if opts.ReportEvery <= 0 {
		opts.ReportEvery = 100
	}
	net, err := nn.New(opts.Net, opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("optimize interpolant: velocity network: %w", err)
	}
	li := NewLearnedInterpolant(d, opts.Init)
	theta := make([]float32, 2*d*d)
	for i := 0; i < d*d; i++ {
		theta[i], theta[d*d+i] = float32(li.L0[i]), float32(li.L1[i])
	}
	adamB := nn.NewAdam(len(net.Params()), opts.LR)
	adamT := nn.NewAdam(len(theta), opts.LRTheta)
	n := opts.Batch
	tb := make([]float32, n)
	x0, x1, z := make([]float64, n*d), make([]float64, n*d), make([]float64, n*d)
	xt, target := make([]float32, n*d), make([]float32, n*d)
	out, v, vjp := make([]float32, n*d), make([]float32, n*d), make([]float32, n*d)
	gradT := make([]float32, len(theta))
	l := make([]float64, d*d)
	var costSum float64
	var costN int
	res := &OptimizeResult{Interpolant: li}
	for s := 0; s < opts.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("optimize interpolant stopped at step %d: %w", s, err)
		}
		for i := 0; i < d*d; i++ {
			li.L0[i], li.L1[i] = float64(theta[i]), float64(theta[d*d+i])
		}
		decay := (1 + math.Cos(math.Pi*float64(s)/float64(opts.Steps))) / 2
		adamB.LR, adamT.LR = opts.LR*decay, opts.LRTheta*decay
		for inner := 0; inner < opts.InnerSteps; inner++ {
			// Batch (s, inner): the last one also feeds the theta step.
			sub := uint64(s*opts.InnerSteps + inner)
			for i := 0; i < n; i++ {
				ts := rng.New(opts.Seed, rng.PurposeTime, 1<<32, sub, uint64(i))
				t := opts.TMin + (1-2*opts.TMin)*ts.Float64()
				tb[i] = float32(t)
				s0 := rng.New(opts.Seed, rng.PurposeData, 1<<32, sub, uint64(i), 0)
				opts.Rho0.Sample(&s0, x0[i*d:(i+1)*d])
				s1 := rng.New(opts.Seed, rng.PurposeData, 1<<32, sub, uint64(i), 1)
				opts.Rho1.Sample(&s1, x1[i*d:(i+1)*d])
				zs := rng.New(opts.Seed, rng.PurposeNoise, 1<<32, sub, uint64(i))
				for j := 0; j < d; j++ {
					z[i*d+j] = zs.Norm()
				}
				g := math.Sqrt(t * (1 - t))
				dg := (1 - 2*t) / (2 * g)
				li.lAt(t, l)
				for j := 0; j < d; j++ {
					var lz, l1z float64
					for k := 0; k < d; k++ {
						lz += l[j*d+k] * z[i*d+k]
						l1z += li.L1[j*d+k] * z[i*d+k]
					}
					q := i*d + j
					xt[q] = float32((1-t)*x0[q] + t*x1[q] + g*lz)
					target[q] = float32(x1[q] - x0[q] + dg*lz + g*l1z)
				}
			}
			// b descends: the MSE gradient is twice the SI loss's, and Adam
			// does not care about the factor.
			if _, err := net.LossGrad(tb, xt, target); err != nil {
				return nil, fmt.Errorf("optimize interpolant: velocity loss at step %d: %w", s, err)
			}
			adamB.Step(net.Params(), net.Grads())
		}
		// theta ascends: dL/dx_t = (bhat - I')^T J_bhat, dL/dI' = -bhat.
		if err := net.Forward(tb, xt, out); err != nil {
			return nil, err
		}
		for q := range v {
			v[q] = out[q] - target[q]
		}
		if err := net.VJP(tb, xt, v, out, vjp); err != nil {
			return nil, err
		}
		clear(gradT)
		var cost float64
		for i := 0; i < n; i++ {
			t := float64(tb[i])
			g := math.Sqrt(t * (1 - t))
			dg := (1 - 2*t) / (2 * g)
			for a := 0; a < d; a++ {
				u, bh := float64(vjp[i*d+a]), float64(out[i*d+a])
				cost += bh * bh / float64(n)
				for k := 0; k < d; k++ {
					zk := z[i*d+k]
					// L0[a][k] enters x_t as g z_k and I' as g' z_k;
					// L1[a][k] as t g z_k and (t g' + g) z_k.
					g0 := u*g*zk - bh*dg*zk
					g1 := u*t*g*zk - bh*(t*dg+g)*zk
					// Adam minimises: hand it minus the ascent direction.
					gradT[a*d+k] -= float32(g0 / float64(n))
					gradT[d*d+a*d+k] -= float32(g1 / float64(n))
				}
			}
		}
		adamT.Step(theta, gradT)
		costSum += cost
		costN++
		if (s+1)%opts.ReportEvery == 0 || s+1 == opts.Steps {
			res.LearnedCost = costSum / float64(costN)
			if progress != nil {
				progress(s+1, res.LearnedCost)
			}
			costSum, costN = 0, 0
		}
	}
	for i := 0; i < d*d; i++ {
		li.L0[i], li.L1[i] = float64(theta[i]), float64(theta[d*d+i])
	}
	res.Velocity = NewNetField(net)
	return res, nil
}
