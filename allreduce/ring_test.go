package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	goleak.VerifyTestMain(m)
}

// cluster is a set of endpoints and the rings built on them.
type cluster struct {
	t     testing.TB
	eps   []*Endpoint
	rings []*Ring
	mem   *MemNetwork
}

func newMemCluster(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, mem: NewMemNetwork()}
	for range n {
		ep, err := Listen(c.mem, "", time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.eps = append(c.eps, ep)
	}
	t.Cleanup(c.close)
	return c
}

func newTCPCluster(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for range n {
		ep, err := Listen(TCP{}, "127.0.0.1:0", time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.eps = append(c.eps, ep)
	}
	t.Cleanup(c.close)
	return c
}

func (c *cluster) close() {
	for _, r := range c.rings {
		r.Close()
	}
	for _, ep := range c.eps {
		ep.Close()
	}
}

// build makes a ring of the endpoints at the given indices, in that order.
func (c *cluster) build(gen uint64, idx []int, tweak func(*Config)) ([]*Ring, error) {
	c.t.Helper()
	members := make([]Member, len(idx))
	for i, e := range idx {
		members[i] = Member{ID: fmt.Sprintf("m%d", e), Addr: c.eps[e].Addr()}
	}
	rings := make([]*Ring, len(idx))
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for i, e := range idx {
		cfg := Config{Run: "test", Rank: i, Members: members, Generation: gen, Deadline: 2 * time.Second, Endpoint: c.eps[e]}
		if tweak != nil {
			tweak(&cfg)
		}
		if cfg.SkewLimit == 0 {
			// The tests of silent members hold one out of an operation
			// with its ring open, alive: blamed after the skew limit.
			cfg.SkewLimit = cfg.Deadline
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rings[i], errs[i] = NewRing(context.Background(), cfg)
		}()
	}
	wg.Wait()
	for _, r := range rings {
		if r != nil {
			c.rings = append(c.rings, r)
		}
	}
	return rings, errors.Join(errs...)
}

func (c *cluster) mustBuild(gen uint64, n int, tweak func(*Config)) []*Ring {
	c.t.Helper()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	rings, err := c.build(gen, idx, tweak)
	if err != nil {
		c.t.Fatal(err)
	}
	return rings
}

// parallel runs f on every ring at once and returns the errors by rank.
func parallel(rings []*Ring, f func(rank int, r *Ring) error) []error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, r)
		}()
	}
	wg.Wait()
	return errs
}

func randomInputs(seed uint64, n, l int) [][]float32 {
	rnd := rand.New(rand.NewPCG(seed, uint64(n*1000003+l)))
	bufs := make([][]float32, n)
	for i := range bufs {
		bufs[i] = make([]float32, l)
		for j := range bufs[i] {
			// Signed values spread over about eight binades, so that
			// rounding in the float32 sums is exercised.
			u := rnd.Uint64()
			bufs[i][j] = float32(int32(u)>>8) * 0x1p-20 * float32(uint64(1)<<(u>>61))
		}
	}
	return bufs
}

// checkSum compares every member's result with a float64 sequential sum.
// Each element is a sum of n float32 terms in some order, so its error is
// at most (n-1)·eps32·Σ|x| (plus rounding of the float64 reference).
func checkSum(t *testing.T, inputs, got [][]float32) {
	t.Helper()
	n := len(inputs)
	for j := range got[0] {
		var exact, abs float64
		for i := range n {
			exact += float64(inputs[i][j])
			abs += math.Abs(float64(inputs[i][j]))
		}
		tol := float64(n)*0x1p-23*abs + 1e-30
		if d := math.Abs(float64(got[0][j]) - exact); d > tol {
			t.Fatalf("element %d: got %v, float64 sum %v, |diff| %g > tol %g", j, got[0][j], exact, d, tol)
		}
	}
	for i := 1; i < n; i++ {
		for j := range got[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(got[0][j]) {
				t.Fatalf("member %d element %d: %v, member 0 has %v (bitwise)", i, j, got[i][j], got[0][j])
			}
		}
	}
}

func lengthsFor(n int) []int {
	ls := []int{0, 1, n - 1, n + 1, 1009, 1 << 20}
	if n == 1 {
		ls[2] = 2
	}
	return ls
}

func testAllReduce(t *testing.T, c *cluster, n int, seg int) {
	rings := c.mustBuild(1, n, func(cfg *Config) { cfg.SegmentBytes = seg })
	for _, l := range lengthsFor(n) {
		inputs := randomInputs(uint64(l), n, l)
		got := make([][]float32, n)
		for i := range got {
			got[i] = append([]float32(nil), inputs[i]...)
		}
		errs := parallel(rings, func(rank int, r *Ring) error { return r.AllReduceSum(context.Background(), got[rank]) })
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("N=%d L=%d: %v", n, l, err)
		}
		checkSum(t, inputs, got)
		st := rings[0].LastStats()
		if n > 1 && l >= n {
			// Each member sends 2(N-1) chunks of about L/N elements.
			want := float64(2*(n-1)) * float64(4*l) / float64(n)
			if d := math.Abs(float64(st.BytesSent) - want); d > float64(8*n) {
				t.Errorf("N=%d L=%d: member 0 sent %d bytes, want about 2(N-1)/N·4L = %.0f", n, l, st.BytesSent, want)
			}
		}
	}
}

func TestAllReduceMemory(t *testing.T) {
	for n := 1; n <= 8; n++ {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			// 128 KiB segments cut the 1<<20-element chunks into several
			// segments each, so the pipelined path is exercised.
			testAllReduce(t, newMemCluster(t, n), n, 128<<10)
		})
	}
}

func TestAllReduceTCP(t *testing.T) {
	for n := 2; n <= 4; n++ {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			testAllReduce(t, newTCPCluster(t, n), n, 0)
		})
	}
}

func TestNaNAndInfPropagate(t *testing.T) {
	const n = 3
	c := newMemCluster(t, n)
	rings := c.mustBuild(1, n, nil)
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	// columns: NaN+x, +Inf+x, +Inf + -Inf, finite
	in := [][]float32{{nan, inf, inf, 1}, {1, 2, float32(math.Inf(-1)), 2}, {1, 2, 3, 3}}
	errs := parallel(rings, func(rank int, r *Ring) error { return r.AllReduceSum(context.Background(), in[rank]) })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for rank, b := range in {
		if !math.IsNaN(float64(b[0])) || !math.IsInf(float64(b[1]), 1) || !math.IsNaN(float64(b[2])) || b[3] != 6 {
			t.Errorf("member %d: got %v, want [NaN +Inf NaN 6]", rank, b)
		}
	}
}

func TestMeanBroadcastBarrier(t *testing.T) {
	const n = 4
	c := newMemCluster(t, n)
	rings := c.mustBuild(1, n, func(cfg *Config) { cfg.SegmentBytes = 1024 })
	ctx := context.Background()

	bufs := make([][]float32, n)
	for i := range bufs {
		bufs[i] = []float32{float32(i), float32(2 * i), 1}
	}
	if err := errors.Join(parallel(rings, func(rank int, r *Ring) error { return r.AllReduceMean(ctx, bufs[rank]) })...); err != nil {
		t.Fatal(err)
	}
	for rank, b := range bufs {
		if b[0] != 1.5 || b[1] != 3 || b[2] != 1 {
			t.Errorf("mean on member %d: %v, want [1.5 3 1]", rank, b)
		}
	}

	for root := range n {
		want := randomInputs(uint64(root), 1, 3000)[0]
		fb := make([][]float32, n)
		bb := make([][]byte, n)
		for i := range n {
			fb[i] = make([]float32, len(want))
			bb[i] = make([]byte, 5001)
			if i == root {
				copy(fb[i], want)
				for j := range bb[i] {
					bb[i][j] = byte(j*7 + root)
				}
			}
		}
		errs := parallel(rings, func(rank int, r *Ring) error {
			if err := r.Broadcast(ctx, root, fb[rank]); err != nil {
				return err
			}
			return r.BroadcastBytes(ctx, root, bb[rank])
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("root %d: %v", root, err)
		}
		for i := range n {
			for j := range want {
				if math.Float32bits(fb[i][j]) != math.Float32bits(want[j]) {
					t.Fatalf("broadcast from %d: member %d element %d = %v, want %v", root, i, j, fb[i][j], want[j])
				}
			}
			for j := range bb[i] {
				if bb[i][j] != byte(j*7+root) {
					t.Fatalf("byte broadcast from %d: member %d byte %d = %d", root, i, j, bb[i][j])
				}
			}
		}
	}

	// Barrier: nobody leaves before the last member enters.
	const late = 150 * time.Millisecond
	start := time.Now()
	var mu sync.Mutex
	var entered time.Time
	exits := make([]time.Time, n)
	errs := parallel(rings, func(rank int, r *Ring) error {
		if rank == 2 {
			time.Sleep(late)
			mu.Lock()
			entered = time.Now()
			mu.Unlock()
		}
		err := r.Barrier(ctx)
		exits[rank] = time.Now()
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for rank, e := range exits {
		if e.Before(entered) {
			t.Errorf("member %d left the barrier %v after start, before member 2 entered at %v", rank, e.Sub(start), entered.Sub(start))
		}
	}
}

func TestSingleMemberIsNoOp(t *testing.T) {
	r, err := NewRing(context.Background(), Config{Run: "solo", Members: []Member{{ID: "only"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := []float32{1, 2, 3}
	if err := r.AllReduceSum(context.Background(), buf); err != nil {
		t.Fatal(err)
	}
	if err := r.AllReduceMean(context.Background(), buf); err != nil {
		t.Fatal(err)
	}
	if err := r.Barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Broadcast(context.Background(), 0, buf); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 1 || buf[1] != 2 || buf[2] != 3 {
		t.Errorf("one-member ring changed the buffer: %v", buf)
	}
}

func TestConfigValidation(t *testing.T) {
	ep, err := Listen(NewMemNetwork(), "", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	two := []Member{{ID: "a", Addr: "x"}, {ID: "b", Addr: "y"}}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no members", Config{Endpoint: ep}},
		{"rank out of range", Config{Rank: 2, Members: two, Endpoint: ep}},
		{"negative rank", Config{Rank: -1, Members: two, Endpoint: ep}},
		{"duplicate ID", Config{Members: []Member{{ID: "a", Addr: "x"}, {ID: "a", Addr: "y"}}, Endpoint: ep}},
		{"empty ID", Config{Members: []Member{{ID: "", Addr: "x"}, {ID: "b", Addr: "y"}}, Endpoint: ep}},
		{"empty addr", Config{Members: []Member{{ID: "a", Addr: "x"}, {ID: "b"}}, Endpoint: ep}},
		{"no endpoint", Config{Members: two}},
		{"negative deadline", Config{Members: two, Endpoint: ep, Deadline: -1}},
		{"negative skew limit", Config{Members: two, Endpoint: ep, SkewLimit: -1}},
	}
	for _, tc := range cases {
		if _, err := NewRing(context.Background(), tc.cfg); err == nil {
			t.Errorf("%s: NewRing accepted %+v", tc.name, tc.cfg)
		}
	}
}

func TestFrameHeaderRoundTripAndCorruption(t *testing.T) {
	h := header{kind: kindData, op: opAllReduce, root: 3, generation: 7, seq: 9, step: 4, segment: 2, total: 1 << 40, offset: 12345, length: 4096, payloadCRC: 0xdeadbeef, aux: 5}
	var b [headerSize]byte
	h.encode(b[:])
	var g header
	if err := g.decode(b[:]); err != nil || g != h {
		t.Fatalf("round trip: %+v, %v; want %+v", g, err, h)
	}
	for i := range headerSize {
		c := b
		c[i] ^= 0x40
		if err := g.decode(c[:]); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMismatch) {
			t.Errorf("bit flip in header byte %d not detected: %v", i, err)
		}
	}
}

func goroutinesSettle(t *testing.T, base int) {
	t.Helper()
	for range 200 {
		if runtime.NumGoroutine() <= base {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines remain, %d before", runtime.NumGoroutine(), base)
}
