package allreduce

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const testDeadline = 400 * time.Millisecond

// runUntilFailure has every ring in rings run all-reduces of l elements
// until one fails, recording when each member's error came back.
func runUntilFailure(rings []*Ring, l int, skip map[int]bool) ([]error, []time.Time) {
	errs := make([]error, len(rings))
	at := make([]time.Time, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		if skip[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, l)
			for range 1000 {
				if err := r.AllReduceSum(context.Background(), buf); err != nil {
					errs[i], at[i] = err, time.Now()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errs, at
}

func wantPeerError(t *testing.T, err error, culprit int, reason error) {
	t.Helper()
	var pe *PeerError
	if !errors.As(err, &pe) {
		t.Fatalf("want *PeerError naming rank %d, got %T: %v", culprit, err, err)
	}
	if pe.Rank != culprit || pe.Member.ID == "" {
		t.Fatalf("error names rank %d (%q), want rank %d: %v", pe.Rank, pe.Member.ID, culprit, err)
	}
	if reason != nil && !errors.Is(err, reason) {
		t.Fatalf("error %v is not %v", err, reason)
	}
}

// TestKillMemberMidOperation: a member vanishes during all-reduces; every
// survivor reports it within 2x the deadline, and the survivors' ring of
// the next generation works.
func TestKillMemberMidOperation(t *testing.T) {
	for _, mode := range []string{"kill", "stall"} {
		t.Run(mode, func(t *testing.T) {
			base := runtime.NumGoroutine()
			const n, victim = 4, 2
			c := newMemCluster(t, n)
			if mode == "stall" {
				// The victim's outgoing link freezes after a few frames: a hung
				// process whose sockets stay open. Only the deadline can tell.
				c.mem.SetFault(c.eps[victim].Addr(), c.eps[(victim+1)%n].Addr(), Fault{Stall: 40})
			}
			rings := c.mustBuild(1, n, func(cfg *Config) { cfg.Deadline = testDeadline; cfg.SegmentBytes = 4096 })
			var killedAt time.Time
			var once sync.Once
			if mode == "kill" {
				go func() {
					time.Sleep(30 * time.Millisecond)
					once.Do(func() { killedAt = time.Now() })
					c.mem.Kill(c.eps[victim].Addr())
				}()
			}
			victimDone := make(chan struct{})
			if mode == "stall" {
				// A hung member never returns on its own; Close frees it below.
				go func() {
					defer close(victimDone)
					runUntilFailure(rings[victim:victim+1], 1<<16, nil)
				}()
			} else {
				close(victimDone)
			}
			errs, at := runUntilFailure(rings, 1<<16, map[int]bool{victim: mode == "stall"})
			if mode == "stall" {
				// The stalled member sends nothing after its 40th frame; measure
				// from the last moment anything could have left it.
				killedAt = earliest(at).Add(-testDeadline)
			}
			for i, err := range errs {
				if i == victim {
					continue
				}
				reason := ErrDisconnected
				if mode == "stall" {
					reason = ErrTimeout
				}
				wantPeerError(t, err, victim, nil)
				if i == (victim+1)%n {
					wantPeerError(t, err, victim, reason)
				}
				if d := at[i].Sub(killedAt); d > 2*testDeadline {
					t.Errorf("member %d got its error %v after the failure, over 2x the deadline %v", i, d, testDeadline)
				}
			}
			rings[victim].Close()
			<-victimDone
			// The survivors' error is sticky.
			if err := rings[0].Barrier(context.Background()); err == nil {
				t.Error("a broken ring accepted another operation")
			}
			for i, r := range rings {
				if i != victim {
					r.Close()
				}
			}

			survivors := []int{0, 1, 3}
			next, err := c.build(2, survivors, func(cfg *Config) { cfg.Deadline = testDeadline })
			if err != nil {
				t.Fatalf("ring of survivors at generation 2: %v", err)
			}
			in := randomInputs(7, len(next), 1000)
			got := make([][]float32, len(next))
			for i := range got {
				got[i] = append([]float32(nil), in[i]...)
			}
			if err := errors.Join(parallel(next, func(rank int, r *Ring) error { return r.AllReduceSum(context.Background(), got[rank]) })...); err != nil {
				t.Fatalf("generation 2: %v", err)
			}
			checkSum(t, in, got)
			c.close()
			c.rings, c.eps = nil, nil
			goroutinesSettle(t, base)
		})
	}
}

func earliest(ts []time.Time) time.Time {
	var e time.Time
	for _, t := range ts {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

// TestLinkFaults: one faulty link, each kind of fault; the member after it
// names the member before it with the matching reason, the rest learn the
// same culprit from the abort, and no member returns success.
func TestLinkFaults(t *testing.T) {
	cases := []struct {
		fault  Fault
		reason error
	}{
		{Fault{Drop: 3}, ErrLost},
		{Fault{Corrupt: 3}, ErrCorrupt},
		{Fault{Truncate: 3}, ErrCorrupt},
		{Fault{Cut: 3}, ErrDisconnected},
		{Fault{Stall: 3}, ErrTimeout},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%+v", tc.fault), func(t *testing.T) {
			const n, from = 3, 1
			c := newMemCluster(t, n)
			c.mem.SetFault(c.eps[from].Addr(), c.eps[from+1].Addr(), tc.fault)
			rings := c.mustBuild(1, n, func(cfg *Config) { cfg.Deadline = testDeadline; cfg.SegmentBytes = 1024; cfg.PayloadChecksum = true })
			start := time.Now()
			errs, _ := runUntilFailure(rings, 4096, nil)
			if d := time.Since(start); d > 2*testDeadline+time.Second {
				t.Errorf("failure took %v to surface", d)
			}
			wantPeerError(t, errs[from+1], from, tc.reason)
			wantPeerError(t, errs[0], from, nil)
		})
	}
}

// TestDelayedLinkStillCompletes: delay alone is not a failure when it stays
// under the deadline; heartbeats keep the downstream members waiting.
func TestDelayedLinkStillCompletes(t *testing.T) {
	const n = 3
	c := newMemCluster(t, n)
	c.mem.SetFault(c.eps[0].Addr(), c.eps[1].Addr(), Fault{Delay: 30 * time.Millisecond})
	rings := c.mustBuild(1, n, func(cfg *Config) { cfg.Deadline = 200 * time.Millisecond; cfg.SegmentBytes = 1024 })
	in := randomInputs(3, n, 3000) // 3 frames per step on the slow link, 4 steps: ~360ms > deadline
	got := make([][]float32, n)
	for i := range got {
		got[i] = append([]float32(nil), in[i]...)
	}
	if err := errors.Join(parallel(rings, func(rank int, r *Ring) error { return r.AllReduceSum(context.Background(), got[rank]) })...); err != nil {
		t.Fatal(err)
	}
	checkSum(t, in, got)
}

// TestLateMemberWithinSkewLimit: a member that is alive but enters an
// all-reduce several deadlines after the others (it was busy with local
// work, as when members simulate unequal shares of a cache) is waited for,
// on both transports, and the sum is right; one later than the skew limit
// is blamed, and every survivor hears of it within the limit plus a
// deadline.
func TestLateMemberWithinSkewLimit(t *testing.T) {
	const n, deadline, skew = 3, 200 * time.Millisecond, 1500 * time.Millisecond
	clusters := []struct {
		name string
		make func(testing.TB, int) *cluster
	}{{"memory", newMemCluster}, {"tcp", newTCPCluster}}
	for _, cl := range clusters {
		t.Run(cl.name, func(t *testing.T) {
			c := cl.make(t, n)
			rings := c.mustBuild(1, n, func(cfg *Config) { cfg.Deadline = deadline; cfg.SkewLimit = skew; cfg.SegmentBytes = 4096 })
			for _, late := range []time.Duration{4 * deadline, 0, 2 * skew} {
				in := randomInputs(uint64(late), n, 5000)
				got := make([][]float32, n)
				for i := range got {
					got[i] = append([]float32(nil), in[i]...)
				}
				start := time.Now()
				took := make([]time.Duration, n)
				errs := parallel(rings, func(rank int, r *Ring) error {
					if rank == 1 {
						time.Sleep(late)
					}
					err := r.AllReduceSum(context.Background(), got[rank])
					took[rank] = time.Since(start)
					return err
				})
				if late < skew {
					if err := errors.Join(errs...); err != nil {
						t.Fatalf("member 1 %v late, within the skew limit %v: %v", late, skew, err)
					}
					checkSum(t, in, got)
					continue
				}
				for rank, err := range errs {
					if rank == 1 {
						continue
					}
					wantPeerError(t, err, 1, ErrTimeout)
					if took[rank] > skew+deadline {
						t.Errorf("member %d gave up on a member %v late after %v, want within the skew limit %v plus the deadline %v", rank, late, took[rank], skew, deadline)
					}
				}
			}
		})
	}
}

// TestBadInput: disagreements between members are errors naming the
// member and what differed.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	t.Run("length", func(t *testing.T) {
		c := newMemCluster(t, 3)
		rings := c.mustBuild(1, 3, func(cfg *Config) { cfg.Deadline = testDeadline })
		errs := parallel(rings, func(rank int, r *Ring) error {
			l := 100
			if rank == 1 {
				l = 101
			}
			return r.AllReduceSum(ctx, make([]float32, l))
		})
		// Members 1 and 2 both see a neighbour that differs; whichever
		// reports first, every member must get a mismatch naming both lengths.
		for i, err := range errs {
			var pe *PeerError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMismatch) {
				t.Fatalf("member %d: want a *PeerError mismatch, got %v", i, err)
			}
			if pe.Rank != 0 && pe.Rank != 1 {
				t.Errorf("member %d blames rank %d, not a member next to the odd length", i, pe.Rank)
			}
			if !strings.Contains(err.Error(), "101") || !strings.Contains(err.Error(), "100") {
				t.Errorf("member %d: error does not say which lengths differ: %v", i, err)
			}
		}
	})
	t.Run("operation", func(t *testing.T) {
		c := newMemCluster(t, 2)
		rings := c.mustBuild(1, 2, func(cfg *Config) { cfg.Deadline = testDeadline })
		errs := parallel(rings, func(rank int, r *Ring) error {
			if rank == 0 {
				return r.Broadcast(ctx, 0, make([]float32, 10))
			}
			return r.AllReduceSum(ctx, make([]float32, 10))
		})
		wantPeerError(t, errs[1], 0, ErrMismatch)
	})
	t.Run("broadcast root", func(t *testing.T) {
		c := newMemCluster(t, 3)
		rings := c.mustBuild(1, 3, func(cfg *Config) { cfg.Deadline = testDeadline })
		errs := parallel(rings, func(rank int, r *Ring) error {
			root := 0
			if rank == 2 {
				root = 1
			}
			return r.BroadcastBytes(ctx, root, make([]byte, 10))
		})
		if errors.Join(errs...) == nil {
			t.Fatal("members disagreeing on the root all succeeded")
		}
	})
	t.Run("handshake", func(t *testing.T) {
		c := newMemCluster(t, 2)
		// Member 1 thinks the ring has a different member 0.
		_, err := c.build(1, []int{0, 1}, func(cfg *Config) {
			cfg.ConnectTimeout = testDeadline
			if cfg.Rank == 1 {
				cfg.Members = []Member{{ID: "impostor", Addr: cfg.Members[0].Addr}, cfg.Members[1]}
			}
		})
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "impostor") {
			t.Fatalf("want a mismatch naming the member ID, got %v", err)
		}
	})
}

// TestGenerations: a stale member's connection is refused, and a newer
// generation arriving at an endpoint aborts the older ring's operation.
func TestGenerations(t *testing.T) {
	ctx := context.Background()
	c := newMemCluster(t, 2)
	rings := c.mustBuild(5, 2, func(cfg *Config) { cfg.Deadline = testDeadline })

	// A member still at generation 4 tries to join: refused as stale.
	members := []Member{{ID: "m0", Addr: c.eps[0].Addr()}, {ID: "m1", Addr: c.eps[1].Addr()}}
	_, err := NewRing(ctx, Config{Run: "test", Rank: 1, Members: members, Generation: 4, Deadline: testDeadline, ConnectTimeout: testDeadline, Endpoint: c.eps[1]})
	var ge *GenerationError
	if !errors.As(err, &ge) || ge.Theirs != 5 {
		t.Fatalf("stale generation 4: want GenerationError at 5, got %v", err)
	}

	// Member 1 moves on to generation 6 and dials member 0, whose ring at 5
	// is in an operation: that operation aborts with a GenerationError.
	opErr := make(chan error, 1)
	go func() { opErr <- rings[0].AllReduceSum(ctx, make([]float32, 10)) }()
	time.Sleep(20 * time.Millisecond)
	newer := make(chan error, 1)
	go func() {
		r, err := NewRing(ctx, Config{Run: "test", Rank: 1, Members: members, Generation: 6, Deadline: testDeadline, ConnectTimeout: testDeadline, Endpoint: c.eps[1]})
		if r != nil {
			r.Close()
		}
		newer <- err
	}()
	select {
	case err := <-opErr:
		if !errors.As(err, &ge) || ge.Theirs != 6 || ge.Ours != 5 {
			t.Fatalf("want GenerationError ours 5 theirs 6, got %v", err)
		}
	case <-time.After(2 * testDeadline):
		t.Fatal("operation at generation 5 did not abort on a generation-6 peer")
	}
	<-newer // member 0 never builds generation 6 here, so this one times out
}

// TestCloseEndsEverything: Close during an operation returns promptly,
// with ErrClosed, and leaves no goroutine behind.
func TestCloseEndsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	c := newMemCluster(t, 3)
	rings := c.mustBuild(1, 3, func(cfg *Config) { cfg.Deadline = 5 * time.Second })
	done := make(chan error, 1)
	// Members 1 and 2 never join the operation: member 0 waits on them.
	go func() { done <- rings[0].AllReduceSum(context.Background(), make([]float32, 100)) }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	rings[0].Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("want ErrClosed, got %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end the operation")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// Member 0's first frames may still sit in member 1's buffer, so the
	// barrier may see them (a mismatch) before the closed connection.
	var pe *PeerError
	if err := rings[1].Barrier(ctx); !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &pe) && pe.Rank == 0) {
		t.Errorf("barrier with a closed peer: %v", err)
	}
	c.close()
	c.rings, c.eps = nil, nil
	goroutinesSettle(t, base)
}

// TestFrameGenerations: on an established link, a data frame of an older
// generation is skipped and the operation succeeds; one of a newer
// generation aborts it with a *GenerationError.
func TestFrameGenerations(t *testing.T) {
	ctx := context.Background()
	c := newMemCluster(t, 2)
	rings := c.mustBuild(7, 2, func(cfg *Config) { cfg.Deadline = testDeadline })
	inject := func(gen uint64, payload []byte) {
		t.Helper()
		h := header{kind: kindData, op: opAllReduce, generation: gen, seq: 1, total: 4, length: uint32(len(payload))}
		var b [headerSize]byte
		h.encode(b[:])
		// Member 1's sender is idle between operations, so the test may
		// write on its link directly.
		if _, err := rings[1].out.Write(append(b[:], payload...)); err != nil {
			t.Fatal(err)
		}
	}
	inject(6, make([]byte, 16))
	bufs := [][]float32{{1, 2, 3, 4}, {10, 20, 30, 40}}
	if err := errors.Join(parallel(rings, func(rank int, r *Ring) error { return r.AllReduceSum(ctx, bufs[rank]) })...); err != nil {
		t.Fatalf("a stale frame broke the operation: %v", err)
	}
	if bufs[0][3] != 44 || bufs[1][0] != 11 {
		t.Fatalf("sums %v %v, want [11 22 33 44]", bufs[0], bufs[1])
	}
	inject(8, nil)
	errs := parallel(rings, func(rank int, r *Ring) error { return r.AllReduceSum(ctx, bufs[rank]) })
	var ge *GenerationError
	if !errors.As(errs[0], &ge) || ge.Theirs != 8 || ge.Ours != 7 || ge.Rank != 1 {
		t.Fatalf("member 0: want GenerationError from rank 1 at 8 (ours 7), got %v", errs[0])
	}
	if errs[1] == nil {
		t.Fatal("member 1 succeeded although member 0 aborted")
	}
}
