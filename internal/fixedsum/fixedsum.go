// Package fixedsum owns the gradient reduction whose bits do not depend on
// who computes what. Every term (the contribution of one virtual shard) is
// computed on its own; the terms are summed in 64-bit fixed point, with a
// scale per block (one tensor, say) that every replica derives from the
// same number: the largest magnitude of any term in the block, agreed by
// an element-wise max over the replicas. Integer addition is associative,
// so the terms a replica holds can be added up locally and the partial
// sums then added by a ring in any order: 1 replica owning every shard and
// 8 replicas owning one or two each end with the same int64s, and so with
// the same float32 sum.
//
// The scale leaves room for the run's whole number of terms, so no sum can
// overflow: an element of magnitude x keeps the bits above
// 2^(e-62+ceil(log2 terms)), where 2^e bounds the block's largest
// magnitude: far more than float32's 24 for anything within 2^30 of the
// largest. A block holding an Inf or NaN sums to NaN, so a caller that
// checks the norm fails as it would on float32 sums.
//
// Cost, measured on a loaded 2-core machine (minimum of 400 interleaved
// steps; the experiment package's BenchmarkStepDefault and
// BenchmarkStepMLP256): one process's step of the embedded default config
// (dsb2d, 26,498 parameters, 8 shards of 64 rows) took 1.01 ms summed
// whole in float32 and 1.32 ms shard by shard in fixed point with
// OpenBLAS, of which 0.23 ms are the smaller matrix products of 64-row
// shards and about 0.08 ms the conversions (AVX2: 0.25 ns a value, the
// max pass 0.06 ns); an MLP 256x256 step (68,869 parameters) went from
// 2.10 to 3.08 ms; with the pure-Go BLAS the two were the same within
// noise. On the wire each value is 8 bytes instead of 4, plus a max
// exchange of 8 bytes per block of 1024 in N-1 steps: a 2-member ring
// over loopback TCP moved 212,224 bytes a step instead of 106,000 and
// took about twice as long.
package fixedsum

import (
	"context"
	"fmt"
	"math"
	"math/bits"
)

// Collective is what the reduction needs of the replicas: element-wise
// max and sum of int64 vectors, the same on every replica afterwards.
// *allreduce.Ring satisfies it.
type Collective interface {
	AllReduceMaxInt64(ctx context.Context, buf []int64) error
	AllReduceSumInt64(ctx context.Context, buf []int64) error
}

// Alone is the collective of a replica that holds every term.
type Alone struct{}

// AllReduceMaxInt64 leaves buf as it is.
func (Alone) AllReduceMaxInt64(context.Context, []int64) error { return nil }

// AllReduceSumInt64 leaves buf as it is.
func (Alone) AllReduceSumInt64(context.Context, []int64) error { return nil }

// headroom is the bit the sums stay below: 2^62 leaves the sign and a
// spare bit, so a rounding up of every term cannot reach 2^63 either.
// termBits bounds one term's integers, for the conversion (see magic):
// 50 bits under the block's largest magnitude, twice float32's 24.
const (
	headroom = 62
	termBits = 50
)

// nonFinite is the smallest float32 magnitude bit pattern of Inf; NaNs
// are above it, so the agreed max says whether any term had either.
const nonFinite = 0x7f800000

// Sum reduces terms of n float32s. It is reused from step to step; it is
// not safe for concurrent use, except that distinct Term buffers may be
// filled by distinct goroutines.
type Sum struct {
	n      int
	blocks []int // block b is [blocks[b], blocks[b+1])
	bound  int   // ceil(log2 of the run's terms)
	terms  [][]float32
	used   int
	max    []int64
	acc    []int64
	out    []float32
}

// New makes a Sum of vectors of n values cut at the given block starts
// (ascending, the first 0; nil is one block), for a run whose replicas
// hold `terms` terms in all.
func New(n int, starts []int, terms int) (*Sum, error) {
	if n < 0 {
		return nil, fmt.Errorf("fixedsum: length %d, want >= 0", n)
	}
	if terms < 1 {
		return nil, fmt.Errorf("fixedsum: terms %d, want >= 1", terms)
	}
	if starts == nil {
		starts = []int{0}
	}
	if len(starts) == 0 || starts[0] != 0 {
		return nil, fmt.Errorf("fixedsum: block starts %v: the first must be 0", starts)
	}
	for i := 1; i < len(starts); i++ {
		if starts[i] <= starts[i-1] || starts[i] >= n {
			return nil, fmt.Errorf("fixedsum: block starts %v: start %d is %d, want ascending and below the length %d", starts, i, starts[i], n)
		}
	}
	blocks := append(append([]int(nil), starts...), n)
	return &Sum{n: n, blocks: blocks, bound: bits.Len(uint(terms - 1)),
		max: make([]int64, len(starts)), acc: make([]int64, n), out: make([]float32, n)}, nil
}

// Len is the length of a term.
func (s *Sum) Len() int { return s.n }

// Blocks is the number of blocks, the length of the max exchange.
func (s *Sum) Blocks() int { return len(s.max) }

// Reset forgets the terms of the previous reduction, keeping their buffers.
func (s *Sum) Reset() { s.used = 0 }

// Terms makes k more term buffers and returns them, in the order the caller
// fills them (the order does not change the sum). Their contents are
// whatever was left there: the caller writes every value.
func (s *Sum) Terms(k int) [][]float32 {
	for len(s.terms) < s.used+k {
		s.terms = append(s.terms, make([]float32, s.n))
	}
	t := s.terms[s.used : s.used+k]
	s.used += k
	return t
}

// Reduce sums this replica's terms with every other replica's over c: one
// max exchange of Blocks() int64s, then one sum of Len() int64s. Every
// replica gets the same bits, whatever the split of the terms. The result
// is reused by the next Reduce. A replica may hold no terms.
func (s *Sum) Reduce(ctx context.Context, c Collective) ([]float32, error) {
	terms := s.terms[:s.used]
	for b := range s.max {
		lo, hi := s.blocks[b], s.blocks[b+1]
		m := int64(0)
		for _, t := range terms {
			m = max(m, maxAbsBits(t[lo:hi]))
		}
		s.max[b] = m
	}
	if err := c.AllReduceMaxInt64(ctx, s.max); err != nil {
		return nil, fmt.Errorf("fixedsum: max exchange of %d blocks: %w", len(s.max), err)
	}
	clear(s.acc)
	for b, m := range s.max {
		lo, hi := s.blocks[b], s.blocks[b+1]
		if m == 0 || m >= nonFinite {
			continue
		}
		scale := math.Ldexp(1, s.exponent(m))
		acc := s.acc[lo:hi]
		for _, t := range terms {
			accumulate(acc, t[lo:hi], scale)
		}
	}
	if err := c.AllReduceSumInt64(ctx, s.acc); err != nil {
		return nil, fmt.Errorf("fixedsum: sum of %d values: %w", s.n, err)
	}
	for b, m := range s.max {
		lo, hi := s.blocks[b], s.blocks[b+1]
		out := s.out[lo:hi]
		switch {
		case m == 0:
			clear(out)
		case m >= nonFinite:
			nan := float32(math.NaN())
			for i := range out {
				out[i] = nan
			}
		default:
			inv := math.Ldexp(1, -s.exponent(m))
			for i, v := range s.acc[lo:hi] {
				out[i] = float32(float64(v) * inv)
			}
		}
	}
	return s.out, nil
}

// exponent is the k of the fixed-point unit 2^-k of a block whose agreed
// largest magnitude has float32 bits m (m < 2^e): every term becomes
// integers below 2^termBits, and below 2^(62-bound), so that the 2^bound
// terms of the run sum below 2^62.
func (s *Sum) exponent(m int64) int {
	_, e := math.Frexp(float64(math.Float32frombits(uint32(m))))
	return min(termBits, headroom-s.bound) - e
}

// maxAbsBitsGo is the largest |v| of t as float32 bits: for non-negative
// floats the bit patterns order as the values do, with Inf and NaN on top.
// It is the portable kernel and the reference of the assembly.
func maxAbsBitsGo(t []float32) int64 {
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+4 <= len(t); i += 4 {
		x := t[i : i+4 : i+4]
		m0 = max(m0, math.Float32bits(x[0])&0x7fffffff)
		m1 = max(m1, math.Float32bits(x[1])&0x7fffffff)
		m2 = max(m2, math.Float32bits(x[2])&0x7fffffff)
		m3 = max(m3, math.Float32bits(x[3])&0x7fffffff)
	}
	for ; i < len(t); i++ {
		m0 = max(m0, math.Float32bits(t[i])&0x7fffffff)
	}
	return int64(max(m0, m1, m2, m3))
}

// magic is 1.5·2^52: adding it to an x with |x| < 2^51 leaves a float64
// of exponent 52, whose mantissa is round-to-even(x) offset by 2^51, so
// subtracting the bit patterns gives that integer. It is the conversion
// without a float-to-int instruction; with the scaling by a power of two
// (exact) it is a function of the term alone, so a term adds the same
// integer wherever it is computed.
const magic = 0x1.8p52

// accumulateGo adds round(t*scale) to acc, with |t*scale| < 2^termBits.
// It is the portable kernel and the reference of the assembly, which
// makes the same IEEE operations (an exact product, a rounded add), so
// machines with and without AVX2 add the same integers.
func accumulateGo(acc []int64, t []float32, scale float64) {
	t = t[:len(acc)]
	mb := int64(math.Float64bits(magic))
	i := 0
	for ; i+4 <= len(acc); i += 4 {
		a, x := acc[i:i+4:i+4], t[i:i+4:i+4]
		a[0] += int64(math.Float64bits(float64(x[0])*scale+magic)) - mb
		a[1] += int64(math.Float64bits(float64(x[1])*scale+magic)) - mb
		a[2] += int64(math.Float64bits(float64(x[2])*scale+magic)) - mb
		a[3] += int64(math.Float64bits(float64(x[3])*scale+magic)) - mb
	}
	for ; i < len(acc); i++ {
		acc[i] += int64(math.Float64bits(float64(t[i])*scale+magic)) - mb
	}
}

// Starts cuts a vector of grad values followed by singles more into
// blocks: grad in runs of size (the last may be shorter), then each of
// the singles alone (a loss, whose scale should not be its gradient's).
func Starts(grad, size, singles int) []int {
	size = max(size, 1)
	var s []int
	for i := 0; i < grad; i += size {
		s = append(s, i)
	}
	for i := range singles {
		s = append(s, grad+i)
	}
	if len(s) == 0 {
		s = []int{0}
	}
	return s
}
