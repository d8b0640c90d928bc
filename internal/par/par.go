// Package par owns the bounded goroutine pools that simulate independent,
// fixed-size pieces of work (cache shards, row chunks of a sampler) on every
// core, and the BLAS thread setting while they run. The pieces are fixed by
// the caller, never derived from the worker count, so the result of each
// piece, and of the whole, is the same whatever the number of workers.
package par

import (
	"context"
	"runtime"
	"sync"

	"github.com/sbtrain/sbtrain/nn"
)

// Workers resolves a worker-count setting: n > 0 is taken as is, anything
// else means runtime.GOMAXPROCS(0), one worker per core the process may use.
func Workers(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// Size is the number of goroutines Do starts for `pieces` pieces with the
// setting n: Workers(n), but no more than there are pieces, and at least 1.
func Size(n, pieces int) int {
	return max(1, min(Workers(n), pieces))
}

// Do runs work(ctx, w, i) for every piece i in 0..pieces-1 on
// Size(workers, pieces) goroutines and returns when all of them have ended.
// Worker w (0 <= w < Size) runs one piece at a time, so per-worker state
// indexed by w (a network evaluator, buffers) needs no lock. Pieces are
// handed out in increasing order. The first error cancels the ctx passed to
// work, no further piece starts, and Do returns that error; when ctx itself
// ends, Do returns its error.
//
// The BLAS runs on one thread for the duration (and is restored after), so
// that its threads and the workers do not oversubscribe the cores. That
// holds for one worker too: OpenBLAS's products differ in the last bits
// between thread counts, so the pieces keep their bytes only if the BLAS
// thread count is the same whatever the worker count.
func Do(ctx context.Context, workers, pieces int, work func(ctx context.Context, worker, piece int) error) error {
	if pieces <= 0 {
		return ctx.Err()
	}
	defer singleThreadBLAS()()
	w := Size(workers, pieces)
	if w == 1 {
		for i := range pieces {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := work(ctx, 0, i); err != nil {
				return err
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next == pieces || ctx.Err() != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	for id := range w {
		wg.Go(func() {
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := work(ctx, id, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// blas counts the pools running at once, so that the first one to start
// saves the BLAS thread count and the last one to end restores it.
var blas struct {
	mu      sync.Mutex
	active  int
	threads int
}

// SingleThreadBLAS holds the BLAS at one thread until the returned
// function is called, as every pool does while it runs. A caller that
// overlaps a pool with its own BLAS work holds it across both, so that its
// products do not change bits with the pool's timing.
func SingleThreadBLAS() (restore func()) { return singleThreadBLAS() }

// singleThreadBLAS sets the BLAS to one thread until the returned function
// is called.
func singleThreadBLAS() (restore func()) {
	blas.mu.Lock()
	if blas.active == 0 {
		blas.threads = nn.BLASThreads()
		if blas.threads != 1 {
			nn.SetBLASThreads(1)
		}
	}
	blas.active++
	blas.mu.Unlock()
	return func() {
		blas.mu.Lock()
		defer blas.mu.Unlock()
		blas.active--
		if blas.active == 0 && blas.threads != 1 {
			nn.SetBLASThreads(blas.threads)
		}
	}
}
