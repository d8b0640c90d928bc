package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// A lease is the object runs/<id>/LEASE, created only if absent (S3
// If-None-Match: *, a hard link on disk), so of two coordinators started on
// one run exactly one gets it and the other is told who holds it.
//
// The holder renews it (Renew, or Keep in a goroutine) well inside its TTL.
// A lease not renewed for its TTL is stale and the next AcquireLease takes
// it over, so a run whose processes were all killed restarts without an
// operator. A lease whose holder ran on this host under a process id that
// no longer exists is taken over at once, without waiting out the TTL.
// Renewals and takeovers are compare-and-swaps on the lease object
// (PutIfMatch), so of two processes acting on one version exactly one
// succeeds, and a renewal never revives a lease someone else took over.
//
// Each acquisition gets a generation above every earlier one of the run
// (the old lease's and the one LATEST records): the fencing token. The
// holder fences the run with it (Checkpoints.Fence) before it commits, and
// every manifest and LATEST write then carries it and is refused once a
// newer generation has fenced the run: a holder whose lease lapsed cannot
// commit even if storage comes back, whatever its clock says.
//
// Expiry compares the holder's renewal stamp with the taker's clock, so
// hosts' clocks must agree to well within the TTL; fencing does not depend
// on clocks. Leases written before renewal existed (no TTL) never expire;
// an operator removes them with BreakLease (`sbtrain ckpt unlock`) after
// checking.

// DefaultLeaseTTL is the TTL of a lease when LeaseOptions.TTL is zero.
const DefaultLeaseTTL = 15 * time.Second

var (
	// ErrLeaseHeld means another holder has the run's lease.
	ErrLeaseHeld = errors.New("run is leased by another holder")
	// ErrLeaseLost means a lease we held is gone or now someone else's;
	// its former holder must stop acting for the run.
	ErrLeaseLost = errors.New("run lease lost")
)

// LeaseInfo is what the lease object records.
type LeaseInfo struct {
	Holder   string `json:"holder"`
	Acquired string `json:"acquired"` // RFC 3339, UTC
	Token    string `json:"token"`    // random; tells our lease from a later one
	// Renewed is the last renewal (at first the acquisition), RFC 3339 with
	// nanoseconds, UTC; the lease is stale once Renewed + TTLSeconds has
	// passed. Empty, or TTLSeconds 0, in leases that never expire.
	Renewed    string  `json:"renewed,omitempty"`
	TTLSeconds float64 `json:"ttl_seconds,omitempty"`
	// Host and PID name the holder's process, so that a taker on the same
	// host can see that it is gone without waiting out the TTL.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// Generation is the fencing token: above that of every earlier lease
	// of the run. 0 in leases written before fencing existed.
	Generation uint64 `json:"generation,omitempty"`
}

// ttl is the lease's TTL, or 0 if it never expires.
func (i LeaseInfo) ttl() time.Duration {
	if i.TTLSeconds <= 0 {
		return 0
	}
	return time.Duration(i.TTLSeconds * float64(time.Second))
}

// expires returns when the lease goes stale; ok is false if it never does
// (no TTL, or a renewal stamp that does not parse: without a trustworthy
// time, keeping the lease is the safe side).
func (i LeaseInfo) expires() (renewed, expires time.Time, ok bool) {
	ttl := i.ttl()
	if ttl == 0 || i.Renewed == "" {
		return time.Time{}, time.Time{}, false
	}
	r, err := time.Parse(time.RFC3339Nano, i.Renewed)
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	return r, r.Add(ttl), true
}

// LeaseOptions configure AcquireLease. The zero value is the production
// setting.
type LeaseOptions struct {
	// TTL is how long the lease stays valid without a renewal; 0:
	// DefaultLeaseTTL.
	TTL time.Duration
	// Now replaces time.Now (tests).
	Now func() time.Time
	// ProcessAlive says whether the holder's process pid on host may still
	// run; a false answer lets AcquireLease take the lease over at once.
	// nil: on this host, a process that signal 0 reports missing (ESRCH) is
	// dead; anything else, including any other host, counts as alive.
	ProcessAlive func(host string, pid int) bool
	// Logger receives takeover warnings; nil: slog.Default().
	Logger *slog.Logger
}

// LeaseHeldError is the error AcquireLease returns when someone else holds
// the lease; it matches ErrLeaseHeld with errors.Is.
type LeaseHeldError struct {
	Run    string
	Holder LeaseInfo // zero if the lease could not be read
	// Expires is when the lease goes stale unless renewed; zero if it
	// never expires (or could not be read). A caller may retry after it.
	Expires time.Time
	msg     string
}

func (e *LeaseHeldError) Error() string { return e.msg + ": " + ErrLeaseHeld.Error() }
func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// Lease is a held lease. Info is the lease as acquired; renewals do not
// change it (see LastRenewed).
type Lease struct {
	Info  LeaseInfo
	store Store
	run   string
	ttl   time.Duration
	now   func() time.Time

	// mu serialises Renew and Release, so a renewal in flight cannot
	// re-create a lease that Release just removed.
	mu       sync.Mutex
	renewed  time.Time
	released bool
	lost     error // why Keep gave the lease up; nil while held
}

func leaseKey(run string) string { return RunPrefix(run) + "LEASE" }

// AcquireLease takes run's lease for holder (e.g. "coordinator@host:port").
// If the lease exists but is stale (not renewed within its TTL) or its
// holder's process is known to be dead, it is taken over, with a warning
// naming the old holder. Otherwise the error is a *LeaseHeldError, which
// wraps ErrLeaseHeld and names the holder, its process and when the lease
// expires. The holder must renew the lease (Renew or Keep) and stop when it
// is lost.
func AcquireLease(ctx context.Context, s Store, run, holder string, opts LeaseOptions) (*Lease, error) {
	if err := ValidateRunID(run); err != nil {
		return nil, err
	}
	if holder == "" {
		return nil, errors.New("acquire lease: empty holder name")
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("acquire lease of run %s: negative TTL %s", run, opts.TTL)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultLeaseTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProcessAlive == nil {
		opts.ProcessAlive = processAlive
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	key := leaseKey(run)
	fenced, err := fenceGeneration(ctx, s, run)
	if err != nil {
		return nil, fmt.Errorf("acquire lease of run %s: %w", run, err)
	}
	tookOver := false
	// from is the version of the stale lease being taken over; "" creates.
	from, fromGen := "", uint64(0)
	for attempt := 0; attempt < 2; attempt++ {
		now := opts.Now().UTC()
		info := LeaseInfo{
			Holder: holder, Acquired: now.Format(time.RFC3339), Token: hex.EncodeToString(tok[:]),
			Renewed: now.Format(time.RFC3339Nano), TTLSeconds: opts.TTL.Seconds(), Host: host, PID: os.Getpid(),
			Generation: max(fenced, fromGen) + 1,
		}
		body, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		err = s.PutIfMatch(ctx, key, bytes.NewReader(body), int64(len(body)), from)
		if err == nil {
			return &Lease{Info: info, store: s, run: run, ttl: opts.TTL, now: opts.Now, renewed: now}, nil
		}
		if !errors.Is(err, ErrChanged) {
			return nil, fmt.Errorf("acquire lease of run %s: %w", run, err)
		}
		cur, curVersion, err := readLease(ctx, s, run)
		if errors.Is(err, ErrNotFound) {
			from, fromGen = "", 0
			continue // released between our create and our read
		}
		if err != nil {
			return nil, &LeaseHeldError{Run: run, msg: fmt.Sprintf("run %s: lease %s exists but cannot be read (%v)", run, key, err)}
		}
		if attempt > 0 {
			// Someone created it between our delete (or its release) and
			// our create: they won; we do not take over twice.
			held := heldError(run, key, cur, opts.Now())
			if tookOver {
				held.msg = fmt.Sprintf("run %s: another coordinator took the stale lease over first: %s", run, held.msg)
			}
			return nil, held
		}
		reason := staleReason(cur, opts.Now(), opts.ProcessAlive)
		if reason == "" {
			return nil, heldError(run, key, cur, opts.Now())
		}
		opts.Logger.Warn("taking over a stale run lease", "run", run, "key", key, "reason", reason,
			"old_holder", cur.Holder, "old_host", cur.Host, "old_pid", cur.PID, "old_renewed", cur.Renewed,
			"old_generation", cur.Generation, "new_holder", holder)
		// Replace only the version we judged stale: if it changed since
		// we read it, the swap fails and we look again.
		from, fromGen = curVersion, cur.Generation
		tookOver = true
	}
	// The lease vanished under us twice; not worth a loop.
	return nil, &LeaseHeldError{Run: run, msg: fmt.Sprintf("run %s: lease %s keeps changing; try again", run, key)}
}

// staleReason says why cur may be taken over, or "" if it may not.
func staleReason(cur LeaseInfo, now time.Time, alive func(string, int) bool) string {
	if renewed, exp, ok := cur.expires(); ok && exp.Before(now) {
		return fmt.Sprintf("not renewed for %s (TTL %s)", now.Sub(renewed).Round(100*time.Millisecond), cur.ttl())
	}
	if cur.Host != "" && cur.PID > 0 && !alive(cur.Host, cur.PID) {
		return fmt.Sprintf("process %d on host %s is gone", cur.PID, cur.Host)
	}
	return ""
}

// heldError describes cur as a live lease held by someone else.
func heldError(run, key string, cur LeaseInfo, now time.Time) *LeaseHeldError {
	e := &LeaseHeldError{Run: run, Holder: cur}
	who := fmt.Sprintf("run %s is held by %q", run, cur.Holder)
	if cur.Host != "" || cur.PID > 0 {
		who += fmt.Sprintf(" (pid %d on host %s)", cur.PID, cur.Host)
	}
	renewed, exp, ok := cur.expires()
	if !ok {
		e.msg = fmt.Sprintf("%s since %s; the lease %s has no expiry: remove it (sbtrain ckpt unlock) only if that holder is dead", who, cur.Acquired, key)
		return e
	}
	e.Expires = exp
	e.msg = fmt.Sprintf("%s, renewed %s ago, expires in %s", who,
		now.Sub(renewed).Round(100*time.Millisecond), exp.Sub(now).Round(100*time.Millisecond))
	return e
}

// ReadLease returns the current lease of run; ErrNotFound if none.
func ReadLease(ctx context.Context, s Store, run string) (LeaseInfo, error) {
	info, _, err := readLease(ctx, s, run)
	return info, err
}

// readLease is ReadLease with the object's version, for a swap.
func readLease(ctx context.Context, s Store, run string) (LeaseInfo, string, error) {
	if err := ValidateRunID(run); err != nil {
		return LeaseInfo{}, "", err
	}
	b, version, err := readSmallVersion(ctx, s, leaseKey(run), 64<<10)
	if err != nil {
		return LeaseInfo{}, "", err
	}
	var info LeaseInfo
	if err := strictUnmarshal(b, &info); err != nil {
		return LeaseInfo{}, "", fmt.Errorf("lease %s: %w", leaseKey(run), err)
	}
	return info, version, nil
}

// Generation is the lease's fencing token.
func (l *Lease) Generation() uint64 { return l.Info.Generation }

// Check says whether the lease may still be acted on: nil while it is
// held and was renewed within its TTL by this process's clock; otherwise
// an error wrapping ErrLeaseLost. A lease that lapsed stays unusable even
// if a later renewal would succeed: by then another process may have
// taken it over, and only a new AcquireLease (with a new generation) may
// act for the run again.
func (l *Lease) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lost != nil:
		return l.lost
	case l.released:
		return fmt.Errorf("lease of run %s was released: %w", l.run, ErrLeaseLost)
	}
	if since := l.now().Sub(l.renewed); since >= l.ttl {
		return fmt.Errorf("lease of run %s not renewed for %s, past its TTL %s: %w", l.run, since.Round(time.Millisecond), l.ttl, ErrLeaseLost)
	}
	return nil
}

// TTL is the lease's time to live.
func (l *Lease) TTL() time.Duration { return l.ttl }

// LastRenewed returns when the lease was last written by us (acquired or
// renewed), by the clock AcquireLease was given.
func (l *Lease) LastRenewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// Renew re-stamps the lease so it does not go stale. If the lease is no
// longer ours (taken over, broken by an operator, or released), the error
// wraps ErrLeaseLost and the holder must stop acting for the run; other
// errors (the store unreachable) leave it unknown, and the caller retries.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := leaseKey(l.run)
	if l.released {
		return fmt.Errorf("renew lease %s: already released: %w", key, ErrLeaseLost)
	}
	if l.lost != nil {
		return fmt.Errorf("renew lease %s: %w", key, l.lost)
	}
	cur, version, err := readLease(ctx, l.store, l.run)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("renew lease %s: it is gone (broken or taken over and released): %w", key, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", key, err)
	}
	if cur.Token != l.Info.Token {
		return fmt.Errorf("renew lease %s: now held by %q (pid %d on host %s): %w", key, cur.Holder, cur.PID, cur.Host, ErrLeaseLost)
	}
	now := l.now().UTC()
	cur.Renewed = now.Format(time.RFC3339Nano)
	body, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	// Swap from the version just read: a takeover between the read and
	// this write makes it fail instead of reviving our lease over theirs.
	err = l.store.PutIfMatch(ctx, key, bytes.NewReader(body), int64(len(body)), version)
	if errors.Is(err, ErrChanged) {
		holder := "someone else"
		if now, err := ReadLease(ctx, l.store, l.run); err == nil {
			holder = fmt.Sprintf("%q (pid %d on host %s)", now.Holder, now.PID, now.Host)
		}
		return fmt.Errorf("renew lease %s: changed while renewing, now held by %s: %w", key, holder, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", key, err)
	}
	l.renewed = now
	return nil
}

// Keep renews the lease every `every` (0: a third of the TTL) until ctx
// ends. If the lease is lost (Renew fails with ErrLeaseLost), or renewals
// keep failing until the TTL has passed since the last good one (others
// may then take the lease over), Keep calls lost once with an error
// wrapping ErrLeaseLost and returns. The caller owns the goroutine: run it
// as `go lease.Keep(ctx, 0, onLost)` and cancel ctx (then wait, if it must
// know Keep has stopped) before Release.
func (l *Lease) Keep(ctx context.Context, every time.Duration, lost func(error)) {
	if every <= 0 {
		every = l.ttl / 3
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A renewal that hangs past the TTL is as good as failed.
		rctx, cancel := context.WithTimeout(ctx, l.ttl)
		err := l.Renew(rctx)
		cancel()
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLeaseLost):
			l.markLost(err)
			if lost != nil {
				lost(err)
			}
			return
		}
		if since := l.now().Sub(l.LastRenewed()); since >= l.ttl {
			err := fmt.Errorf("lease of run %s not renewed for %s, past its TTL %s (last error: %w): %w",
				l.run, since.Round(time.Millisecond), l.ttl, err, ErrLeaseLost)
			l.markLost(err)
			if lost != nil {
				lost(err)
			}
			return
		}
	}
}

func (l *Lease) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = err
	}
}

// Release gives the lease up, if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := leaseKey(l.run)
	cur, err := ReadLease(ctx, l.store, l.run)
	if errors.Is(err, ErrNotFound) {
		l.released = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("release lease %s: %w", key, err)
	}
	if cur.Token != l.Info.Token {
		l.released = true
		return fmt.Errorf("release lease %s: now held by %q, not us; leaving it", key, cur.Holder)
	}
	if err := l.store.Delete(ctx, key); err != nil {
		return fmt.Errorf("release lease %s: %w", key, err)
	}
	l.released = true
	return nil
}

// LeaseLive says whether info, run's lease read at now, still belongs to a working
// holder: not stale by its TTL, and its process not known to be gone (see
// LeaseOptions.ProcessAlive; nil: this host's process table). When it is
// live, why says by whom and until when; otherwise why says why it is
// stale.
func LeaseLive(run string, info LeaseInfo, now time.Time, alive func(host string, pid int) bool) (live bool, why string) {
	if alive == nil {
		alive = processAlive
	}
	if reason := staleReason(info, now, alive); reason != "" {
		return false, reason
	}
	return true, heldError(run, leaseKey(run), info, now).msg
}

// BreakLease removes run's lease whoever holds it (operators only).
func BreakLease(ctx context.Context, s Store, run string) error {
	if err := ValidateRunID(run); err != nil {
		return err
	}
	return s.Delete(ctx, leaseKey(run))
}
