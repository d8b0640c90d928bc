package allreduce

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Transport is how members reach each other: a listener for this member and
// a dialer to peers. TCP is the network implementation, *MemNetwork the
// in-memory one with fault injection. Frames and handshakes are the ring's
// business, so a Transport only moves bytes.
type Transport interface {
	Listen(addr string) (net.Listener, error)
	// Dial connects from the endpoint at local to the one at remote.
	Dial(ctx context.Context, local, remote string) (net.Conn, error)
}

// TCP is the network transport. Nagle is off (TCP_NODELAY, Go's default,
// set again explicitly) so that small per-step messages leave at once.
// Socket buffers are left to the kernel's autotuning unless set: a fixed
// SO_RCVBUF turns autotuning off and on Linux is capped by net.core.rmem_max.
type TCP struct {
	ReadBuffer  int // bytes; 0 keeps the kernel's autotuned size
	WriteBuffer int // bytes; 0 keeps the kernel's autotuned size
}

func (t TCP) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tcpListener{ln, t}, nil
}

func (t TCP) Dial(ctx context.Context, _, remote string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", remote)
	if err != nil {
		return nil, err
	}
	if err := t.tune(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (t TCP) tune(c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	if err := tc.SetNoDelay(true); err != nil {
		return fmt.Errorf("set TCP_NODELAY: %w", err)
	}
	if t.ReadBuffer > 0 {
		if err := tc.SetReadBuffer(t.ReadBuffer); err != nil {
			return fmt.Errorf("set read buffer %d: %w", t.ReadBuffer, err)
		}
	}
	if t.WriteBuffer > 0 {
		if err := tc.SetWriteBuffer(t.WriteBuffer); err != nil {
			return fmt.Errorf("set write buffer %d: %w", t.WriteBuffer, err)
		}
	}
	return nil
}

type tcpListener struct {
	net.Listener
	t TCP
}

func (l tcpListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := l.t.tune(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoint is one member's presence on a Transport: it listens, performs the
// handshake of incoming connections and hands each to the ring (run,
// generation, rank) it was meant for. An endpoint outlives rings: a trainer
// listens once, reports Addr to its coordinator, and builds one ring per
// generation on it.
type Endpoint struct {
	t                Transport
	ln               net.Listener
	addr             string
	handshakeTimeout time.Duration
	log              *slog.Logger
	key              []byte // nil: links are not authenticated
	lead             uint64
	refused          func(from, why string)

	mu       sync.Mutex
	closed   bool
	changed  chan struct{} // closed and replaced whenever pending or closed changes
	pending  []*incoming
	inflight map[net.Conn]struct{} // connections still in their handshake
	rings    map[*Ring]struct{}
	newest   map[string]uint64 // per run: the newest generation of a ring built here
	observed map[string]uint64 // per run: the newest generation Observe was told of

	wg sync.WaitGroup
}

// incoming is a connection whose hello has been read and not yet answered.
type incoming struct {
	conn  net.Conn
	br    *bufio.Reader
	hello hello
	// The nonces of an authenticated handshake: ours (the challenge) and
	// the dialer's; the reply is bound to both.
	ours, theirs []byte
}

// maxPending bounds connections waiting for their ring, so a flood of
// handshakes cannot grow memory without limit.
const maxPending = 256

// DefaultGenerationLead is how far above the newest generation an
// endpoint knows of (its rings' and Observe's) a handshake's generation may
// be: a coordinator restarted after an hour starts about 2^32 higher (it
// counts from unix seconds << 20), and a forged generation near 2^64 is
// refused instead of breaking every later ring of the run.
const DefaultGenerationLead = 1 << 40

// ListenOptions configure an endpoint.
type ListenOptions struct {
	// HandshakeTimeout bounds how long an incoming connection may take to
	// authenticate and send its hello; 0 means 10s.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
	// Key, when set, authenticates every link: the acceptor sends a fresh
	// nonce, the dialer answers with its hello, a nonce of its own and
	// HMAC-SHA256(Key) over both nonces and the hello, and the acceptor's
	// reply carries the HMAC over both nonces and the reply. A hello
	// without the right MAC is dropped unanswered before any of its fields
	// is looked at, and neither side can be replayed: each MAC covers the
	// other side's fresh nonce. Every member of a ring needs the same key.
	//
	// Frames are not authenticated one by one: once both ends have proved
	// the key, forging a frame means injecting into an established TCP
	// connection, which takes an attacker on the path, and one there can
	// cut the link anyway (a failure the run recovers from). A MAC over
	// every payload byte would cost the data plane its speed for no
	// protection against that attacker's reset.
	Key []byte
	// MaxGenerationLead bounds a hello's generation above the newest one
	// the endpoint knows for its run; 0 means DefaultGenerationLead.
	MaxGenerationLead uint64
	// Refused, if set, is told of every refused handshake (unauthenticated,
	// malformed or of an implausible generation) instead of a Warn per
	// connection, so a caller can rate-limit what a forger makes it log.
	Refused func(from, why string)
}

// Listen starts an endpoint on addr ("127.0.0.1:0" picks a port; Addr says
// which) without authentication. handshakeTimeout bounds how long an
// incoming connection may take to send its hello; 0 means 10s.
func Listen(t Transport, addr string, handshakeTimeout time.Duration, log *slog.Logger) (*Endpoint, error) {
	return ListenWith(t, addr, ListenOptions{HandshakeTimeout: handshakeTimeout, Logger: log})
}

// ListenWith starts an endpoint on addr with the given options.
func ListenWith(t Transport, addr string, o ListenOptions) (*Endpoint, error) {
	if t == nil {
		return nil, errors.New("allreduce: listen: nil Transport")
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxGenerationLead == 0 {
		o.MaxGenerationLead = DefaultGenerationLead
	}
	if o.Key != nil && len(o.Key) < 16 {
		return nil, fmt.Errorf("allreduce: listen: key of %d bytes, want at least 16", len(o.Key))
	}
	ln, err := t.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("allreduce: listen on %q: %w", addr, err)
	}
	ep := &Endpoint{
		t: t, ln: ln, addr: ln.Addr().String(), handshakeTimeout: o.HandshakeTimeout, log: o.Logger,
		key: bytes.Clone(o.Key), lead: o.MaxGenerationLead, refused: o.Refused,
		changed: make(chan struct{}), inflight: map[net.Conn]struct{}{},
		rings: map[*Ring]struct{}{}, newest: map[string]uint64{}, observed: map[string]uint64{},
	}
	ep.wg.Add(1)
	go ep.acceptLoop()
	return ep, nil
}

// Addr is the bound address to give to peers.
func (ep *Endpoint) Addr() string { return ep.addr }

// Observe tells the endpoint the newest generation of run its owner knows
// of (a trainer calls it for every plan), which moves the window of
// generations a handshake may carry before a ring of it is built here.
func (ep *Endpoint) Observe(run string, generation uint64) {
	ep.mu.Lock()
	if generation > ep.observed[run] {
		ep.observed[run] = generation
	}
	ep.mu.Unlock()
}

// refuse reports a refused handshake.
func (ep *Endpoint) refuse(c net.Conn, why string) {
	if ep.refused != nil {
		ep.refused(c.RemoteAddr().String(), why)
		return
	}
	ep.log.Warn("allreduce: refused a handshake", "remote", c.RemoteAddr(), "why", why)
}

// Close stops listening, closes unclaimed connections and waits for the
// endpoint's goroutines. Rings built on it keep their connections; close
// them separately.
func (ep *Endpoint) Close() error {
	ep.mu.Lock()
	if ep.closed {
		ep.mu.Unlock()
		return nil
	}
	ep.closed = true
	for _, in := range ep.pending {
		in.conn.Close()
	}
	ep.pending = nil
	for c := range ep.inflight {
		c.Close()
	}
	ep.notifyLocked()
	ep.mu.Unlock()
	err := ep.ln.Close()
	ep.wg.Wait()
	return err
}

func (ep *Endpoint) notifyLocked() {
	close(ep.changed)
	ep.changed = make(chan struct{})
}

func (ep *Endpoint) acceptLoop() {
	defer ep.wg.Done()
	for {
		c, err := ep.ln.Accept()
		if err != nil {
			ep.mu.Lock()
			closed := ep.closed
			ep.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Accept errors such as EMFILE are transient: back off briefly
			// rather than spin or give up the endpoint.
			ep.log.Warn("allreduce: accept failed", "addr", ep.addr, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ep.mu.Lock()
		if ep.closed {
			ep.mu.Unlock()
			c.Close()
			return
		}
		ep.inflight[c] = struct{}{}
		ep.wg.Add(1)
		ep.mu.Unlock()
		go ep.readHello(c)
	}
}

// readHello reads one hello under the handshake timeout and files the
// connection: stale generations are refused at once, newer ones warn the
// rings of that run, the rest wait for their ring to claim them.
func (ep *Endpoint) readHello(c net.Conn) {
	defer ep.wg.Done()
	c.SetDeadline(time.Now().Add(ep.handshakeTimeout))
	br := bufio.NewReaderSize(c, 64<<10)
	in := &incoming{conn: c, br: br}
	h, err := ep.readAuthHello(in)
	if err != nil {
		ep.mu.Lock()
		delete(ep.inflight, c)
		closed := ep.closed
		ep.mu.Unlock()
		if !closed && !errors.Is(err, io.EOF) {
			ep.refuse(c, err.Error())
		}
		c.Close()
		return
	}
	in.hello = h
	ep.mu.Lock()
	delete(ep.inflight, c)
	if ep.closed {
		ep.mu.Unlock()
		c.Close()
		return
	}
	newest, ok := ep.newest[h.run]
	if base := max(newest, ep.observed[h.run]); base > 0 && h.generation > base && h.generation-base > ep.lead {
		ep.mu.Unlock()
		ep.refuse(c, fmt.Sprintf("generation %d of run %q is implausibly far ahead of this endpoint's %d", h.generation, h.run, base))
		c.Close()
		return
	}
	if ok && h.generation < newest {
		ep.mu.Unlock()
		reply := hello{status: statusStale, run: h.run, generation: newest, msg: fmt.Sprintf("generation %d is stale, endpoint is at %d", h.generation, newest)}
		ep.writeReply(in, &reply)
		c.Close()
		return
	}
	if len(ep.pending) >= maxPending {
		ep.mu.Unlock()
		c.Close()
		return
	}
	ep.pending = append(ep.pending, in)
	var stale []*Ring
	for r := range ep.rings {
		if r.cfg.Run == h.run && r.cfg.Generation < h.generation {
			stale = append(stale, r)
		}
	}
	ep.notifyLocked()
	ep.mu.Unlock()
	for _, r := range stale {
		r.interrupt(&GenerationError{Rank: int(h.from), Member: Member{ID: h.fromID}, Ours: r.cfg.Generation, Theirs: h.generation})
	}
}

// register records a ring built on this endpoint; connections of older
// generations of its run are refused from now on.
func (ep *Endpoint) register(r *Ring) error {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.closed {
		return fmt.Errorf("allreduce: endpoint %s is closed", ep.addr)
	}
	if n, ok := ep.newest[r.cfg.Run]; !ok || r.cfg.Generation > n {
		ep.newest[r.cfg.Run] = r.cfg.Generation
	}
	kept := ep.pending[:0]
	for _, in := range ep.pending {
		if in.hello.run == r.cfg.Run && in.hello.generation < r.cfg.Generation {
			in.conn.Close()
			continue
		}
		kept = append(kept, in)
	}
	ep.pending = kept
	ep.rings[r] = struct{}{}
	return nil
}

func (ep *Endpoint) unregister(r *Ring) {
	ep.mu.Lock()
	delete(ep.rings, r)
	ep.mu.Unlock()
}

// newerPending reports a pending connection of the ring's run from a newer
// generation, if any.
func (ep *Endpoint) newerPending(r *Ring) *hello {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for _, in := range ep.pending {
		if in.hello.run == r.cfg.Run && in.hello.generation > r.cfg.Generation {
			h := in.hello
			return &h
		}
	}
	return nil
}

// claim waits until the connection from want.from to want.to for the
// ring's (run, generation) has arrived, answers its hello and returns it.
// A connection for the same ring slot that disagrees about anything is
// refused with a reason and reported as a mismatch.
func (ep *Endpoint) claim(ctx context.Context, want hello, deadline time.Time) (net.Conn, *bufio.Reader, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		ep.mu.Lock()
		if ep.closed {
			ep.mu.Unlock()
			return nil, nil, fmt.Errorf("endpoint %s: %w", ep.addr, ErrClosed)
		}
		for i, in := range ep.pending {
			h := in.hello
			if h.run != want.run || h.generation != want.generation || h.to != want.to {
				continue
			}
			ep.pending = append(ep.pending[:i], ep.pending[i+1:]...)
			ep.mu.Unlock()
			if diff := want.diff(&h); diff != "" {
				reply := want
				reply.status, reply.msg = statusMismatch, diff
				in.conn.SetWriteDeadline(deadline)
				ep.writeReply(in, &reply)
				in.conn.Close()
				return nil, nil, fmt.Errorf("%w: handshake from %s: %s", ErrMismatch, in.conn.RemoteAddr(), diff)
			}
			reply := want
			reply.status = statusOK
			in.conn.SetWriteDeadline(deadline)
			if err := ep.writeReply(in, &reply); err != nil {
				in.conn.Close()
				return nil, nil, fmt.Errorf("%w: answer handshake: %v", ErrDisconnected, err)
			}
			in.conn.SetDeadline(time.Time{})
			return in.conn, in.br, nil
		}
		ch := ep.changed
		ep.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return nil, nil, fmt.Errorf("%w: no connection from the previous member within the connect timeout", ErrTimeout)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// dial connects to the next member, retrying refused connections until the
// deadline (the peer may still be starting), and checks its answer.
func (ep *Endpoint) dial(ctx context.Context, addr string, want hello, deadline time.Time) (net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	backoff := 5 * time.Millisecond
	var c net.Conn
	for {
		var err error
		c, err = ep.t.Dial(ctx, ep.addr, addr)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w: dial %s: %v", ErrTimeout, addr, err)
			}
			return nil, ctx.Err()
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			continue
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.SetDeadline(deadline)
	br := bufio.NewReaderSize(c, 4096)
	msg := encodeHello(&want)
	var ours, theirs []byte
	if ep.key != nil {
		var err error
		if theirs, err = readChallenge(br); err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: handshake challenge from %s: %v", ErrDisconnected, addr, err)
		}
		ours = newNonce()
		msg = append(append(msg, ours...), authMAC(ep.key, labelHello, theirs, ours, msg)...)
	}
	if _, err := c.Write(msg); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: send handshake to %s: %v", ErrDisconnected, addr, err)
	}
	reply, raw, err := readHello(br)
	if err == nil && ep.key != nil {
		mac := make([]byte, macSize)
		if _, err = io.ReadFull(br, mac); err == nil && !hmac.Equal(mac, authMAC(ep.key, labelReply, ours, theirs, raw)) {
			c.Close()
			return nil, fmt.Errorf("%w: handshake answer from %s is not authenticated by the run's key", ErrMismatch, addr)
		}
	}
	if err != nil {
		c.Close()
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrMismatch) {
			return nil, fmt.Errorf("handshake answer from %s: %w", addr, err)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w: no handshake answer from %s: %v", ErrTimeout, addr, err)
		}
		return nil, fmt.Errorf("%w: handshake answer from %s: %v", ErrDisconnected, addr, err)
	}
	switch reply.status {
	case statusOK:
	case statusStale:
		c.Close()
		return nil, &GenerationError{Ours: want.generation, Theirs: reply.generation}
	default:
		c.Close()
		return nil, fmt.Errorf("%w: %s refused the handshake: %s", ErrMismatch, addr, reply.msg)
	}
	if diff := want.diff(&reply); diff != "" {
		c.Close()
		return nil, fmt.Errorf("%w: handshake answer from %s: %s", ErrMismatch, addr, diff)
	}
	if !stop() {
		c.Close()
		return nil, ctx.Err()
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

const (
	helloMagic   = 0x49484253 // "SBHI"
	helloVersion = 1
	maxHello     = 4096

	statusHello    = 0
	statusOK       = 1
	statusStale    = 2
	statusMismatch = 3
)

// hello is the handshake both ends of a ring link exchange: the dialer's
// view (from = its rank, to = the acceptor's), answered by the acceptor's
// own view of the same link and a status.
type hello struct {
	status     uint8
	run        string
	generation uint64
	from, to   uint32
	size       uint32
	fromID     string
	toID       string
	msg        string
}

// diff names the first field on which two views of the same link disagree.
func (h *hello) diff(o *hello) string {
	switch {
	case h.run != o.run:
		return fmt.Sprintf("run %q vs %q", h.run, o.run)
	case h.generation != o.generation:
		return fmt.Sprintf("generation %d vs %d", h.generation, o.generation)
	case h.size != o.size:
		return fmt.Sprintf("ring size %d vs %d", h.size, o.size)
	case h.from != o.from || h.to != o.to:
		return fmt.Sprintf("link rank %d->%d vs %d->%d", h.from, h.to, o.from, o.to)
	case h.fromID != o.fromID:
		return fmt.Sprintf("member %d ID %q vs %q", h.from, h.fromID, o.fromID)
	case h.toID != o.toID:
		return fmt.Sprintf("member %d ID %q vs %q", h.to, h.toID, o.toID)
	}
	return ""
}

// Authentication of the handshake (ListenOptions.Key).
const (
	challengeMagic = 0x48434253 // "SBCH"
	nonceSize      = 32
	macSize        = sha256.Size
	labelHello     = "sbtrain ring hello v1"
	labelReply     = "sbtrain ring reply v1"
)

func newNonce() []byte {
	b := make([]byte, nonceSize)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail on supported systems
	return b
}

// authMAC is HMAC-SHA256(key) over the label, the nonce of the side the
// MAC answers, the sender's nonce and the message.
func authMAC(key []byte, label string, answered, own, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(answered)
	m.Write(own)
	m.Write(msg)
	return m.Sum(nil)
}

func readChallenge(r io.Reader) ([]byte, error) {
	var b [4 + nonceSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, err
	}
	if m := binary.LittleEndian.Uint32(b[:]); m != challengeMagic {
		return nil, fmt.Errorf("%w: challenge magic %#x, want %#x (does the peer have the run's key?)", ErrMismatch, m, challengeMagic)
	}
	return bytes.Clone(b[4:]), nil
}

// readAuthHello reads the dialer's hello; with a key it first sends the
// challenge and checks the hello's MAC before anything else.
func (ep *Endpoint) readAuthHello(in *incoming) (hello, error) {
	if ep.key != nil {
		in.ours = newNonce()
		ch := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+nonceSize), challengeMagic)
		if _, err := in.conn.Write(append(ch, in.ours...)); err != nil {
			return hello{}, err
		}
	}
	h, raw, err := readHello(in.br)
	if err != nil || ep.key == nil {
		return h, err
	}
	trailer := make([]byte, nonceSize+macSize)
	if _, err := io.ReadFull(in.br, trailer); err != nil {
		return h, fmt.Errorf("handshake without authentication: %w", err)
	}
	in.theirs = trailer[:nonceSize]
	if !hmac.Equal(trailer[nonceSize:], authMAC(ep.key, labelHello, in.ours, in.theirs, raw)) {
		return hello{}, errors.New("handshake not authenticated by the run's key")
	}
	return h, nil
}

// writeReply answers an incoming hello, with the MAC bound to both nonces
// when the endpoint has a key.
func (ep *Endpoint) writeReply(in *incoming, h *hello) error {
	msg := encodeHello(h)
	if ep.key != nil {
		msg = append(msg, authMAC(ep.key, labelReply, in.theirs, in.ours, msg)...)
	}
	_, err := in.conn.Write(msg)
	return err
}

func encodeHello(h *hello) []byte {
	body := make([]byte, 0, 128)
	body = append(body, helloVersion, h.status)
	body = binary.LittleEndian.AppendUint64(body, h.generation)
	body = binary.LittleEndian.AppendUint32(body, h.from)
	body = binary.LittleEndian.AppendUint32(body, h.to)
	body = binary.LittleEndian.AppendUint32(body, h.size)
	for _, s := range []string{h.run, h.fromID, h.toID, h.msg} {
		if len(s) > 1000 {
			s = s[:1000]
		}
		body = binary.LittleEndian.AppendUint16(body, uint16(len(s)))
		body = append(body, s...)
	}
	buf := make([]byte, 0, 12+len(body))
	buf = binary.LittleEndian.AppendUint32(buf, helloMagic)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(body, castagnoli))
	return buf
}

// readHello reads one hello and returns it with its bytes as sent, which
// an authenticated handshake's MAC covers.
func readHello(r io.Reader) (hello, []byte, error) {
	var h hello
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return h, nil, err
	}
	if m := binary.LittleEndian.Uint32(pre[:]); m != helloMagic {
		return h, nil, fmt.Errorf("%w: handshake magic %#x, want %#x", ErrCorrupt, m, helloMagic)
	}
	n := binary.LittleEndian.Uint32(pre[4:])
	if n < 22 || n > maxHello {
		return h, nil, fmt.Errorf("%w: handshake length %d, want 22..%d", ErrCorrupt, n, maxHello)
	}
	body := make([]byte, n+4)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, nil, err
	}
	raw := append(pre[:], body...)
	if want, got := crc32.Checksum(body[:n], castagnoli), binary.LittleEndian.Uint32(body[n:]); want != got {
		return h, nil, fmt.Errorf("%w: handshake checksum %#x, computed %#x", ErrCorrupt, got, want)
	}
	body = body[:n]
	if body[0] != helloVersion {
		return h, nil, fmt.Errorf("%w: handshake version %d, want %d", ErrMismatch, body[0], helloVersion)
	}
	h.status = body[1]
	h.generation = binary.LittleEndian.Uint64(body[2:])
	h.from = binary.LittleEndian.Uint32(body[10:])
	h.to = binary.LittleEndian.Uint32(body[14:])
	h.size = binary.LittleEndian.Uint32(body[18:])
	rest := body[22:]
	for _, dst := range []*string{&h.run, &h.fromID, &h.toID, &h.msg} {
		if len(rest) < 2 {
			return h, nil, fmt.Errorf("%w: handshake truncated", ErrCorrupt)
		}
		l := int(binary.LittleEndian.Uint16(rest))
		if len(rest) < 2+l {
			return h, nil, fmt.Errorf("%w: handshake string of %d bytes truncated", ErrCorrupt, l)
		}
		*dst = string(rest[2 : 2+l])
		rest = rest[2+l:]
	}
	return h, raw, nil
}
