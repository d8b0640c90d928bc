package fixedsum

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestKernelsMatchTheGoLoops: the dispatched kernels (assembly where the
// CPU has it) give exactly the integers and maxima of the portable loops,
// at every length around the vector widths, with zeros of both signs,
// subnormals and the largest magnitudes a term may have.
func TestKernelsMatchTheGoLoops(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	specials := []float32{0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		1, -1, 0.5, -0.75, 1.5, 2.5, -2.5}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 64, 1000} {
		for trial := range 3 {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(60)-40)))
				if r.IntN(5) == 0 {
					x[i] = specials[r.IntN(len(specials))]
				}
			}
			m := maxAbsBitsGo(x)
			if got := maxAbsBits(x); got != m {
				t.Fatalf("n=%d trial %d: maxAbsBits %#x, Go loop %#x", n, trial, got, m)
			}
			k := 50
			if m > 0 {
				_, e := math.Frexp(float64(math.Float32frombits(uint32(m))))
				k = termBits - e
			}
			scale := math.Ldexp(1, k)
			want := make([]int64, n)
			got := make([]int64, n)
			for i := range want {
				want[i] = int64(r.Uint64() >> 2)
				got[i] = want[i]
			}
			accumulateGo(want, x, scale)
			accumulate(got, x, scale)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("n=%d trial %d element %d (%v): %d, Go loop %d", n, trial, i, x[i], got[i], want[i])
				}
			}
		}
	}
	// Halves round to even, as the Go loop's float64 add does.
	acc := make([]int64, 8)
	accumulate(acc, []float32{0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.25}, 1)
	if want := []int64{0, 2, 2, 0, -2, -2, 4, 0}; !equalInts(acc, want) {
		t.Errorf("halves rounded to %v, want %v", acc, want)
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
