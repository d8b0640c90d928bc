package trainer

import (
	"context"
	"sync"
	"time"
)

// stallWatch notices when this process stops running for a while
// (SIGSTOP, a frozen VM, a starved host): a ticker that fires much later
// than asked. A collective that fails across such a stall timed out
// because of this trainer, so it must not blame the peer it was waiting
// for.
type stallWatch struct {
	mu       sync.Mutex
	tick     time.Time     // the newest tick seen
	stallEnd time.Time     // when the newest stall was seen to end
	stalled  time.Duration // how long it was
}

const (
	stallTick = 100 * time.Millisecond
	// stallGap is a silence that only a stopped process explains; the Go
	// scheduler and GC pauses stay far below it.
	stallGap = time.Second
)

func startStallWatch(ctx context.Context) *stallWatch {
	w := &stallWatch{tick: time.Now()}
	go func() { // ends with ctx
		t := time.NewTicker(stallTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// The time of reading, not of the tick: a tick queued
				// before a stop is delivered late.
				w.saw(time.Now())
			}
		}
	}()
	return w
}

func (w *stallWatch) saw(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gap := now.Sub(w.tick); gap > stallGap {
		w.stallEnd, w.stalled = now, gap
	}
	w.tick = now
}

// stalledWithin says whether the process stalled in the last d, or is
// only now resuming from a stall the ticker has not yet seen end.
func (w *stallWatch) stalledWithin(d time.Duration) bool {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if gap := now.Sub(w.tick); gap > stallGap {
		w.stallEnd, w.stalled = now, gap
	}
	return !w.stallEnd.IsZero() && now.Sub(w.stallEnd) < d
}

// lastStall is how long the newest stall lasted.
func (w *stallWatch) lastStall() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalled
}
