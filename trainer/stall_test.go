package trainer

import (
	"context"
	"testing"
	"time"
)

// A trainer that was stopped (SIGSTOP) sees the gap when it runs again,
// even before its ticker has, and says so for a while; an idle but
// running one never does.
func TestStallWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startStallWatch(ctx)
	time.Sleep(3 * stallTick)
	if w.stalledWithin(time.Minute) {
		t.Fatal("a running process reports a stall")
	}
	// As after SIGCONT: the newest tick is seconds old.
	w.mu.Lock()
	w.tick = time.Now().Add(-3 * time.Second)
	w.mu.Unlock()
	if !w.stalledWithin(time.Second) {
		t.Fatal("a 3 s stall is not seen before the ticker runs")
	}
	if got := w.lastStall(); got < 3*time.Second || got > 4*time.Second {
		t.Errorf("stall of %s, want about 3 s", got)
	}
	time.Sleep(3 * stallTick)
	if !w.stalledWithin(time.Second) {
		t.Error("the stall is forgotten at once")
	}
	if w.stalledWithin(100 * time.Millisecond) {
		t.Error("a stall 300 ms ago counts within 100 ms")
	}
}
