package dsbm

import (
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/dataset"
)

// Distribution is a law to bridge: the data at t = 0 or the prior at t = 1.
type Distribution = dataset.Distribution

// PhaseID names one phase: IMF iteration n >= 1 and the drift trained in it.
type PhaseID = dsb.PhaseID

// Direction is the drift a network or phase is about.
type Direction = dsb.Direction

// The two drifts: Forward is v_f (t = 0 to 1), Backward v_b (t = 1 to 0).
const (
	Backward = dsb.Backward
	Forward  = dsb.Forward
)

// Coupling is the first coupling, the pairs backward phase 1 trains on.
type Coupling string

const (
	// CouplingRef pairs x0 ~ data with x1 = x0 + sigma Z: the reference
	// process's own coupling, so the first phase learns its time reversal.
	CouplingRef Coupling = "ref"
	// CouplingInd pairs independent draws x0 ~ data and x1 ~ prior.
	CouplingInd Coupling = "ind"
)

// DefaultEps clips training times to [Eps, 1-Eps], the public code's value:
// the targets' z terms sqrt(t/(1-t)) and sqrt((1-t)/t) diverge at the ends.
const DefaultEps = 1e-3

// Chain is everything about a run that the cache, the minibatches and the
// samplers depend on. A coordinator and every trainer must hold the same
// Chain.
type Chain struct {
	Dim int
	// Sigma is the reference Brownian motion's scale on [0, 1].
	Sigma float64
	// Eps clips the training times to [Eps, 1-Eps].
	Eps float64
	// Steps N of the Euler-Maruyama simulation of the cache (and of
	// sampling, by default), dt = 1/N.
	Steps int
	// First is the coupling of backward phase 1.
	First Coupling
	// Data is the law at t = 0, Prior at t = 1.
	Data, Prior Distribution
	Seed        uint64
	// CacheSize M endpoint pairs per cache generation, cut into Shards
	// virtual shards of M/S consecutive pairs.
	CacheSize int
	Shards    int
	// Batch B is the global minibatch: B/S samples from each shard.
	Batch int
	// Refresh R: step s uses cache generation s/R; 0 keeps generation 0 for
	// the whole phase.
	Refresh int
	// ScaledDrift makes the networks learn s(t) times the drift, with s(t)
	// = sqrt(t) for v_b and sqrt(1-t) for v_f, and divides it out wherever
	// the drift is used. The plain targets' noise, sigma sqrt((1-t)/t) z
	// for v_b, has a variance that grows as 1/t toward the data, so the
	// few small times dominate the loss and the net must output values of
	// order 1/sqrt(t); scaled, the noise is sigma sqrt(1-t) z at every t
	// and the output is of order one, as for a diffusion model's noise
	// prediction.
	ScaledDrift bool
	// DenoiseCache drops the noise of the cache simulation's last step,
	// as SampleOptions.Denoise does for samples: the Brownian bridge is
	// pinned at both ends, so that noise, sigma sqrt(1/N) a coordinate, is
	// the Euler step's error, and on an image end it is speckle the
	// clean data never has. A forward phase would learn its drift from
	// speckled backward samples and then, simulating the next backward
	// phase's pairs, start from clean data; a backward phase would train on
	// speckled sources and sample from clean ones.
	DenoiseCache bool
}

// Validate checks sizes and divisibility; errors name the field.
func (c *Chain) Validate() error {
	if c.Dim <= 0 {
		return fmt.Errorf("dim: must be positive, got %d", c.Dim)
	}
	if !(c.Sigma > 0) || math.IsInf(c.Sigma, 0) {
		return fmt.Errorf("sigma: must be positive and finite, got %v", c.Sigma)
	}
	if !(c.Eps > 0 && c.Eps < 0.5) {
		return fmt.Errorf("eps: must be in (0, 0.5), got %v", c.Eps)
	}
	if c.Steps <= 0 {
		return fmt.Errorf("steps: must be positive, got %d", c.Steps)
	}
	if c.First != CouplingRef && c.First != CouplingInd {
		return fmt.Errorf("first coupling: want %q or %q, got %q", CouplingRef, CouplingInd, c.First)
	}
	if c.Data == nil {
		return fmt.Errorf("data: no distribution")
	}
	if c.Prior == nil {
		return fmt.Errorf("prior: no distribution")
	}
	if d := c.Data.Dim(); d != c.Dim {
		return fmt.Errorf("data %s: dim %d, want %d", c.Data.Name(), d, c.Dim)
	}
	if d := c.Prior.Dim(); d != c.Dim {
		return fmt.Errorf("prior %s: dim %d, want %d", c.Prior.Name(), d, c.Dim)
	}
	if c.Shards <= 0 {
		return fmt.Errorf("shards: must be positive, got %d", c.Shards)
	}
	if c.CacheSize <= 0 || c.CacheSize%c.Shards != 0 {
		return fmt.Errorf("cache size: must be a positive multiple of shards (%d), got %d", c.Shards, c.CacheSize)
	}
	if c.Batch <= 0 || c.Batch%c.Shards != 0 {
		return fmt.Errorf("batch: must be a positive multiple of shards (%d), got %d", c.Shards, c.Batch)
	}
	if c.Refresh < 0 {
		return fmt.Errorf("refresh: must be >= 0 steps, got %d", c.Refresh)
	}
	return nil
}

// PerShard is the number of pairs in one shard.
func (c *Chain) PerShard() int { return c.CacheSize / c.Shards }

// GenForStep is the cache generation that step s of a phase samples from.
func (c *Chain) GenForStep(step int) uint64 {
	if c.Refresh == 0 {
		return 0
	}
	return uint64(step / c.Refresh)
}

// BridgePoint writes the Brownian-bridge point between x0 and x1 at time t
// with noise z into xt, and the regression target of the drift dir there
// into target:
//
//	x_t = (1-t) x0 + t x1 + sigma sqrt(t(1-t)) z
//	forward:  (x1 - x0) - sigma sqrt(t/(1-t)) z = (x1 - x_t)/(1-t)
//	backward: (x0 - x1) - sigma sqrt((1-t)/t) z = (x0 - x_t)/t
//
// t must be in (0, 1); all slices have the same length.
func BridgePoint(dir Direction, sigma, t float64, x0, x1, z []float64, xt, target []float32) {
	s := sigma * math.Sqrt(t*(1-t))
	var a float64
	if dir == Forward {
		a = sigma * math.Sqrt(t/(1-t))
	} else {
		a = sigma * math.Sqrt((1-t)/t)
	}
	for i := range x0 {
		xt[i] = float32((1-t)*x0[i] + t*x1[i] + s*z[i])
		if dir == Forward {
			target[i] = float32(x1[i] - x0[i] - a*z[i])
		} else {
			target[i] = float32(x0[i] - x1[i] - a*z[i])
		}
	}
}

// DriftScale is s(t), the factor a ScaledDrift network carries: sqrt(t)
// for the backward drift, sqrt(1-t) for the forward one. It vanishes only
// at the time a drift is never evaluated at (t = 0 backward, t = 1
// forward).
func DriftScale(dir Direction, t float64) float64 {
	if dir == Forward {
		return math.Sqrt(1 - t)
	}
	return math.Sqrt(t)
}

// drift is the drift of direction dir that network m defines on this
// chain: m itself, or m's output divided by DriftScale under ScaledDrift.
func (c *Chain) drift(m Model, dir Direction) Model {
	if !c.ScaledDrift {
		return m
	}
	return scaledDrift{net: m, dir: dir}
}

// scaledDrift turns a ScaledDrift network into its drift.
type scaledDrift struct {
	net Model
	dir Direction
}

func (s scaledDrift) Forward(t, x, out []float32) error {
	if err := s.net.Forward(t, x, out); err != nil {
		return err
	}
	if len(t) == 0 {
		return nil
	}
	dim := len(out) / len(t)
	for r, tr := range t {
		inv := 1 / DriftScale(s.dir, float64(tr))
		row := out[r*dim : (r+1)*dim]
		for i, v := range row {
			row[i] = float32(float64(v) * inv)
		}
	}
	return nil
}

func validPhase(p PhaseID) error {
	if p.Iteration < 1 {
		return fmt.Errorf("phase iteration: must be >= 1, got %d", p.Iteration)
	}
	if p.Dir != Backward && p.Dir != Forward {
		return fmt.Errorf("phase direction: want backward or forward, got %d", int(p.Dir))
	}
	return nil
}

// Frozen is the network a phase simulates its cache with: none for backward
// phase 1 (the first coupling), the forward drift of iteration n-1 for
// backward phase n, the backward drift of iteration n for forward phase n.
// It returns ok = false for backward phase 1.
func Frozen(p PhaseID) (id PhaseID, ok bool) {
	if p.Dir == Forward {
		return PhaseID{Iteration: p.Iteration, Dir: Backward}, true
	}
	if p.Iteration == 1 {
		return PhaseID{}, false
	}
	return PhaseID{Iteration: p.Iteration - 1, Dir: Forward}, true
}
