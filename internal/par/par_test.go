package par

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/nn"
)

func TestWorkersAndSize(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	cases := []struct {
		n, pieces, workers, size int
	}{
		{n: 0, pieces: 1000, workers: procs, size: procs},
		{n: -3, pieces: 1000, workers: procs, size: procs},
		{n: 5, pieces: 1000, workers: 5, size: 5},
		{n: 5, pieces: 3, workers: 5, size: 3},
		{n: 5, pieces: 0, workers: 5, size: 1},
		{n: 1, pieces: 8, workers: 1, size: 1},
	}
	for _, c := range cases {
		if got := Workers(c.n); got != c.workers {
			t.Errorf("Workers(%d) = %d, want %d", c.n, got, c.workers)
		}
		if got := Size(c.n, c.pieces); got != c.size {
			t.Errorf("Size(%d, %d) = %d, want %d", c.n, c.pieces, got, c.size)
		}
	}
}

// TestDoRunsEveryPieceOnce checks that each piece runs exactly once, that a
// worker index is never in use by two pieces at once, and that no goroutine
// outlives Do.
func TestDoRunsEveryPieceOnce(t *testing.T) {
	for _, workers := range []int{1, 2, 5, 64} {
		before := runtime.NumGoroutine()
		const pieces = 37
		var runs [pieces]atomic.Int32
		busy := make([]atomic.Bool, Size(workers, pieces))
		err := Do(context.Background(), workers, pieces, func(_ context.Context, w, i int) error {
			if !busy[w].CompareAndSwap(false, true) {
				t.Errorf("worker %d runs two pieces at once", w)
			}
			runs[i].Add(1)
			time.Sleep(time.Duration(i%3) * time.Millisecond)
			busy[w].Store(false)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range runs {
			if n := runs[i].Load(); n != 1 {
				t.Errorf("%d workers: piece %d ran %d times", workers, i, n)
			}
		}
		// A worker has called Done just before it exits: give the exits a
		// bounded moment.
		after := runtime.NumGoroutine()
		for try := 0; after > before && try < 100; try++ {
			time.Sleep(10 * time.Millisecond)
			after = runtime.NumGoroutine()
		}
		if after > before {
			t.Errorf("%d workers: %d goroutines after Do, %d before", workers, after, before)
		}
	}
}

func TestDoStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("boom")
	for _, workers := range []int{1, 3} {
		var started atomic.Int32
		err := Do(context.Background(), workers, 100, func(ctx context.Context, w, i int) error {
			started.Add(1)
			if i == 4 {
				return boom
			}
			if i > 4 {
				// The others see the cancellation and stop early.
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
					t.Error("a running piece was not cancelled after the error")
				}
			}
			return nil
		})
		if !errors.Is(err, boom) {
			t.Errorf("%d workers: error %v, want boom", workers, err)
		}
		if n := started.Load(); n > int32(5+workers) {
			t.Errorf("%d workers: %d pieces started after piece 4 failed", workers, n)
		}
	}
}

func TestDoEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	err := Do(ctx, 2, 50, func(ctx context.Context, w, i int) error {
		if i == 3 {
			once.Do(cancel)
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if err := Do(ctx, 1, 5, func(context.Context, int, int) error {
		t.Error("a piece ran with a cancelled context")
		return nil
	}); !errors.Is(err, context.Canceled) {
		t.Fatalf("one worker, cancelled context: error %v, want context.Canceled", err)
	}
}

// TestDoRunsBLASSingleThreaded: during Do the BLAS has one thread, with any
// worker count and with pools nested or overlapping; after, its setting is
// back. With the pure-Go BLAS the count is always 1.
func TestDoRunsBLASSingleThreaded(t *testing.T) {
	before := nn.BLASThreads()
	for _, workers := range []int{1, 3} {
		err := Do(context.Background(), workers, 6, func(_ context.Context, _, i int) error {
			if n := nn.BLASThreads(); n != 1 {
				t.Errorf("%d workers: BLAS threads %d during Do, want 1", workers, n)
			}
			if i == 0 { // a pool inside a pool restores nothing early
				if err := Do(context.Background(), 2, 2, func(context.Context, int, int) error { return nil }); err != nil {
					return err
				}
				if n := nn.BLASThreads(); n != 1 {
					t.Errorf("BLAS threads %d after an inner pool, want 1", n)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := nn.BLASThreads(); n != before {
			t.Errorf("%d workers: BLAS threads %d after Do, want %d as before", workers, n, before)
		}
	}
}
