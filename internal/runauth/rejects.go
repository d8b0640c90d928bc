package runauth

import (
	"log/slog"
	"sync"
	"time"
)

// RejectEvery is the longest a channel's refusals go unlogged: the first
// refusal of a channel is logged at once, later ones at most once per
// RejectEvery with how many were refused since the last line, so a forger
// hammering a port cannot flood the log.
const RejectEvery = 10 * time.Second

// Rejects logs refused attempts, rate-limited per channel. Safe for
// concurrent use; a nil *Rejects logs nothing.
type Rejects struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	chans map[string]*rejectState
}

type rejectState struct {
	last    time.Time // of the last line logged
	pending int       // refusals since then, not logged
	total   int
}

// NewRejects logs to log at Warn; every <= 0 means RejectEvery.
func NewRejects(log *slog.Logger, every time.Duration) *Rejects {
	if every <= 0 {
		every = RejectEvery
	}
	if log == nil {
		log = slog.Default()
	}
	return &Rejects{log: log, every: every, now: time.Now, chans: map[string]*rejectState{}}
}

// Refused records one refused attempt on channel (grpc, gossip, ring,
// dashboard) from the remote address from, for the reason why.
func (r *Rejects) Refused(channel, from, why string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	st := r.chans[channel]
	if st == nil {
		st = &rejectState{}
		r.chans[channel] = st
	}
	st.total++
	now := r.now()
	if !st.last.IsZero() && now.Sub(st.last) < r.every {
		st.pending++
		r.mu.Unlock()
		return
	}
	n := st.pending + 1
	st.last, st.pending = now, 0
	total := st.total
	r.mu.Unlock()
	r.log.Warn("refused an unauthenticated attempt", "channel", channel, "from", from, "why", why,
		"refused", n, "refused_total", total, "next_line_after", r.every.String())
}

// Total is how many attempts on channel were refused so far.
func (r *Rejects) Total(channel string) int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.chans[channel]; st != nil {
		return st.total
	}
	return 0
}
