package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable LeaseOptions.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// at returns a clock fixed at c's time plus d.
func (c *fakeClock) at(d time.Duration) func() time.Time {
	t := c.Now().Add(d)
	return func() time.Time { return t }
}

func writeLease(t *testing.T, s Store, run string, info LeaseInfo) {
	t.Helper()
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, leaseKey(run), b)
}

func mustAcquire(t *testing.T, s Store, run, holder string, opts LeaseOptions) *Lease {
	t.Helper()
	l, err := AcquireLease(context.Background(), s, run, holder, opts)
	if err != nil {
		t.Fatalf("acquire %s for %s: %v", run, holder, err)
	}
	return l
}

func TestLease(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		l := mustAcquire(t, s, "run-1", "coordinator@127.0.0.1:7000", LeaseOptions{})
		_, err := AcquireLease(ctx, s, "run-1", "coordinator@127.0.0.1:7001", LeaseOptions{})
		if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "coordinator@127.0.0.1:7000") {
			t.Errorf("second coordinator: %v, want ErrLeaseHeld naming the holder", err)
		}
		mustAcquire(t, s, "run-2", "other", LeaseOptions{})
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		l2 := mustAcquire(t, s, "run-1", "coordinator@127.0.0.1:7001", LeaseOptions{})
		if err := l.Release(ctx); err == nil || !strings.Contains(err.Error(), "7001") {
			t.Errorf("stale holder released a lease it lost: %v", err)
		}
		if info, err := ReadLease(ctx, s, "run-1"); err != nil || info.Token != l2.Info.Token {
			t.Errorf("lease now %+v, %v", info, err)
		}
		if _, err := AcquireLease(ctx, s, "run-1", "x", LeaseOptions{TTL: -time.Second}); err == nil {
			t.Error("negative TTL accepted")
		}
	})
}

// TestAcquireLease: a second coordinator is refused while the first is
// alive and renewing, and takes over once the lease is stale or its
// holder's process is gone.
func TestAcquireLease(t *testing.T) {
	host, _ := os.Hostname()
	const first, second = "coordinator@127.0.0.1:7000", "coordinator@127.0.0.1:7001"
	cases := []struct {
		name string
		// old writes the existing lease (nil: first acquires it with a
		// 10 s TTL at the clock's time).
		old func(t *testing.T, s Store, clk *fakeClock)
		// after is how long after the first acquisition the second comes.
		after time.Duration
		// processAlive answers for the second acquire (nil: alive).
		processAlive func(host string, pid int) bool
		wantTakeover bool
		wantErr      []string // substrings of the refusal
		wantExpires  time.Duration
	}{
		{
			name:    "live holder refused, named",
			after:   2100 * time.Millisecond,
			wantErr: []string{fmt.Sprintf("run demo is held by %q (pid %d on host %s), renewed 2.1s ago, expires in 7.9s", first, os.Getpid(), host)},
			// Renewed + TTL.
			wantExpires: 10 * time.Second,
		},
		{
			name:    "not yet expired",
			after:   9999 * time.Millisecond,
			wantErr: []string{"renewed 10s ago, expires in 0s"},
		},
		{
			name:         "expired taken over",
			after:        10*time.Second + time.Millisecond,
			wantTakeover: true,
		},
		{
			name:         "dead holder process taken over at once",
			processAlive: func(h string, pid int) bool { return !(h == host && pid == os.Getpid()) },
			wantTakeover: true,
		},
		{
			name:         "holder process alive elsewhere refused",
			processAlive: func(string, int) bool { return true },
			wantErr:      []string{first, "expires in 10s"},
		},
		{
			name: "lease without expiry is never taken over",
			old: func(t *testing.T, s Store, clk *fakeClock) {
				writeLease(t, s, "demo", LeaseInfo{Holder: first, Acquired: "2020-01-01T00:00:00Z", Token: "00"})
			},
			after:        1000 * time.Hour,
			processAlive: func(string, int) bool { return false },
			wantErr:      []string{first, "since 2020-01-01T00:00:00Z", "has no expiry", "unlock"},
		},
		{
			name: "unparsable renewal stamp is kept",
			old: func(t *testing.T, s Store, clk *fakeClock) {
				writeLease(t, s, "demo", LeaseInfo{Holder: first, Token: "00", Renewed: "yesterday", TTLSeconds: 1})
			},
			after:   1000 * time.Hour,
			wantErr: []string{first, "has no expiry"},
		},
		{
			name: "unreadable lease refused",
			old: func(t *testing.T, s Store, clk *fakeClock) {
				put(t, s, leaseKey("demo"), []byte("{not json"))
			},
			wantErr: []string{"exists but cannot be read"},
		},
	}
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				// Each case its own store prefix: a fresh run per case.
				s := prefixed{s, fmt.Sprintf("case-%d/", i)}
				ctx := context.Background()
				clk := newFakeClock()
				var old *Lease
				if tc.old == nil {
					old = mustAcquire(t, s, "demo", first, LeaseOptions{TTL: 10 * time.Second, Now: clk.Now})
				} else {
					tc.old(t, s, clk)
				}
				before, _ := ReadLease(ctx, s, "demo")
				log, logs := newTestLogger(t)
				pa := tc.processAlive
				if pa == nil {
					pa = func(string, int) bool { return true }
				}
				l, err := AcquireLease(ctx, s, "demo", second, LeaseOptions{Now: clk.at(tc.after), ProcessAlive: pa, Logger: log})
				if !tc.wantTakeover {
					var held *LeaseHeldError
					if !errors.Is(err, ErrLeaseHeld) || !errors.As(err, &held) {
						t.Fatalf("second acquire: %v, want ErrLeaseHeld", err)
					}
					for _, want := range tc.wantErr {
						if !strings.Contains(err.Error(), want) {
							t.Errorf("refusal %q does not say %q", err, want)
						}
					}
					if tc.wantExpires != 0 && !held.Expires.Equal(clk.Now().Add(tc.wantExpires)) {
						t.Errorf("Expires = %v, want %v", held.Expires, clk.Now().Add(tc.wantExpires))
					}
					if after, _ := ReadLease(ctx, s, "demo"); after != before {
						t.Errorf("refused acquire changed the lease: %+v -> %+v", before, after)
					}
					return
				}
				if err != nil {
					t.Fatalf("takeover: %v", err)
				}
				if !strings.Contains(logs.String(), "taking over a stale run lease") || !strings.Contains(logs.String(), first) {
					t.Errorf("no warning naming the old holder; log:\n%s", logs)
				}
				cur, err := ReadLease(ctx, s, "demo")
				if err != nil || cur != l.Info || cur.Holder != second || cur.TTLSeconds != DefaultLeaseTTL.Seconds() || cur.PID != os.Getpid() || cur.Host != host {
					t.Errorf("lease now %+v (%v), want %+v", cur, err, l.Info)
				}
				// The old holder learns it lost the lease and cannot remove
				// the new one.
				if err := old.Renew(ctx); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), second) {
					t.Errorf("old holder's Renew: %v, want ErrLeaseLost naming %s", err, second)
				}
				if err := old.Release(ctx); err == nil {
					t.Error("old holder released the new holder's lease")
				}
				if err := l.Renew(ctx); err != nil {
					t.Errorf("new holder's Renew: %v", err)
				}
			})
		}
	})
}

// prefixed puts every key of a Store under a prefix.
type prefixed struct {
	Store
	p string
}

func (s prefixed) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.Store.Put(ctx, s.p+key, r, size)
}

func (s prefixed) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.Store.PutIfAbsent(ctx, s.p+key, r, size)
}

func (s prefixed) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	return s.Store.Get(ctx, s.p+key)
}

func (s prefixed) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	return s.Store.Stat(ctx, s.p+key)
}

func (s prefixed) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	objs, err := s.Store.List(ctx, s.p+prefix)
	for i := range objs {
		objs[i].Key = strings.TrimPrefix(objs[i].Key, s.p)
	}
	return objs, err
}

func (s prefixed) Delete(ctx context.Context, key string) error {
	return s.Store.Delete(ctx, s.p+key)
}

// TestLeaseTakeoverRace: of several coordinators taking over one stale
// lease at once, exactly one ends up holding it by the time each has
// renewed once; the others are refused or learn at once that they lost.
func TestLeaseTakeoverRace(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		clk := newFakeClock()
		mustAcquire(t, s, "demo", "dead", LeaseOptions{TTL: time.Second, Now: clk.Now})
		const n = 6
		leases := make([]*Lease, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				log, _ := newTestLogger(t)
				leases[i], errs[i] = AcquireLease(ctx, s, "demo", fmt.Sprintf("c%d", i), LeaseOptions{Now: clk.at(time.Minute), Logger: log})
			})
		}
		wg.Wait()
		holders := 0
		for i := range n {
			switch {
			case errs[i] != nil:
				if !errors.Is(errs[i], ErrLeaseHeld) {
					t.Errorf("c%d: %v, want ErrLeaseHeld", i, errs[i])
				}
			case leases[i].Renew(ctx) == nil:
				holders++
			}
		}
		cur, err := ReadLease(ctx, s, "demo")
		if holders != 1 || err != nil || cur.Holder == "dead" {
			t.Errorf("%d holders after renewing, lease %+v (%v); want exactly 1", holders, cur, err)
		}
	})
}

func TestLeaseRenew(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		clk := newFakeClock()
		t0 := clk.Now()
		l := mustAcquire(t, s, "demo", "a", LeaseOptions{TTL: 10 * time.Second, Now: clk.Now})
		refuse := func(after time.Duration) error {
			_, err := AcquireLease(ctx, s, "demo", "b", LeaseOptions{Now: clk.at(after)})
			return err
		}

		clk.Add(8 * time.Second)
		if err := l.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		cur, err := ReadLease(ctx, s, "demo")
		if err != nil || cur.Renewed != t0.Add(8*time.Second).Format(time.RFC3339Nano) || cur.Token != l.Info.Token || cur.Acquired != l.Info.Acquired {
			t.Fatalf("after renewal: %+v, %v", cur, err)
		}
		if !l.LastRenewed().Equal(t0.Add(8 * time.Second)) {
			t.Errorf("LastRenewed = %v", l.LastRenewed())
		}
		// 17 s after acquisition the first TTL is over, but the renewal
		// extended it to 18 s.
		if err := refuse(9 * time.Second); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "renewed 9s ago, expires in 1s") {
			t.Fatalf("acquire before the renewed expiry: %v, want ErrLeaseHeld", err)
		}
		b := mustAcquire(t, s, "demo", "b", LeaseOptions{Now: clk.at(11 * time.Second)})
		if err := l.Renew(ctx); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("Renew after takeover: %v, want ErrLeaseLost naming b", err)
		}
		if cur, _ := ReadLease(ctx, s, "demo"); cur != b.Info {
			t.Errorf("a lost renewal changed the lease: %+v", cur)
		}

		if err := BreakLease(ctx, s, "demo"); err != nil {
			t.Fatal(err)
		}
		if err := b.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("Renew of a broken lease: %v, want ErrLeaseLost", err)
		}
		c := mustAcquire(t, s, "demo", "c", LeaseOptions{})
		if err := c.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Renew(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("Renew after Release: %v, want ErrLeaseLost", err)
		}
		if _, err := ReadLease(ctx, s, "demo"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Renew after Release re-created the lease: %v", err)
		}
	})
}

// outage makes a failingStore fail while it is on.
type outage struct {
	on     atomic.Bool
	failed atomic.Int64 // calls failed so far
}

// pause turns the outage on and waits until a call of the lease's holder
// has failed: Keep renews one call at a time, so no renewal is then in
// flight and the test can change the lease without racing one (a real
// takeover happens only once renewals have stopped).
func (o *outage) pause(t *testing.T) {
	t.Helper()
	n := o.failed.Load()
	o.on.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for o.failed.Load() == n {
		if time.Now().After(deadline) {
			t.Fatal("no renewal attempt within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// failingStore fails reads and writes during an outage, as an unreachable
// store would.
type failingStore struct {
	Store
	o *outage
}

func (f failingStore) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if f.o.on.Load() {
		f.o.failed.Add(1)
		return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", key, ErrUnreachable)
	}
	return f.Store.Get(ctx, key)
}

func (f failingStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if f.o.on.Load() {
		f.o.failed.Add(1)
		return fmt.Errorf("put %s: %w", key, ErrUnreachable)
	}
	return f.Store.Put(ctx, key, r, size)
}

// TestLeaseKeep runs Keep in a goroutine, does something to the lease and
// waits (bounded) for Keep to report the loss and end, or not.
func TestLeaseKeep(t *testing.T) {
	const bound = 10 * time.Second // only reached when the test fails
	cases := []struct {
		name string
		ttl  time.Duration
		// act disturbs the lease: s is the holder's store, other another
		// coordinator's view of it; act may cancel Keep's context.
		act      func(t *testing.T, s, other Store, o *outage, cancel func())
		wantLost string // "" : Keep must end without calling lost
	}{
		{
			name: "taken over",
			ttl:  10 * time.Second,
			act: func(t *testing.T, s, other Store, o *outage, _ func()) {
				o.pause(t)
				mustAcquire(t, other, "demo", "b", LeaseOptions{Now: func() time.Time { return time.Now().Add(time.Hour) }})
				o.on.Store(false)
			},
			wantLost: `now held by "b"`,
		},
		{
			name: "broken by an operator",
			ttl:  10 * time.Second,
			act: func(t *testing.T, s, other Store, o *outage, _ func()) {
				o.pause(t)
				if err := BreakLease(context.Background(), other, "demo"); err != nil {
					t.Fatal(err)
				}
				o.on.Store(false)
			},
			wantLost: "gone",
		},
		{
			name: "store unreachable past the TTL",
			ttl:  300 * time.Millisecond,
			act: func(t *testing.T, s, other Store, o *outage, _ func()) {
				o.on.Store(true)
			},
			wantLost: "not renewed for",
		},
		{
			name: "context cancelled",
			ttl:  10 * time.Second,
			act: func(t *testing.T, s, other Store, _ *outage, cancel func()) {
				cancel()
			},
		},
		{
			name: "short outage survived",
			ttl:  time.Second,
			act: func(t *testing.T, s, other Store, o *outage, cancel func()) {
				o.pause(t)
				time.Sleep(200 * time.Millisecond)
				n := o.failed.Load()
				o.on.Store(false)
				time.Sleep(100 * time.Millisecond)
				cancel()
				if n < 2 {
					t.Errorf("only %d renewal calls failed during the outage", n)
				}
				if cur, err := ReadLease(context.Background(), other, "demo"); err != nil || cur.Holder != "a" {
					t.Errorf("lease after the outage: %+v, %v", cur, err)
				}
			},
		},
	}
	eachBackend(t, func(t *testing.T, _ string, base Store) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var o outage
				other := prefixed{base, fmt.Sprintf("keep-%d/", i)}
				s := failingStore{other, &o}
				l := mustAcquire(t, s, "demo", "a", LeaseOptions{TTL: tc.ttl})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var calls atomic.Int32
				lostErr := make(chan error, 2)
				done := make(chan struct{})
				go func() {
					defer close(done)
					l.Keep(ctx, 10*time.Millisecond, func(err error) {
						calls.Add(1)
						lostErr <- err
					})
				}()
				// Wait for a first renewal, so Keep is known to be running.
				deadline := time.Now().Add(bound)
				for l.LastRenewed().Equal(mustParse(t, l.Info.Renewed)) && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				tc.act(t, s, other, &o, cancel)
				select {
				case <-done:
				case <-time.After(bound):
					t.Fatal("Keep did not return")
				}
				switch {
				case tc.wantLost == "" && calls.Load() != 0:
					t.Errorf("lost called: %v", <-lostErr)
				case tc.wantLost == "":
				case calls.Load() != 1:
					t.Errorf("lost called %d times, want once", calls.Load())
				default:
					if err := <-lostErr; !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), tc.wantLost) {
						t.Errorf("lost(%v), want ErrLeaseLost saying %q", err, tc.wantLost)
					}
				}
			})
		}
	})
}

func mustParse(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func (s prefixed) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, version string) error {
	return s.Store.PutIfMatch(ctx, s.p+key, r, size, version)
}
