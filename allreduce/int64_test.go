package allreduce

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
)

func randomInt64s(seed uint64, n, l int) [][]int64 {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([][]int64, n)
	for i := range out {
		out[i] = make([]int64, l)
		for j := range out[i] {
			// Full-range values, so sums wrap: the result must still be
			// Go's wrapping sum, whatever order the ring adds in.
			out[i][j] = int64(r.Uint64())
		}
	}
	return out
}

func testInt64Ops(t *testing.T, c *cluster, n, seg int) {
	rings := c.mustBuild(1, n, func(cfg *Config) { cfg.SegmentBytes = seg })
	for _, l := range lengthsFor(n) {
		for _, op := range []string{"sum", "max"} {
			inputs := randomInt64s(uint64(l)*31+uint64(len(op)), n, l)
			want := append([]int64(nil), inputs[0]...)
			for i := 1; i < n; i++ {
				for j, v := range inputs[i] {
					if op == "sum" {
						want[j] += v
					} else {
						want[j] = max(want[j], v)
					}
				}
			}
			got := make([][]int64, n)
			for i := range got {
				got[i] = append([]int64(nil), inputs[i]...)
			}
			errs := parallel(rings, func(rank int, r *Ring) error {
				if op == "sum" {
					return r.AllReduceSumInt64(context.Background(), got[rank])
				}
				return r.AllReduceMaxInt64(context.Background(), got[rank])
			})
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("N=%d L=%d %s: %v", n, l, op, err)
			}
			for i := range got {
				for j := range got[i] {
					if got[i][j] != want[j] {
						t.Fatalf("N=%d L=%d %s: member %d element %d is %d, want %d", n, l, op, i, j, got[i][j], want[j])
					}
				}
			}
			if st := rings[0].LastStats(); n > 1 && l >= n {
				want := float64(2*(n-1)) * float64(8*l) / float64(n)
				if op == "max" && 8*l <= rings[0].segBytes {
					want = float64((n - 1) * 8 * l) // gathered in N-1 steps
				}
				if d := math.Abs(float64(st.BytesSent) - want); d > float64(16*n) {
					t.Errorf("N=%d L=%d %s: member 0 sent %d bytes, want about 2(N-1)/N·8L = %.0f", n, l, op, st.BytesSent, want)
				}
			}
		}
	}
}

func TestInt64OpsMemory(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 8} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			// 1 KiB + 4 bytes: a segment size that is not a multiple of 8
			// must still carry whole int64s.
			testInt64Ops(t, newMemCluster(t, n), n, 1028)
		})
	}
}

func TestInt64OpsTCP(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			testInt64Ops(t, newTCPCluster(t, n), n, 0)
		})
	}
}

// TestInt64SumOrderFree: the same terms split differently among members
// (and summed locally first) give identical sums, which float32 does not
// promise.
func TestInt64SumOrderFree(t *testing.T) {
	const terms, l = 12, 257
	all := randomInt64s(99, terms, l)
	var ref []int64
	for _, n := range []int{1, 2, 3, 4} {
		c := newMemCluster(t, n)
		rings := c.mustBuild(1, n, nil)
		local := make([][]int64, n)
		for i := range local {
			local[i] = make([]int64, l)
		}
		for k, term := range all {
			owner := (k*7 + n) % n // a different assignment for every n
			for j, v := range term {
				local[owner][j] += v
			}
		}
		if err := errors.Join(parallel(rings, func(rank int, r *Ring) error {
			return r.AllReduceSumInt64(context.Background(), local[rank])
		})...); err != nil {
			t.Fatal(err)
		}
		if ref == nil {
			ref = local[0]
			continue
		}
		for j := range ref {
			if local[0][j] != ref[j] {
				t.Fatalf("N=%d: element %d is %d, with one member %d", n, j, local[0][j], ref[j])
			}
		}
	}
}

// TestInt64OpsMismatch: members running different collectives, or the
// same with different element types, fail with a mismatch naming the
// operations rather than mixing their bytes.
func TestInt64OpsMismatch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, theirs string
		op1          func(r *Ring) error
	}{
		{"float32 vs int64 sum", "all-reduce", func(r *Ring) error { return r.AllReduceSum(ctx, make([]float32, 20)) }},
		{"max vs sum", "int64 max", func(r *Ring) error { return r.AllReduceMaxInt64(ctx, make([]int64, 10)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newMemCluster(t, 2)
			rings := c.mustBuild(1, 2, func(cfg *Config) { cfg.Deadline = testDeadline })
			errs := parallel(rings, func(rank int, r *Ring) error {
				if rank == 0 {
					return tc.op1(r)
				}
				return r.AllReduceSumInt64(ctx, make([]int64, 10))
			})
			// Either member may see the difference first; both must
			// fail with a mismatch that names both operations.
			for i, err := range errs {
				if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.theirs) || !strings.Contains(err.Error(), "int64 sum") {
					t.Errorf("member %d: want a mismatch naming %q and %q, got %v", i, tc.theirs, "int64 sum", err)
				}
			}
		})
	}
}

// BenchmarkAllReduceInt64 is BenchmarkAllReduce for the int64 sum; it
// reports busbw (bytes a link carries per second, 2(N-1)/N of the
// buffer), comparable across N and with the float32 ring's.
func BenchmarkAllReduceInt64(b *testing.B) {
	for _, kind := range []string{"float32", "int64"} {
		for _, n := range []int{2, 4} {
			const l = 1 << 20
			b.Run(fmt.Sprintf("%s/tcp/N=%d/L=%d", kind, n, l), func(b *testing.B) {
				c := newTCPCluster(b, n)
				rings := c.mustBuild(1, n, nil)
				f := make([][]float32, n)
				v := make([][]int64, n)
				size := 4
				for i := range n {
					f[i], v[i] = make([]float32, l), make([]int64, l)
				}
				if kind == "int64" {
					size = 8
				}
				b.ResetTimer()
				for range b.N {
					if err := errors.Join(parallel(rings, func(rank int, r *Ring) error {
						if kind == "int64" {
							return r.AllReduceSumInt64(context.Background(), v[rank])
						}
						return r.AllReduceSum(context.Background(), f[rank])
					})...); err != nil {
						b.Fatal(err)
					}
				}
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(2*(n-1))/float64(n)*float64(size*l)/sec/1e9, "busGB/s")
				b.ReportMetric(float64(l)/sec/1e6, "Melem/s")
			})
		}
	}
}

// TestInt64MaxSilentMember: a member that never enters the max exchange
// is blamed within the deadline (plus a trip of the abort), on both its
// paths: the one-segment gather and the all-reduce.
func TestInt64MaxSilentMember(t *testing.T) {
	for _, l := range []int{28, 1 << 16} {
		t.Run(fmt.Sprint("L=", l), func(t *testing.T) {
			c := newMemCluster(t, 3)
			rings := c.mustBuild(1, 3, func(cfg *Config) { cfg.Deadline = testDeadline; cfg.SegmentBytes = 4096 })
			start := time.Now()
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i := range 2 {
				wg.Go(func() { errs[i] = rings[i].AllReduceMaxInt64(context.Background(), make([]int64, l)) })
			}
			wg.Wait()
			if d := time.Since(start); d > 3*testDeadline {
				t.Errorf("the survivors gave up after %v, want within about 2x the deadline %v", d, testDeadline)
			}
			for _, err := range errs {
				wantPeerError(t, err, 2, nil)
			}
		})
	}
}
