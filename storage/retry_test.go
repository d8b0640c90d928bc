package storage

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceil *= time.Millisecond
		if n == 4 {
			ceil = time.Second
		}
		d := b.Next()
		if d < ceil/2 || d > ceil {
			t.Errorf("wait %d: %s, want within [%s, %s]", n, d, ceil/2, ceil)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after Reset: %s, want at most the base", d)
	}
	// Jitter: many draws of one step are not all equal.
	seen := map[time.Duration]bool{}
	for range 20 {
		b := Backoff{Base: time.Second, Max: time.Second}
		seen[b.Next()] = true
	}
	if len(seen) < 2 {
		t.Error("no jitter: 20 draws gave one wait")
	}
}

func TestOutageLogsTwoLines(t *testing.T) {
	log, logs := newTestLogger(t)
	o := NewOutage(log, "checkpoint write")
	o.Ended() // no outage: nothing
	for i := range 50 {
		tries, _ := o.Failed(errors.New("read-only file system"))
		if tries != i+1 {
			t.Fatalf("try %d counted as %d", i+1, tries)
		}
	}
	o.Ended()
	o.Ended()
	out := logs.String()
	if n := strings.Count(out, "\n"); n != 2 {
		t.Fatalf("%d log lines for one outage of 50 tries, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "failed_tries=50") || !strings.Contains(out, "op=\"checkpoint write\"") {
		t.Errorf("the end of the outage does not give the count:\n%s", out)
	}
}
