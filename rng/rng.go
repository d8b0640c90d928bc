// Package rng owns the counter-based random streams that make training
// independent of worker count: the numbers for an item are a pure function of
// (seed, purpose, ids...), so any process that owns the item draws the same
// values, in any order, without sharing or saving generator state.
package rng

import (
	"math"
	"math/bits"
)

// Purpose separates stream families so that, say, data samples and
// mean-matching noise with equal ids never share numbers.
type Purpose uint64

const (
	PurposeInit    Purpose = iota + 1 // network initialisation
	PurposeData                       // training draws from a distribution
	PurposeHeldOut                    // evaluation draws, disjoint from training
	PurposeNoise                      // diffusion / interpolant noise
	PurposeTime                       // random times (SI)
	PurposeBatch                      // minibatch indices into a cache
	PurposeProbe                      // Hutchinson probe vectors
	PurposeSample                     // generation at sampling time
	PurposeBench                      // benchmarks and tests
)

// Stream is a value type: copying it forks the stream.
type Stream struct {
	key      uint64
	ctr      uint64
	spare    float64
	hasSpare bool
}

// New returns the stream keyed by (seed, purpose, ids...).
func New(seed uint64, purpose Purpose, ids ...uint64) Stream {
	return NewKey(seed, purpose, ids...).Stream()
}

// Sub derives an independent child stream, e.g. one per sample index.
func (s Stream) Sub(ids ...uint64) Stream {
	k := s.key
	for _, id := range ids {
		k = mix(k ^ mix(id+0x082EFA98EC4E6C89))
	}
	return Stream{key: k}
}

// Uint64 returns the next value: a hash of (key, counter).
func (s *Stream) Uint64() uint64 {
	s.ctr++
	return mix(s.key + s.ctr*0x9E3779B97F4A7C15)
}

// Float64 is uniform on [0, 1).
func (s *Stream) Float64() float64 {
	return float64(s.Uint64()>>11) * (1.0 / (1 << 53))
}

// Intn is uniform on [0, n); n must be positive.
func (s *Stream) Intn(n int) int {
	hi, _ := bits.Mul64(s.Uint64(), uint64(n))
	return int(hi)
}

// Norm is a standard normal (Box-Muller; the second value is kept).
func (s *Stream) Norm() float64 {
	if s.hasSpare {
		s.hasSpare = false
		return s.spare
	}
	u1 := 1 - s.Float64() // (0, 1], so the log is finite
	u2 := s.Float64()
	r := math.Sqrt(-2 * math.Log(u1))
	sin, cos := math.Sincos(2 * math.Pi * u2)
	s.spare, s.hasSpare = r*sin, true
	return r * cos
}

// Rademacher is +1 or -1 with equal probability.
func (s *Stream) Rademacher() float64 {
	if s.Uint64()&1 == 0 {
		return -1
	}
	return 1
}

// mix is the SplitMix64 finaliser: a bijection with full avalanche.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}
