package par

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestAheadHandsOutEveryGeneration asks for generations in order (and one
// out of order, as a caller restarting a phase would) with and without the
// background build: each answer is that generation's, every generation is
// built once when asked in order, and none past last is ever built.
func TestAheadHandsOutEveryGeneration(t *testing.T) {
	for _, tc := range []struct {
		name       string
		background bool
		asks       []uint64
		builds     int
	}{
		{"in order, ahead", true, []uint64{0, 1, 2, 3}, 4},
		{"in order, not ahead", false, []uint64{0, 1, 2, 3}, 4},
		{"repeat and skip, ahead", true, []uint64{0, 0, 2, 3}, 6}, // 0, 1 (dropped), 0, 1 (dropped), 2, 3
		{"single generation", true, []uint64{0}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			built := map[uint64]int{}
			last := uint64(3)
			if len(tc.asks) == 1 {
				last = 0
			}
			a := NewAhead(context.Background(), func(_ context.Context, g uint64) (uint64, error) {
				mu.Lock()
				defer mu.Unlock()
				built[g]++
				return 10 * g, nil
			}, last, tc.background)
			for _, g := range tc.asks {
				got, err := a.Get(g)
				if err != nil {
					t.Fatal(err)
				}
				if got != 10*g {
					t.Fatalf("generation %d: got %d", g, got)
				}
			}
			a.Stop()
			n := 0
			for g, c := range built {
				if g > last {
					t.Errorf("generation %d past the last (%d) was built", g, last)
				}
				n += c
			}
			if n != tc.builds {
				t.Errorf("%d builds, want %d (%v)", n, tc.builds, built)
			}
		})
	}
}

// TestAheadStopsTheBackgroundBuild: Stop cancels the build in progress and
// waits for it; an error of the generation asked for is returned.
func TestAheadStopsTheBackgroundBuild(t *testing.T) {
	started := make(chan struct{})
	var stopped bool
	a := NewAhead(context.Background(), func(ctx context.Context, g uint64) (int, error) {
		if g == 0 {
			return 0, nil
		}
		close(started)
		<-ctx.Done()
		stopped = true
		return 0, ctx.Err()
	}, 1, true)
	if _, err := a.Get(0); err != nil {
		t.Fatal(err)
	}
	<-started
	a.Stop()
	if !stopped {
		t.Fatal("Stop returned before the background build ended")
	}

	bad := errors.New("simulation failed")
	b := NewAhead(context.Background(), func(context.Context, uint64) (int, error) { return 0, bad }, 2, true)
	defer b.Stop()
	if _, err := b.Get(0); !errors.Is(err, bad) {
		t.Fatalf("Get = %v, want the build's error", err)
	}
}
