package membership

import "sync"

// EventKind says what happened to a peer.
type EventKind int

const (
	// Up: the peer joined (or came back after being Down).
	Up EventKind = iota + 1
	// Down: the peer left or was declared dead.
	Down
	// Update: the peer's meta changed.
	Update
)

func (k EventKind) String() string {
	switch k {
	case Up:
		return "up"
	case Down:
		return "down"
	case Update:
		return "update"
	}
	return "unknown"
}

// Event is one change in membership. Err, when set, says the peer's meta is
// unusable (malformed, or the peer belongs to another run): the peer is then
// not among Members and a consumer should treat it as absent. Peer.Meta holds
// whatever could be decoded.
type Event struct {
	Kind EventKind
	Peer Peer
	Err  error
}

// queue sits between memberlist's callbacks, which must never block (they
// run under memberlist's node lock), and the consumer's channel. It holds at
// most two events per peer name: repeated ups and updates collapse into the
// newest, and a Down collapses the ups before it, but a Down followed by an
// Up is kept as two events so that a restart stays visible.
type queue struct {
	mu      sync.Mutex
	pending []Event
	closed  bool
	wake    chan struct{}
}

func newQueue() *queue {
	return &queue{wake: make(chan struct{}, 1)}
}

func (q *queue) push(e Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.pending = coalesce(q.pending, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// coalesce adds e to pending, merging it with what is already queued for
// the same peer.
func coalesce(pending []Event, e Event) []Event {
	name := e.Peer.Name
	last, prev := -1, -1
	for i := len(pending) - 1; i >= 0; i-- {
		if pending[i].Peer.Name != name {
			continue
		}
		if last < 0 {
			last = i
		} else {
			prev = i
			break
		}
	}
	if last < 0 {
		return append(pending, e)
	}
	l := pending[last]
	switch {
	case l.Kind == Down && e.Kind == Down:
		return pending
	case l.Kind == Down:
		// A peer back after Down: both events matter.
		return append(pending, e)
	case e.Kind == Down:
		if prev >= 0 && pending[prev].Kind == Down {
			// Down, Up, Down: the consumer never saw the Up.
			return append(pending[:last], pending[last+1:]...)
		}
		pending[last] = e
		return pending
	default:
		// Up or Update on top of Up or Update: newest meta wins, and an
		// Up the consumer has not seen stays an Up.
		if l.Kind == Up {
			e.Kind = Up
		}
		pending[last] = e
		return pending
	}
}

// pop takes the oldest pending event.
func (q *queue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return Event{}, false
	}
	e := q.pending[0]
	q.pending[0] = Event{}
	q.pending = q.pending[1:]
	return e, true
}

// close drops pending events and refuses new ones: callbacks can still
// arrive from memberlist timers after shutdown.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.pending = nil
	q.mu.Unlock()
}

// pump moves events from q to out until stop closes, then closes out.
func (q *queue) pump(out chan<- Event, stop <-chan struct{}) {
	defer close(out)
	for {
		e, ok := q.pop()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-stop:
				return
			}
		}
		select {
		case out <- e:
		case <-stop:
			return
		}
	}
}
