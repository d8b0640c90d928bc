package nn

import (
	"fmt"
	"math"
)

// CosineRate is lr decayed by a half cosine from lr at step 0 to 0 at step
// steps, and 0 after: a pure function of the step, so a resumed run needs
// no schedule state. steps <= 0 means no decay.
func CosineRate(lr float64, step, steps int64) float64 {
	if steps <= 0 {
		return lr
	}
	frac := math.Min(float64(step)/float64(steps), 1)
	return lr * (1 + math.Cos(math.Pi*frac)) / 2
}

// Adam is PyTorch's torch.optim.Adam (no weight decay, no amsgrad) over a
// flat parameter arena. The update is computed in float64 per element and
// in a fixed order, so replicas given the same gradients stay bit-identical.
type Adam struct {
	LR, Beta1, Beta2, Eps float64
	M, V                  []float32 // first and second moment estimates
	T                     int64     // steps taken so far
}

// NewAdam returns an Adam for n parameters with PyTorch's defaults
// (betas 0.9, 0.999, eps 1e-8).
func NewAdam(n int, lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, M: make([]float32, n), V: make([]float32, n)}
}

// Step applies one update: with t = T+1,
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
// It panics if the slice lengths differ from len(M): that is a programming
// error, not bad input.
func (a *Adam) Step(params, grads []float32) {
	if len(params) != len(a.M) || len(grads) != len(a.M) || len(a.V) != len(a.M) {
		panic(fmt.Sprintf("nn: Adam.Step: len(params)=%d len(grads)=%d, optimiser holds M %d, V %d",
			len(params), len(grads), len(a.M), len(a.V)))
	}
	a.T++
	b1, b2 := a.Beta1, a.Beta2
	bc1 := 1 - math.Pow(b1, float64(a.T))
	bc2 := 1 - math.Pow(b2, float64(a.T))
	c := adamCoef{b1: b1, c1: 1 - b1, b2: b2, c2: 1 - b2, stepSize: a.LR / bc1, sqrtBC2: math.Sqrt(bc2), eps: a.Eps}
	adamVec(params, grads[:len(params)], a.M[:len(params)], a.V[:len(params)], c)
}

// EMA keeps an exponential moving average of a parameter arena.
type EMA struct {
	Decay  float64
	Shadow []float32
}

// NewEMA returns an EMA whose shadow starts as a copy of params.
func NewEMA(params []float32, decay float64) *EMA {
	return &EMA{Decay: decay, Shadow: append([]float32(nil), params...)}
}

// Update sets shadow = decay*shadow + (1-decay)*params. It panics if the
// lengths differ (a programming error).
func (e *EMA) Update(params []float32) {
	if len(params) != len(e.Shadow) {
		panic(fmt.Sprintf("nn: EMA.Update: len(params)=%d, shadow holds %d", len(params), len(e.Shadow)))
	}
	d := e.Decay
	s := e.Shadow[:len(params)]
	for i, p := range params {
		s[i] = float32(d*float64(s[i]) + (1-d)*float64(p))
	}
}

// ClipGradNorm scales grads in place so that their Euclidean norm is at
// most maxNorm, with torch.nn.utils.clip_grad_norm_'s rule: multiply by
// maxNorm/(norm+1e-6) when that is below 1. It returns the norm before
// clipping (computed in float64), and does nothing to grads if
// maxNorm <= 0.
func ClipGradNorm(grads []float32, maxNorm float64) (normBefore float64) {
	var sum float64
	for _, g := range grads {
		sum += float64(g) * float64(g)
	}
	norm := math.Sqrt(sum)
	if maxNorm <= 0 {
		return norm
	}
	coef := maxNorm / (norm + 1e-6)
	if coef < 1 {
		c := float32(coef)
		for i := range grads {
			grads[i] *= c
		}
	}
	return norm
}
