package fixedsum

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
)

// rings makes an in-memory ring of n members.
func rings(t testing.TB, n int) []*allreduce.Ring {
	t.Helper()
	mem := allreduce.NewMemNetwork()
	members := make([]allreduce.Member, n)
	eps := make([]*allreduce.Endpoint, n)
	for i := range n {
		ep, err := allreduce.Listen(mem, "", time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		eps[i], members[i] = ep, allreduce.Member{ID: fmt.Sprintf("m%d", i), Addr: ep.Addr()}
	}
	out := make([]*allreduce.Ring, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out[i], errs[i] = allreduce.NewRing(context.Background(), allreduce.Config{Run: "fixedsum", Rank: i,
				Members: members, Generation: 1, Deadline: 5 * time.Second, Endpoint: eps[i]})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		t.Cleanup(func() { r.Close() })
	}
	return out
}

// randomTerms are terms with values over many orders of magnitude and
// both signs, the kind whose float32 sum depends on the order.
func randomTerms(seed uint64, k, n int) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([][]float32, k)
	for i := range out {
		out[i] = make([]float32, n)
		for j := range out[i] {
			out[i][j] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-8)))
		}
	}
	return out
}

// reduceSplit sums terms over a ring of n replicas, term i held by
// owner(i), and returns every replica's result.
func reduceSplit(t *testing.T, terms [][]float32, starts []int, n int, owner func(i int) int) [][]float32 {
	t.Helper()
	sums := make([]*Sum, n)
	for r := range sums {
		s, err := New(len(terms[0]), starts, len(terms))
		if err != nil {
			t.Fatal(err)
		}
		sums[r] = s
	}
	for i, term := range terms {
		copy(sums[owner(i)].Terms(1)[0], term)
	}
	out := make([][]float32, n)
	if n == 1 {
		res, err := sums[0].Reduce(context.Background(), Alone{})
		if err != nil {
			t.Fatal(err)
		}
		return [][]float32{append([]float32(nil), res...)}
	}
	rs := rings(t, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			res, err := sums[r].Reduce(context.Background(), rs[r])
			out[r], errs[r] = append([]float32(nil), res...), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSameBitsAtAnySplit(t *testing.T) {
	const k, n = 16, 1000
	terms := randomTerms(1, k, n)
	starts := []int{0, 10, 500, 999}
	ref := reduceSplit(t, terms, starts, 1, func(int) int { return 0 })[0]
	for _, tc := range []struct {
		name  string
		n     int
		owner func(i int) int
	}{
		{"2 halves", 2, func(i int) int { return i * 2 / k }},
		{"2 interleaved", 2, func(i int) int { return i % 2 }},
		{"3 uneven", 3, func(i int) int { return []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 1, 0}[i] }},
		{"8 pairs", 8, func(i int) int { return i / 2 }},
		{"8 shuffled", 8, func(i int) int { return (i*5 + 3) % 8 }},
		{"4, one empty", 4, func(i int) int { return i % 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := reduceSplit(t, terms, starts, tc.n, tc.owner)
			for r, g := range got {
				for j := range g {
					if math.Float32bits(g[j]) != math.Float32bits(ref[j]) {
						t.Fatalf("replica %d element %d: %v, one replica gives %v", r, j, g[j], ref[j])
					}
				}
			}
		})
	}
}

// TestAccuracy: the fixed-point sum is within float32 rounding of the
// float64 sum for every element within 2^24 of its block's largest term,
// and the order of summing in float32 is not: the reason for all this.
func TestAccuracy(t *testing.T) {
	const k, n = 16, 4000
	terms := randomTerms(2, k, n)
	got := reduceSplit(t, terms, []int{0, 2000}, 1, func(int) int { return 0 })[0]
	for b, blk := range [][2]int{{0, 2000}, {2000, n}} {
		var m float64
		for _, term := range terms {
			for _, v := range term[blk[0]:blk[1]] {
				m = max(m, math.Abs(float64(v)))
			}
		}
		for j := blk[0]; j < blk[1]; j++ {
			var exact, abs float64
			for _, term := range terms {
				exact += float64(term[j])
				abs += math.Abs(float64(term[j]))
			}
			if abs < m*0x1p-24 {
				continue
			}
			// float32 rounding of the result, plus k units of 2^-k.
			tol := math.Abs(exact)*0x1p-24 + m*0x1p-50
			if d := math.Abs(float64(got[j]) - exact); d > tol {
				t.Fatalf("block %d element %d: %v, float64 sum %v, |diff| %g > %g", b, j, got[j], exact, d, tol)
			}
		}
	}
}

func TestZeroInfNaN(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	terms := [][]float32{
		{0, 0, 1, inf, 5, 1},
		{0, 0, 2, 1, -nan, 2},
		{0, 0, 3, 1, 1, float32(math.MaxFloat32)},
		{0, 0, -6, 1, 1, float32(math.MaxFloat32)},
	}
	// blocks: zeros | 1+2+3-6 | Inf | NaN | two MaxFloat32 (overflow)
	got := reduceSplit(t, terms, []int{0, 2, 3, 4, 5}, 2, func(i int) int { return i % 2 })[0]
	if got[0] != 0 || got[1] != 0 || math.Signbit(float64(got[0])) {
		t.Errorf("zero block sums to %v, want +0", got[:2])
	}
	if got[2] != 0 {
		t.Errorf("1+2+3-6 = %v, want exactly 0", got[2])
	}
	if !math.IsNaN(float64(got[3])) || !math.IsNaN(float64(got[4])) {
		t.Errorf("blocks with Inf and NaN sum to %v, %v; want NaN so that a norm check fails", got[3], got[4])
	}
	if !math.IsInf(float64(got[5]), 1) {
		t.Errorf("2 x MaxFloat32 + 2 + 1 = %v, want +Inf (float32 overflow, as the float32 sum)", got[5])
	}
}

func TestNewNamesTheBadArgument(t *testing.T) {
	for _, tc := range []struct {
		n      int
		starts []int
		terms  int
		want   string
	}{
		{-1, nil, 1, "length"},
		{10, nil, 0, "terms"},
		{10, []int{1}, 1, "first must be 0"},
		{10, []int{0, 5, 5}, 1, "ascending"},
		{10, []int{0, 10}, 1, "ascending"},
	} {
		_, err := New(tc.n, tc.starts, tc.terms)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New(%d, %v, %d) = %v, want an error about %q", tc.n, tc.starts, tc.terms, err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// BenchmarkReduceAlone is the fixed-point cost on one replica: 8 terms
// of 2^18 values (the max pass, the conversion and adds, the conversion
// back), against adding the same terms in float32.
func BenchmarkReduceAlone(b *testing.B) {
	const k, n = 8, 1 << 18
	terms := randomTerms(3, k, n)
	b.Run("fixed", func(b *testing.B) {
		s, _ := New(n, Starts(n, 1024, 0), k)
		for i, t := range s.Terms(k) {
			copy(t, terms[i])
		}
		b.SetBytes(int64(4 * k * n))
		for b.Loop() {
			if _, err := s.Reduce(context.Background(), Alone{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("float32", func(b *testing.B) {
		acc := make([]float32, n)
		b.SetBytes(int64(4 * k * n))
		for b.Loop() {
			copy(acc, terms[0])
			for _, t := range terms[1:] {
				for j, v := range t {
					acc[j] += v
				}
			}
		}
	})
}
