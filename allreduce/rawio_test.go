package allreduce

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// TestTCPSilentPeers: over TCP (the raw read and write path), a member
// whose peers never join gets a timeout naming one of its neighbours within
// 2x the deadline, though its buffer is far larger than the socket buffers
// so that its sender blocks on a full socket as well; Close and context
// cancellation end an operation blocked in a raw read or write promptly.
func TestTCPSilentPeers(t *testing.T) {
	base := runtime.NumGoroutine()
	c := newTCPCluster(t, 3)
	rings := c.mustBuild(1, 3, func(cfg *Config) { cfg.Deadline = testDeadline })
	big := make([]float32, 16<<20)

	start := time.Now()
	err := rings[0].AllReduceSum(context.Background(), big)
	var pe *PeerError
	if !errors.As(err, &pe) || !errors.Is(err, ErrTimeout) || (pe.Rank != 1 && pe.Rank != 2) {
		t.Fatalf("want a timeout blaming member 1 or 2, got %v", err)
	}
	if d := time.Since(start); d > 2*testDeadline {
		t.Errorf("timeout after %v, over 2x the deadline %v", d, testDeadline)
	}

	// A deadline long enough that only Close and cancel can end the
	// operations in time. The failing member gives its abort frame a
	// quarter deadline before cutting the link (its next member does not
	// read, so the abort may not fit), which bounds how long it may take.
	const deadline = 4 * time.Second
	rings, err = c.build(2, []int{0, 1, 2}, func(cfg *Config) { cfg.Deadline = deadline })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- rings[0].AllReduceSum(context.Background(), big) }()
	go func() { done <- rings[1].AllReduceSum(ctx, big) }()
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	rings[0].Close()
	cancel()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
				// Member 1 may also see member 0's link close first.
				if !errors.As(err, &pe) || pe.Rank != 0 {
					t.Errorf("want ErrClosed, context.Canceled or member 0 blamed, got %v", err)
				}
			}
		case <-time.After(deadline / 2):
			t.Fatal("Close or cancel did not end an operation blocked on TCP")
		}
	}
	if d := time.Since(start); d > deadline/4+500*time.Millisecond {
		t.Errorf("Close and cancel took %v", d)
	}
	c.close()
	c.rings, c.eps = nil, nil
	goroutinesSettle(t, base)
}
