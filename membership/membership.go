// Package membership owns gossip membership of a run: who is alive, with
// what addresses, via hashicorp/memberlist.
//
// Every process of a run (the coordinator and each trainer) starts a Node
// that states its role and addresses in a small Meta; trainers join with the
// coordinator as seed. A Node reports peers going Up, Down and changing meta
// on a channel and answers who is a member now. It decides nothing: the
// coordinator turns these events into plans.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/sbtrain/sbtrain/internal/runauth"
)

// Defaults. The failure-detection timings are tuned so that a process killed
// without leaving is declared dead within about 2-3 s on a LAN or loopback:
// a peer is probed every few ProbeIntervals, and with SuspicionMult 2 it is
// suspect for only 2*ProbeInterval (times log10 of the cluster size, for
// clusters over 10) before it is declared dead.
const (
	DefaultProbeInterval  = 250 * time.Millisecond
	DefaultProbeTimeout   = 200 * time.Millisecond
	DefaultSuspicionMult  = 2
	DefaultGossipInterval = 100 * time.Millisecond
	DefaultTCPTimeout     = time.Second
	// DefaultJoinTimeout bounds Join when its context has no deadline.
	DefaultJoinTimeout = 5 * time.Second
	// DefaultLeaveTimeout bounds the leave broadcast in Close (and the
	// meta broadcast in UpdateMeta) when the context has no deadline. The
	// broadcast normally goes out within a few GossipIntervals.
	DefaultLeaveTimeout = time.Second

	eventBuffer = 64
)

// Options configure a Node.
type Options struct {
	// Name is the node's unique name in the cluster; empty means the host
	// name.
	Name string
	// BindAddr is host:port to listen on, TCP and UDP on the same port. The
	// host must be an IP (empty means all interfaces); port 0 picks one
	// that is free for both protocols.
	BindAddr string
	// AdvertiseAddr is host:port peers should use to reach this node, when
	// it differs from BindAddr (a wildcard bind, NAT). Empty: derived from
	// the bind address.
	AdvertiseAddr string
	// Meta is what this node tells the others; it must validate.
	Meta Meta
	// Logger receives the node's own logs and memberlist's (at Debug);
	// nil means slog.Default().
	Logger *slog.Logger

	// Secret, when set, encrypts and authenticates every gossip packet and
	// stream with a key derived from it (AES-GCM, memberlist's SecretKey)
	// and labels them with the run (memberlist's Label): a node without
	// the secret, or of another run, is neither heard nor answered. Nil is
	// for runs without a secret, which must bind loopback only.
	Secret *runauth.Secret
	// Rejects logs the packets and streams refused for want of the label
	// or key; nil logs them with memberlist's other lines, at Debug.
	Rejects *runauth.Rejects

	// Transport, if set, carries the node's packets and streams instead
	// of the UDP and TCP sockets at BindAddr (which is then not bound),
	// and names the address the node advertises. Tests use it to run many
	// nodes in one process and to fault the network between them.
	Transport memberlist.NodeAwareTransport

	// Failure detection and gossip; zero means the Default above.
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	TCPTimeout     time.Duration
}

// Peer is a member of the cluster as gossip knows it. Addr is its gossip
// address (host:port); the addresses to talk to it on are in Meta.
type Peer struct {
	Name string
	Addr string
	Meta Meta
}

// Node is this process's membership in a run's gossip cluster.
type Node struct {
	ml   *memberlist.Memberlist
	name string
	run  string
	addr string
	log  *slog.Logger

	q      *queue
	events chan Event
	stop   chan struct{}
	done   sync.WaitGroup // the event pump
	joins  sync.WaitGroup // Join attempts still talking to a seed

	mu     sync.Mutex
	meta   []byte               // encoded own meta, what NodeMeta hands out
	peers  map[string]peerState // everyone alive, self included
	closed bool
}

// peerState is a live member as last reported by memberlist; err is set
// when its meta is unusable.
type peerState struct {
	peer Peer
	err  error
}

// Start creates the node and starts listening. It does not contact anyone:
// a coordinator is then a one-node cluster the trainers Join.
func Start(ctx context.Context, opts Options) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("membership: start: %w", err)
	}
	meta, err := opts.Meta.Encode()
	if err != nil {
		return nil, fmt.Errorf("membership: start: %w", err)
	}
	name := opts.Name
	if name == "" {
		if name, err = os.Hostname(); err != nil || name == "" {
			return nil, fmt.Errorf("membership: start: no node name and no host name: %v", err)
		}
	}
	host, port, err := splitAddr(opts.BindAddr, "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("membership: start: bind address: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "membership", "node", name)

	n := &Node{
		name:   name,
		run:    opts.Meta.Run,
		log:    logger,
		q:      newQueue(),
		events: make(chan Event, eventBuffer),
		stop:   make(chan struct{}),
		meta:   meta,
		peers:  make(map[string]peerState),
	}

	conf := memberlist.DefaultLocalConfig()
	conf.Name = name
	// memberlist binds TCP and UDP to the same port; with port 0 it takes
	// the kernel's TCP pick and retries (up to 10 times) when that port is
	// taken for UDP, so the port is free for both.
	conf.BindAddr, conf.BindPort = host, port
	conf.AdvertisePort = port
	if opts.AdvertiseAddr != "" {
		ahost, aport, err := splitAddr(opts.AdvertiseAddr, "")
		if err != nil || ahost == "" || aport == 0 {
			return nil, fmt.Errorf("membership: start: advertise address %q: want ip:port", opts.AdvertiseAddr)
		}
		conf.AdvertiseAddr, conf.AdvertisePort = ahost, aport
	}
	conf.ProbeInterval = orDuration(opts.ProbeInterval, DefaultProbeInterval)
	conf.ProbeTimeout = orDuration(opts.ProbeTimeout, DefaultProbeTimeout)
	conf.SuspicionMult = DefaultSuspicionMult
	if opts.SuspicionMult > 0 {
		conf.SuspicionMult = opts.SuspicionMult
	}
	conf.GossipInterval = orDuration(opts.GossipInterval, DefaultGossipInterval)
	conf.TCPTimeout = orDuration(opts.TCPTimeout, DefaultTCPTimeout)
	// Full-state syncs are cheap for clusters of tens of nodes and heal any
	// view that gossip missed.
	conf.PushPullInterval = 5 * time.Second
	// A restarted process may reuse its name at a new address (a pod with a
	// stable name gets a new IP, a process a new port): once the old one is
	// declared dead its name is free, instead of being refused as a
	// conflict until gossip forgets the dead node. (A restart before the
	// old one is declared dead is refused until then and heals at the next
	// push/pull.)
	conf.DeadNodeReclaimTime = time.Nanosecond
	// memberlist LZW-compresses every packet by default, and each
	// compression allocates a fresh 64 KiB table: with 129 nodes on one
	// machine that was a third of the gossip's CPU and most of its garbage,
	// for packets that fit a datagram anyway. Peers still decode
	// compressed packets from nodes that send them.
	conf.EnableCompression = false
	conf.Delegate = delegate{n}
	conf.Events = delegate{n}
	conf.Logger = newStdLogger(logger, opts.Rejects)
	if opts.Secret != nil {
		conf.SecretKey = opts.Secret.GossipKey()
		conf.Label = runauth.GossipLabel(opts.Meta.Run)
		conf.GossipVerifyIncoming, conf.GossipVerifyOutgoing = true, true
	} else if err := runauth.CheckBind(nil, "gossip address", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
		return nil, fmt.Errorf("membership: start: %w", err)
	}
	if opts.Transport != nil {
		conf.Transport = opts.Transport
	}

	ml, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("membership: start %s on %s: %w", name, opts.BindAddr, err)
	}
	n.ml = ml
	self := ml.LocalNode()
	n.addr = self.Address()

	n.done.Add(1)
	go func() {
		defer n.done.Done()
		n.q.pump(n.events, n.stop)
	}()
	logger.Info("membership started", "addr", n.addr, "role", opts.Meta.Role)
	return n, nil
}

// Name is this node's name in the cluster.
func (n *Node) Name() string { return n.name }

// Addr is the gossip address peers reach this node on (host:port, with the
// port actually bound): what trainers are given as seed.
func (n *Node) Addr() string { return n.addr }

// Events delivers membership changes, this node's own Up included. The
// channel is buffered and closed by Close; events queue (coalesced per
// peer) while nobody reads.
func (n *Node) Events() <-chan Event { return n.events }

// Join contacts the seeds (host:port each) and merges their view of the
// cluster. It succeeds if any seed answers, and gives up at ctx's deadline
// (DefaultJoinTimeout if it has none); it makes one attempt per seed, so a
// caller that may start before its seed retries. The error names every seed
// and why it failed.
func (n *Node) Join(ctx context.Context, seeds []string) error {
	if len(seeds) == 0 {
		return errors.New("membership: join: no seeds")
	}
	for _, s := range seeds {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return fmt.Errorf("membership: join: seed %q: want host:port", s)
		}
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errors.New("membership: join: node is closed")
	}
	// Counted under mu so that Close, which sets closed under mu, waits
	// for every attempt that got this far.
	n.joins.Add(len(seeds))
	n.mu.Unlock()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultJoinTimeout)
		defer cancel()
	}
	start := time.Now()
	type result struct {
		seed string
		err  error
	}
	// memberlist's Join cannot be cancelled; each attempt is bounded by
	// TCPTimeout and Close waits for it, so returning early leaks nothing.
	results := make(chan result, len(seeds))
	for _, s := range seeds {
		go func() {
			defer n.joins.Done()
			_, err := n.ml.Join([]string{s})
			results <- result{s, flatten(err)}
		}()
	}
	var errs []error
	answered := make(map[string]bool, len(seeds))
	for range seeds {
		select {
		case r := <-results:
			answered[r.seed] = true
			if r.err == nil {
				n.log.Info("joined cluster", "seed", r.seed, "members", n.ml.NumMembers(), "took", time.Since(start))
				return nil
			}
			errs = append(errs, fmt.Errorf("seed %s: %w", r.seed, r.err))
		case <-ctx.Done():
			for _, s := range seeds {
				if !answered[s] {
					errs = append(errs, fmt.Errorf("seed %s: no answer after %v: %w", s, time.Since(start).Round(time.Millisecond), ctx.Err()))
				}
			}
			return fmt.Errorf("membership: join: %w", errors.Join(errs...))
		}
	}
	return fmt.Errorf("membership: join: %w", errors.Join(errs...))
}

// Members lists the live members whose meta is usable, this node included,
// sorted by name.
func (n *Node) Members() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, 0, len(n.peers))
	for _, s := range n.peers {
		if s.err == nil {
			out = append(out, s.peer)
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Strangers lists the live members whose meta names another run, sorted
// by name: they are no members, but a node that finds no peer of its own
// run can say why.
func (n *Node) Strangers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Peer
	for _, s := range n.peers {
		if s.err != nil && s.peer.Meta.Run != "" && s.peer.Meta.Run != n.run {
			out = append(out, s.peer)
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Find returns a live member with the given role, this node included (the
// first by name, so every node picks the same one when there are several).
func (n *Node) Find(role string) (Peer, bool) {
	for _, p := range n.Members() {
		if p.Meta.Role == role {
			return p, true
		}
	}
	return Peer{}, false
}

// UpdateMeta changes what this node tells the others and waits (bounded by
// ctx, or DefaultLeaveTimeout) for the change to be gossiped.
func (n *Node) UpdateMeta(ctx context.Context, m Meta) error {
	b, err := m.Encode()
	if err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	if m.Run != n.run {
		return fmt.Errorf("membership: update meta: run %q cannot change to %q", n.run, m.Run)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errors.New("membership: update meta: node is closed")
	}
	n.meta = b
	n.mu.Unlock()
	if err := n.ml.UpdateNode(timeoutOf(ctx, DefaultLeaveTimeout)); err != nil {
		return fmt.Errorf("membership: update meta: %w", err)
	}
	return nil
}

// Close leaves the cluster (the others see this node Down at once instead
// of after failure detection), shuts memberlist down, closes Events and
// waits for the node's goroutines. The leave broadcast is bounded by ctx's
// deadline (DefaultLeaveTimeout if none). A broadcast that did not go out in
// time is logged, not returned: it happens when the last peers leave at the
// same moment (there is nobody left to tell), and otherwise the others
// detect the failure within seconds anyway. Closing twice is a no-op.
//
// memberlist's probe in flight at shutdown may outlive Close by up to a
// ProbeInterval; nothing it does reaches this Node any more.
func (n *Node) Close(ctx context.Context) error {
	return n.close(ctx, true)
}

// close with leave false stops without telling anyone, as a killed process
// would: the others must detect the failure.
func (n *Node) close(ctx context.Context, leave bool) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()

	if leave {
		t0 := time.Now()
		if err := n.ml.Leave(timeoutOf(ctx, DefaultLeaveTimeout)); err != nil {
			n.log.Info("leave broadcast not confirmed; peers will detect the failure", "err", err, "waited", time.Since(t0))
		}
	}
	err := n.ml.Shutdown()
	n.q.close()
	close(n.stop)
	n.done.Wait()
	n.joins.Wait()
	n.log.Debug("membership closed", "left", leave)
	if err != nil {
		return fmt.Errorf("membership: close %s: shutdown: %w", n.name, err)
	}
	return nil
}

// observe records a callback from memberlist and queues its event. It runs
// under memberlist's node lock: it copies what it needs and never blocks.
func (n *Node) observe(kind EventKind, mn *memberlist.Node) {
	p := Peer{Name: mn.Name, Addr: mn.Address()}
	var err error
	if kind != Down {
		p.Meta, err = DecodeMeta(mn.Meta)
		if err == nil && p.Meta.Run != n.run {
			err = fmt.Errorf("peer is in run %q, this node in run %q", p.Meta.Run, n.run)
		}
		if err != nil {
			err = fmt.Errorf("membership: peer %s at %s: %w", p.Name, p.Addr, err)
		}
	}
	n.mu.Lock()
	if n.closed {
		// Leaving marks this node itself dead, and memberlist timers can
		// fire after shutdown: a closed node reports nothing.
		n.mu.Unlock()
		return
	}
	if kind == Down {
		if s, ok := n.peers[p.Name]; ok {
			p.Meta = s.peer.Meta
		}
		delete(n.peers, p.Name)
	} else {
		n.peers[p.Name] = peerState{peer: p, err: err}
	}
	n.mu.Unlock()

	if err != nil {
		n.log.Warn("peer meta unusable", "peer", p.Name, "addr", p.Addr, "err", err)
	} else {
		n.log.Debug("peer "+kind.String(), "peer", p.Name, "addr", p.Addr, "role", p.Meta.Role)
	}
	n.q.push(Event{Kind: kind, Peer: p, Err: err})
}

// delegate implements memberlist's Delegate and EventDelegate, kept off
// Node so that Node's method set is only its own API.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if len(d.n.meta) > limit {
		// Cannot happen: Encode enforces MaxMetaSize, memberlist's limit.
		return nil
	}
	return slices.Clone(d.n.meta)
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(mn *memberlist.Node)   { d.n.observe(Up, mn) }
func (d delegate) NotifyLeave(mn *memberlist.Node)  { d.n.observe(Down, mn) }
func (d delegate) NotifyUpdate(mn *memberlist.Node) { d.n.observe(Update, mn) }

// splitAddr parses host:port with an IP (or empty) host.
func splitAddr(addr, defaultHost string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want ip:port: %w", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port %q", addr, ps)
	}
	if host == "" {
		host = defaultHost
	} else if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("%q: host must be an IP address", addr)
	}
	return host, port, nil
}

// flatten turns memberlist's multierror ("1 error occurred:\n\t* ...")
// into a one-line error, keeping the wrapped errors for errors.Is.
func flatten(err error) error {
	if err == nil {
		return nil
	}
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		ws := multi.WrappedErrors()
		if len(ws) == 1 {
			return ws[0]
		}
		if len(ws) > 1 {
			msgs := make([]string, len(ws))
			for i, w := range ws {
				msgs[i] = w.Error()
			}
			return fmt.Errorf("%s", strings.Join(msgs, "; "))
		}
	}
	return err
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// timeoutOf is what is left of ctx's deadline, or def without one.
func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return def
	}
	if left := time.Until(dl); left > 0 {
		return left
	}
	// memberlist reads 0 as "no timeout"; keep it bounded.
	return time.Millisecond
}
