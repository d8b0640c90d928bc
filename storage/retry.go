package storage

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff is capped exponential backoff with jitter for retrying a store
// that fails: the n-th wait is drawn uniformly from [d/2, d] with
// d = min(Max, Base·2^n), so that processes retrying one outage spread out
// instead of hammering the store in step. The zero value waits 200 ms,
// doubling up to 5 s.
type Backoff struct {
	Base, Max time.Duration
	n         int
}

// Next is the wait before the next try.
func (b *Backoff) Next() time.Duration {
	base, ceil := b.Base, b.Max
	if base <= 0 {
		base = 200 * time.Millisecond
	}
	if ceil <= 0 {
		ceil = 5 * time.Second
	}
	d := base
	for i := 0; i < b.n && d < ceil; i++ {
		d *= 2
	}
	d = min(d, ceil)
	b.n++
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Reset starts the next outage from Base again.
func (b *Backoff) Reset() { b.n = 0 }

// Outage reports a run of failures of one operation in two log lines, one
// when it starts and one when it ends with the number of tries and how
// long it lasted, instead of a line per try. It is safe for concurrent
// use.
type Outage struct {
	log  *slog.Logger
	what string

	mu    sync.Mutex
	start time.Time // zero: no outage
	tries int
	last  error
}

// NewOutage reports failures of what (e.g. "checkpoint write") to log.
func NewOutage(log *slog.Logger, what string) *Outage {
	if log == nil {
		log = slog.Default()
	}
	return &Outage{log: log, what: what}
}

// Failed records a failed try and says how many there were in this
// outage and since when it lasts; only the first is logged.
func (o *Outage) Failed(err error) (tries int, lasted time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if o.start.IsZero() {
		o.start = now
		o.log.Warn("storage failing", "op", o.what, "err", err)
	}
	o.tries++
	o.last = err
	return o.tries, now.Sub(o.start)
}

// Ended records a success: if an outage was under way, it logs its end
// with the count of failed tries and its length.
func (o *Outage) Ended() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.start.IsZero() {
		return
	}
	o.log.Info("storage back", "op", o.what, "failed_tries", o.tries,
		"lasted", time.Since(o.start).Round(time.Millisecond), "last_err", o.last)
	o.start, o.tries, o.last = time.Time{}, 0, nil
}

// Last is the newest failure of the outage under way, nil if none.
func (o *Outage) Last() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}
