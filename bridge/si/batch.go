package si

import (
	"fmt"

	"github.com/sbtrain/sbtrain/rng"
)

// DefaultTMin is the default clipping of training times to [TMin, 1-TMin].
// With the sqrt gamma the target's g'(t) z term has variance ~ 1/(4t) near
// t = 0 (and symmetrically near 1), so the loss has a log-divergent variance
// on U[0,1]; clipping removes it and costs nothing measurable: the velocity
// itself is finite at the ends, and a network queried at t < TMin or
// t > 1-TMin extrapolates over a sliver of width TMin.
const DefaultTMin = 1e-3

// BatchSource builds the training pairs of one SI phase. Sample i of step s
// draws its t, x0, x1 and z from streams keyed by (seed, purpose, phase, s, j)
// where j is the pair index (j = i/2 with antithetic pairs, j = i without):
// any worker can build any range [from, to) of a step's global batch and gets
// exactly what a single process would.
type BatchSource struct {
	Path       Path
	Rho0, Rho1 Distribution // Rho0 is ignored for one-sided paths (x0 ~ N(0, I)) and the mirror
	Seed       uint64
	Phase      uint64
	// Antithetic pairs samples 2j and 2j+1: same t, x0, x1, opposite z.
	// A worker range may split a pair; that changes nothing. Without noise
	// (g = 0) there is no z to flip and the flag has no effect.
	Antithetic bool
	TMin       float64 // times are U[TMin, 1-TMin]
}

// Validate checks the source can build batches.
func (s *BatchSource) Validate() error {
	if s.Path.name == "" {
		return fmt.Errorf("si batch: path is not set")
	}
	if s.Rho1 == nil {
		return fmt.Errorf("si batch: rho1 is not set")
	}
	if !s.Path.OneSided() && !s.Path.Mirror() {
		if s.Rho0 == nil {
			return fmt.Errorf("si batch: rho0 is not set (only one-sided paths draw x0 from N(0, I) themselves)")
		}
		if s.Rho0.Dim() != s.Rho1.Dim() {
			return fmt.Errorf("si batch: rho0 %q has dimension %d, rho1 %q has %d", s.Rho0.Name(), s.Rho0.Dim(), s.Rho1.Name(), s.Rho1.Dim())
		}
	}
	if !(s.TMin >= 0 && s.TMin < 0.5) {
		return fmt.Errorf("si batch: tmin %v, want 0 <= tmin < 0.5", s.TMin)
	}
	if s.Path.gamma == GammaSqrt && s.TMin == 0 {
		return fmt.Errorf("si batch: the sqrt gamma needs tmin > 0 (g' diverges at t = 0 and 1)")
	}
	return nil
}

// Dim is the dimension of the samples.
func (s *BatchSource) Dim() int { return s.Rho1.Dim() }

// Batch holds samples [From, To) of a step's global batch, row-major.
type Batch struct {
	From, To int
	Dim      int
	T        []float32 // times, len N
	X        []float32 // x_t, len N*Dim
	Velocity []float32 // velocity target a' x0 + b' x1 + g' z
	V        []float32 // target of v in the pair (v, s): a' x0 + b' x1
	Noise    []float32 // denoiser target z
	Score    []float32 // score target -z/g (0 where g = 0)
}

// N is the number of samples in the batch.
func (b *Batch) N() int { return b.To - b.From }

func (b *Batch) resize(from, to, dim int) {
	n := to - from
	b.From, b.To, b.Dim = from, to, dim
	b.T = grow(b.T, n)
	b.X = grow(b.X, n*dim)
	b.Velocity = grow(b.Velocity, n*dim)
	b.Noise = grow(b.Noise, n*dim)
	b.V = grow(b.V, n*dim)
	b.Score = grow(b.Score, n*dim)
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// Fill builds samples [from, to) of step into dst, reusing its buffers.
func (s *BatchSource) Fill(step uint64, from, to int, dst *Batch) error {
	if from < 0 || to < from {
		return fmt.Errorf("si batch: bad sample range [%d, %d)", from, to)
	}
	d := s.Dim()
	dst.resize(from, to, d)
	x0 := make([]float64, d)
	x1 := make([]float64, d)
	z := make([]float64, d)
	lastPair := -1
	var c Coefs
	var t float64
	antithetic := s.Antithetic && s.Path.HasNoise()
	for i := from; i < to; i++ {
		pair, sign := i, 1.0
		if antithetic {
			pair = i / 2
			if i%2 == 1 {
				sign = -1
			}
		}
		if pair != lastPair {
			t, c = s.drawPair(step, uint64(pair), x0, x1, z)
			lastPair = pair
		}
		k := i - from
		dst.T[k] = float32(t)
		for j := 0; j < d; j++ {
			zj := sign * z[j]
			dst.X[k*d+j] = float32(c.A*x0[j] + c.B*x1[j] + c.G*zj)
			v := c.DA*x0[j] + c.DB*x1[j]
			dst.V[k*d+j] = float32(v)
			var sc float64
			if c.G != 0 {
				v += c.DG * zj
				sc = -zj / c.G
			}
			dst.Velocity[k*d+j] = float32(v)
			dst.Noise[k*d+j] = float32(zj)
			dst.Score[k*d+j] = float32(sc)
		}
	}
	return nil
}

// drawPair draws the shared part of pair j of step.
func (s *BatchSource) drawPair(step, pair uint64, x0, x1, z []float64) (float64, Coefs) {
	ts := rng.New(s.Seed, rng.PurposeTime, s.Phase, step, pair)
	t := s.TMin + (1-2*s.TMin)*ts.Float64()
	s0 := rng.New(s.Seed, rng.PurposeData, s.Phase, step, pair, 0)
	switch {
	case s.Path.OneSided():
		for j := range x0 {
			x0[j] = s0.Norm()
		}
	case s.Path.Mirror():
		clear(x0) // a = 0: x0 never enters
	default:
		s.Rho0.Sample(&s0, x0)
	}
	s1 := rng.New(s.Seed, rng.PurposeData, s.Phase, step, pair, 1)
	s.Rho1.Sample(&s1, x1)
	zs := rng.New(s.Seed, rng.PurposeNoise, s.Phase, step, pair)
	for j := range z {
		z[j] = zs.Norm()
	}
	return t, s.Path.At(t)
}
