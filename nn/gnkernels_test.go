package nn

import (
	"fmt"
	"math"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
)

// TestGNKernelsMatchGo holds the dispatched GroupNorm row kernels (the
// assembly where it runs) to their Go forms; fused multiply-adds may move
// the last bit only.
func TestGNKernelsMatchGo(t *testing.T) {
	s := rng.New(7, rng.PurposeInit, 0)
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(4*s.Float64() - 2)
		}
		return v
	}
	near := func(t *testing.T, what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			}
		}
	}
	equal := func(t *testing.T, what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s[%d] = %v, want %v exactly", what, i, got[i], want[i])
			}
		}
	}
	for _, c := range []int{8, 16, 32, 96, 6, 12} {
		for _, rows := range []int{1, 3, 32} {
			t.Run(fmt.Sprintf("c%d_rows%d", c, rows), func(t *testing.T) {
				a, b := vec(rows*c), vec(rows*c)
				p1, p2 := vec(c), vec(c)
				q1, q2 := append([]float32(nil), p1...), append([]float32(nil), p2...)
				gnSums(p1, p2, a, b, c, rows)
				gnSumsGo(q1, q2, a, b, c, rows)
				near(t, "sum", p1, q1)
				near(t, "sum of products", p2, q2)

				mu, sc, beta := vec(c), vec(c), vec(c)
				z, zg := make([]float32, rows*c), make([]float32, rows*c)
				gnAffine(z, a, mu, sc, beta, c, rows)
				gnAffineGo(zg, a, mu, sc, beta, c, rows)
				near(t, "affine", z, zg)

				k1, k2, k4 := vec(c), vec(c), vec(c)
				for _, add := range []bool{false, true} {
					dx := vec(rows * c)
					dg := append([]float32(nil), dx...)
					gnBack(dx, a, b, k1, k2, mu, k4, c, rows, add)
					gnBackGo(dg, a, b, k1, k2, mu, k4, c, rows, add)
					near(t, fmt.Sprintf("back(add=%v)", add), dx, dg)
				}

				// The sums add in the same order as the Go forms: same bits.
				d1 := vec(c)
				d2 := append([]float32(nil), d1...)
				colSumRows(d1, a, c, rows)
				colSumRowsGo(d2, a, c, rows)
				equal(t, "column sums", d1, d2)
				r1 := append([]float32(nil), a...)
				r2 := append([]float32(nil), a...)
				addRows(r1, beta, c, rows)
				addRowsGo(r2, beta, c, rows)
				equal(t, "row adds", r1, r2)
			})
		}
	}
}
