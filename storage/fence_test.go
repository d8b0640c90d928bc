package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPutIfMatch: the compare-and-swap that LATEST and LEASE change by.
func TestPutIfMatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		const key = "runs/r/LATEST"
		swap := func(body, version string) error {
			return s.PutIfMatch(ctx, key, strings.NewReader(body), int64(len(body)), version)
		}
		if err := swap("one", "v-of-nothing"); !errors.Is(err, ErrChanged) {
			t.Fatalf("swap of a missing key from a version: %v, want ErrChanged", err)
		}
		if err := swap("one", ""); err != nil {
			t.Fatalf("create: %v", err)
		}
		if err := swap("two", ""); !errors.Is(err, ErrChanged) {
			t.Fatalf("create over an existing key: %v, want ErrChanged", err)
		}
		v1, err := s.Stat(ctx, key)
		if err != nil || v1.Version == "" {
			t.Fatalf("stat: %+v, %v: want a version", v1, err)
		}
		_, got, err := s.Get(ctx, key)
		if err != nil || got.Version != v1.Version {
			t.Fatalf("Get's version %q (%v), Stat's %q", got.Version, err, v1.Version)
		}
		if err := swap("two", v1.Version); err != nil {
			t.Fatalf("swap from the current version: %v", err)
		}
		v2, _ := s.Stat(ctx, key)
		if v2.Version == v1.Version {
			t.Fatalf("version %q did not change with the write", v2.Version)
		}
		if err := swap("three", v1.Version); !errors.Is(err, ErrChanged) {
			t.Fatalf("swap from an old version: %v, want ErrChanged", err)
		}
		if b := read(t, s, key); string(b) != "two" {
			t.Fatalf("object is %q after a refused swap, want two", b)
		}
		// Of many swaps from one version, exactly one wins.
		var won atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := strings.Repeat("x", i+1)
				err := swap(body, v2.Version)
				switch {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, ErrChanged):
					t.Errorf("racing swap: %v", err)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("%d racing swaps from one version succeeded, want 1", won.Load())
		}
		if _, err := s.List(ctx, "runs/r/"); err != nil {
			t.Fatal(err)
		}
		if objs, _ := s.List(ctx, "runs/r/"); len(objs) != 1 || objs[0].Key != key {
			t.Fatalf("listing shows %+v, want only %s (no lock files)", objs, key)
		}
	})
}

func read(t *testing.T, s Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hookStore runs before(key) ahead of every manifest write: a second
// coordinator can act at the worst moment of the first one's commit.
type hookStore struct {
	Store
	before func(key string)
}

func (h hookStore) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasSuffix(key, "/"+manifestName) && h.before != nil {
		h.before(key)
	}
	return h.Store.PutIfAbsent(ctx, key, r, size)
}

// commitBlob writes one blob at (phase 0, step) and commits it.
func commitBlob(ctx context.Context, c *Checkpoints, step int64) (ID, error) {
	id, err := c.NextID(ctx, 0, step)
	if err != nil {
		return ID{}, err
	}
	ref, err := c.PutBlob(ctx, id, "state.bin", []byte{byte(step)})
	if err != nil {
		return id, err
	}
	_, err = c.Commit(ctx, id, testMeta(0, step, false), []BlobRef{ref})
	return id, err
}

// TestFencing: once a second holder has taken a run over and fenced it,
// the first can commit nothing, whatever the timing: not before its
// manifest, not between its manifest and LATEST (the manifest is then
// invisible to every reader), and not after a third takeover; GC removes
// what it left, and the new holders resume from their own LATEST.
func TestFencing(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		clk := newFakeClock()
		log, logs := newTestLogger(t)
		opts := LeaseOptions{TTL: 10 * time.Second, Now: clk.Now, Logger: log}

		// takeOver acquires the stale lease as holder and fences with it.
		takeOver := func(holder string) (*Lease, *Checkpoints) {
			t.Helper()
			clk.Add(11 * time.Second)
			l, err := AcquireLease(ctx, s, "run-1", holder, opts)
			if err != nil {
				t.Fatalf("%s: %v", holder, err)
			}
			c, err := NewCheckpoints(s, "run-1", log)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Fence(ctx, l.Generation()); err != nil {
				t.Fatalf("%s fences: %v", holder, err)
			}
			return l, c
		}

		la := mustAcquire(t, s, "run-1", "a", opts)
		if la.Generation() != 1 {
			t.Fatalf("first lease has generation %d, want 1", la.Generation())
		}
		var b *Checkpoints
		var lb *Lease
		first := true
		a, err := NewCheckpoints(hookStore{s, func(string) {
			if first {
				return
			}
			if b == nil { // b takes over between a's fence check and its manifest
				lb, b = takeOver("b")
			}
		}}, "run-1", log)
		if err != nil {
			t.Fatal(err)
		}
		if prev, err := a.Fence(ctx, la.Generation()); err != nil || prev != 0 {
			t.Fatalf("a fences: prev %d, %v", prev, err)
		}
		id1, err := commitBlob(ctx, a, 10)
		if err != nil {
			t.Fatal(err)
		}
		first = false

		id2, err := commitBlob(ctx, a, 20)
		if !errors.Is(err, ErrFenced) || !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a's commit after b took over: %v, want ErrFenced and ErrLeaseLost", err)
		}
		if lb.Generation() <= la.Generation() {
			t.Fatalf("b's generation %d is not above a's %d", lb.Generation(), la.Generation())
		}
		if err := la.Renew(ctx); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("a's renewal: %v, want ErrLeaseLost naming b", err)
		}
		// a's manifest exists, but nobody counts it as committed.
		if _, err := s.Stat(ctx, a.manifestKey(id2)); err != nil {
			t.Fatalf("a's manifest %s: %v (the race the test sets up did not happen)", id2, err)
		}
		for _, c := range []*Checkpoints{a, b} {
			if l := mustLoad(t, c); l.Manifest.Seq != id1.Seq {
				t.Errorf("LoadLatest gives %d, want %s: the fenced manifest was loaded", l.Manifest.Seq, id1)
			}
		}
		if _, err := b.Load(ctx, id2); !errors.Is(err, ErrFenced) {
			t.Errorf("Load of the fenced checkpoint: %v, want ErrFenced", err)
		}
		if !strings.Contains(logs.String(), "after generation 2 took the run over") {
			t.Errorf("the log does not say why the fenced manifest is skipped:\n%s", logs)
		}

		// a, now knowing nothing, is refused before it writes anything.
		if _, err := commitBlob(ctx, a, 30); !errors.Is(err, ErrFenced) {
			t.Fatalf("a's next commit: %v, want ErrFenced", err)
		}
		if _, err := a.GC(ctx, 1); !errors.Is(err, ErrFenced) {
			t.Errorf("a's GC: %v, want ErrFenced", err)
		}
		if _, err := a.Fence(ctx, la.Generation()); !errors.Is(err, ErrFenced) {
			t.Errorf("a fencing again with its old generation: %v, want ErrFenced", err)
		}

		// b commits; a third holder takes over; a's manifest stays hidden.
		id3, err := commitBlob(ctx, b, 40)
		if err != nil {
			t.Fatalf("b's commit: %v", err)
		}
		if id3.Seq <= id2.Seq {
			t.Fatalf("b committed seq %d, not past a's abandoned %d", id3.Seq, id2.Seq)
		}
		_, c := takeOver("c")
		if l := mustLoad(t, c); l.Manifest.Seq != id3.Seq {
			t.Errorf("c resumes from %d, want b's %s", l.Manifest.Seq, id3)
		}
		ents := mustList(t, c)
		for _, e := range ents {
			switch {
			case e.ID == id2 && (e.Manifest != nil || !errors.Is(e.Err, ErrFenced)):
				t.Errorf("a's fenced entry %s: manifest %v, err %v, want ErrFenced", e.ID, e.Manifest != nil, e.Err)
			case (e.ID == id1 || e.ID == id3) && e.Manifest == nil:
				t.Errorf("committed entry %s: %v", e.ID, e.Err)
			}
		}
		if _, err := commitBlob(ctx, b, 50); !errors.Is(err, ErrFenced) {
			t.Errorf("b's commit after c took over: %v, want ErrFenced", err)
		}
		res, err := c.GC(ctx, 5)
		if err != nil {
			t.Fatal(err)
		}
		removed := false
		for _, r := range res.Removed {
			removed = removed || r == id2
		}
		if !removed {
			t.Errorf("GC removed %v, want a's fenced %s among them", res.Removed, id2)
		}
	})
}

// TestFenceGenerations: each acquisition's generation is above every
// earlier one of the run, including after a release (the lease object is
// gone, LATEST remembers), and a lease that lapsed by its holder's clock
// cannot be acted on even though nobody took it.
func TestFenceGenerations(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		clk := newFakeClock()
		opts := LeaseOptions{TTL: 10 * time.Second, Now: clk.Now}
		var last uint64
		for i, holder := range []string{"a", "b", "c"} {
			l := mustAcquire(t, s, "run-1", holder, opts)
			if l.Generation() <= last {
				t.Fatalf("acquisition %d: generation %d, not above %d", i, l.Generation(), last)
			}
			last = l.Generation()
			c, _ := newCkpts(t, s)
			if _, err := c.Fence(ctx, l.Generation()); err != nil {
				t.Fatal(err)
			}
			if err := l.Check(); err != nil {
				t.Fatalf("fresh lease: %v", err)
			}
			clk.Add(9 * time.Second)
			if err := l.Check(); err != nil {
				t.Fatalf("lease inside its TTL: %v", err)
			}
			clk.Add(2 * time.Second)
			if err := l.Check(); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("lease past its TTL: %v, want ErrLeaseLost", err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// LATEST keeps the history of fences; a damaged one is refused.
		b := read(t, s, RunPrefix("run-1")+latestName)
		if !bytes.Contains(b, []byte(`"fences":[{"generation":1,"seq":0},{"generation":2,"seq":0},{"generation":3,"seq":0}]`)) {
			t.Errorf("LATEST is %s", b)
		}
		if _, err := decodeLatest([]byte(`{"manifest":"","seq":0,"fences":[{"generation":2,"seq":0},{"generation":1,"seq":0}]}`),
			"LATEST", "runs/run-1/ckpt/", "run-1"); !errors.Is(err, ErrInvalid) {
			t.Errorf("fences out of order: %v, want ErrInvalid", err)
		}
	})
}
