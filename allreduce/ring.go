package allreduce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Member is one participant of a ring, as the coordinator's plan names it.
type Member struct {
	ID   string
	Addr string // its Endpoint's address
}

// Config describes one generation of a ring, identical on every member
// except Rank and Endpoint.
type Config struct {
	Run        string   // run or ring identity; links of other runs are refused
	Rank       int      // this member's index in Members
	Members    []Member // ring order
	Generation uint64
	// Deadline is the longest a member waits on a silent peer (no data,
	// no heartbeat) before blaming it. A member sends heartbeats for as
	// long as its ring is open, inside operations and between them, so
	// silence means a dead, frozen or cut-off peer, not a busy one. 0
	// means 10s.
	Deadline time.Duration
	// SkewLimit is the longest a member waits, from entering an
	// operation, for a previous peer that is alive but has not entered it
	// yet (its heartbeats name an earlier operation): the skew between
	// members that do unequal local work between collectives, such as
	// simulating their shards of a trajectory cache on cores of unequal
	// speed. Past it the peer is blamed as if silent. 0 means 10 minutes.
	SkewLimit time.Duration
	// ConnectTimeout bounds NewRing's dial and accept. 0 means 2·Deadline.
	ConnectTimeout time.Duration
	// SegmentBytes is the pipelining unit. 0 means 1 MiB.
	SegmentBytes int
	// PayloadChecksum adds a CRC-32C of every payload, checked on receipt.
	// Headers are always checked, and truncation is always detected; TCP
	// checksums payloads already, so this guards against memory and
	// software faults. Off by default: on a 2-core machine it costs about
	// a quarter of the CPU an all-reduce uses.
	PayloadChecksum bool
	Endpoint        *Endpoint
	Logger          *slog.Logger
}

const (
	defaultDeadline  = 10 * time.Second
	defaultSkewLimit = 10 * time.Minute
	defaultSegment   = 1 << 20
	// addPiece is the most the reduce-scatter reads before adding: the
	// received bytes are added while still in the L2 cache.
	addPiece = 256 << 10
)

// Stats describe one operation, for metrics.
type Stats struct {
	Op        string
	Seq       uint64
	Elements  int   // buffer length (bytes for BroadcastBytes)
	BytesSent int64 // payload bytes this member wrote
	Frames    int   // data frames this member wrote
	Duration  time.Duration
}

// Ring is one generation of a ring of members. Operations are collective:
// every member must call the same operations in the same order with the
// same lengths. Methods are safe to call from several goroutines but run
// one at a time.
type Ring struct {
	cfg        Config
	n, rank    int
	prev, next int
	deadline   time.Duration
	segBytes   int
	log        *slog.Logger

	out net.Conn // to next
	in  net.Conn // from prev
	br  *bufio.Reader
	// rawIn and rawOut reach the sockets of in and out (TCP, on Linux)
	// for readRaw and writeRaw; nil where there are none, and then reads
	// and writes go through the net.Conns.
	rawIn, rawOut syscall.RawConn

	opMu    sync.Mutex // one operation at a time
	seq     uint64
	broken  error
	closed  bool
	scratch []byte
	hdr     [headerSize]byte
	rh      header
	recvd   uint32 // data frames received in the current operation
	opStart time.Time
	last    Stats

	imu  sync.Mutex
	ierr error // first interruption (close, ctx, generation, send failure); sticky

	// sender state, under smu
	smu       sync.Mutex
	queue     []sendReq
	spare     []sendReq
	sendErr   error
	opSeq     uint64
	opName    string
	discard   bool   // the ring failed: queued data frames are no longer ours to send
	sentOp    uint32 // data frames written in the current operation
	bytesOp   int64
	lastWrite time.Time
	wake      chan struct{}
	flushed   chan error
	quit      chan struct{}
	wg        sync.WaitGroup
}

type sendReq struct {
	h       header
	payload []byte
	flush   bool
}

// NewRing connects this member to its neighbours for cfg.Generation:
// it dials the next member and accepts the previous one's connection
// through cfg.Endpoint, both checked by a handshake of (run, generation,
// ring size, ranks, member IDs).
func NewRing(ctx context.Context, cfg Config) (*Ring, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	r := &Ring{
		cfg: cfg, n: len(cfg.Members), rank: cfg.Rank,
		deadline: cfg.Deadline, segBytes: cfg.SegmentBytes, log: cfg.Logger,
		wake: make(chan struct{}, 1), flushed: make(chan error, 1), quit: make(chan struct{}),
	}
	r.prev = (r.rank - 1 + r.n) % r.n
	r.next = (r.rank + 1) % r.n
	if r.n == 1 {
		r.closed = false
		return r, nil
	}
	if err := cfg.Endpoint.register(r); err != nil {
		return nil, err
	}
	if err := r.connect(ctx); err != nil {
		cfg.Endpoint.unregister(r)
		return nil, err
	}
	if rawIO {
		r.rawIn, r.rawOut = rawConn(r.in), rawConn(r.out)
		if r.rawIn == nil || r.rawOut == nil {
			r.rawIn, r.rawOut = nil, nil
		}
	}
	r.wg.Add(1)
	go r.sender()
	return r, nil
}

func checkConfig(cfg *Config) error {
	if one := uint16(1); *(*byte)(unsafe.Pointer(&one)) != 1 {
		return errors.New("allreduce: big-endian machines are not supported (float32 travel as native bytes)")
	}
	n := len(cfg.Members)
	switch {
	case n == 0:
		return errors.New("allreduce: config: Members is empty")
	case n > 255:
		return fmt.Errorf("allreduce: config: %d Members, at most 255", n)
	case cfg.Rank < 0 || cfg.Rank >= n:
		return fmt.Errorf("allreduce: config: Rank %d outside 0..%d", cfg.Rank, n-1)
	case cfg.Deadline < 0 || cfg.SkewLimit < 0 || cfg.ConnectTimeout < 0 || cfg.SegmentBytes < 0:
		return errors.New("allreduce: config: negative Deadline, SkewLimit, ConnectTimeout or SegmentBytes")
	case n > 1 && cfg.Endpoint == nil:
		return errors.New("allreduce: config: Endpoint is nil")
	}
	ids := map[string]int{}
	for i, m := range cfg.Members {
		if m.ID == "" {
			return fmt.Errorf("allreduce: config: Members[%d] has an empty ID", i)
		}
		if j, dup := ids[m.ID]; dup {
			return fmt.Errorf("allreduce: config: Members[%d] and [%d] share ID %q", j, i, m.ID)
		}
		ids[m.ID] = i
		if n > 1 && m.Addr == "" {
			return fmt.Errorf("allreduce: config: Members[%d] (%q) has an empty Addr", i, m.ID)
		}
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = defaultDeadline
	}
	if cfg.SkewLimit == 0 {
		cfg.SkewLimit = defaultSkewLimit
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 2 * cfg.Deadline
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = defaultSegment
	}
	cfg.SegmentBytes = max(4, cfg.SegmentBytes&^3)
	if cfg.SegmentBytes > maxPayload {
		cfg.SegmentBytes = maxPayload
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Members = append([]Member(nil), cfg.Members...)
	return nil
}

// connect dials next and accepts prev concurrently: with two members each
// is the other's next and prev, and a sequential order would deadlock.
func (r *Ring) connect(ctx context.Context) error {
	deadline := time.Now().Add(r.cfg.ConnectTimeout)
	ep := r.cfg.Endpoint
	outHello := hello{status: statusHello, run: r.cfg.Run, generation: r.cfg.Generation, size: uint32(r.n),
		from: uint32(r.rank), to: uint32(r.next), fromID: r.cfg.Members[r.rank].ID, toID: r.cfg.Members[r.next].ID}
	inHello := hello{status: statusHello, run: r.cfg.Run, generation: r.cfg.Generation, size: uint32(r.n),
		from: uint32(r.prev), to: uint32(r.rank), fromID: r.cfg.Members[r.prev].ID, toID: r.cfg.Members[r.rank].ID}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var outErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.out, outErr = ep.dial(cctx, r.cfg.Members[r.next].Addr, outHello, deadline)
		if outErr != nil {
			cancel()
		}
	}()
	in, br, inErr := ep.claim(cctx, inHello, deadline)
	if inErr != nil {
		cancel()
	}
	<-done
	if outErr == nil && inErr == nil {
		r.in, r.br = in, br
		// A newer generation may have knocked while we were connecting.
		if h := ep.newerPending(r); h != nil {
			r.out.Close()
			r.in.Close()
			return &GenerationError{Rank: int(h.from), Member: Member{ID: h.fromID}, Ours: r.cfg.Generation, Theirs: h.generation}
		}
		return nil
	}
	if r.out != nil {
		r.out.Close()
	}
	if in != nil {
		in.Close()
	}
	// Report the root cause, not the cancellation it caused on the other side.
	var ge *GenerationError
	switch {
	case errors.As(outErr, &ge), errors.As(inErr, &ge):
		if ge.Member.ID == "" && errors.As(outErr, &ge) {
			ge.Rank, ge.Member = r.next, r.cfg.Members[r.next]
		}
		return ge
	case outErr != nil && !errors.Is(outErr, context.Canceled):
		return r.peerErr(r.next, "connect", outErr)
	case inErr != nil && !errors.Is(inErr, context.Canceled):
		return r.peerErr(r.prev, "connect", inErr)
	case ctx.Err() != nil:
		return fmt.Errorf("allreduce: connect: %w", ctx.Err())
	}
	return r.peerErr(r.next, "connect", errors.Join(outErr, inErr))
}

// peerErr blames rank for the current operation; call it from the
// operation goroutine only (the sender uses peerErrAt).
func (r *Ring) peerErr(rank int, op string, err error) *PeerError {
	return r.peerErrAt(rank, op, r.seq, err)
}

func (r *Ring) peerErrAt(rank int, op string, seq uint64, err error) *PeerError {
	return &PeerError{Rank: rank, Member: r.cfg.Members[rank], ReportedBy: r.rank, Op: op, Seq: seq, Err: err}
}

// Size is the number of members; Rank this member's index.
func (r *Ring) Size() int { return r.n }
func (r *Ring) Rank() int { return r.rank }

// Generation is the ring's generation.
func (r *Ring) Generation() uint64 { return r.cfg.Generation }

// LastStats describes the most recent operation.
func (r *Ring) LastStats() Stats {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.last
}

// Close tears the ring down: an operation in flight returns ErrClosed, the
// connections close and the sender goroutine has ended when Close returns.
func (r *Ring) Close() error {
	r.interrupt(fmt.Errorf("allreduce: %w", ErrClosed))
	if r.n > 1 {
		// Closing before taking opMu frees an operation stuck in a write
		// that ignores deadlines, so Close cannot wait on it forever.
		r.out.Close()
		r.in.Close()
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.n == 1 {
		return nil
	}
	close(r.quit)
	r.wg.Wait()
	r.cfg.Endpoint.unregister(r)
	return nil
}

// interrupt breaks the ring for good with err (the first one wins) and
// unblocks any read or write in progress. The deadline setters re-check
// ierr after arming, so an interruption racing with them is never lost.
func (r *Ring) interrupt(err error) {
	r.imu.Lock()
	if r.ierr == nil {
		r.ierr = err
	}
	r.imu.Unlock()
	if r.n > 1 && r.in != nil {
		past := time.Unix(1, 0)
		r.in.SetReadDeadline(past)
		r.out.SetWriteDeadline(past)
	}
}

func (r *Ring) interrupted() error {
	r.imu.Lock()
	defer r.imu.Unlock()
	return r.ierr
}

// AllReduceSum replaces buf on every member by the element-wise sum of all
// members' bufs; all members end with bitwise the same values.
func (r *Ring) AllReduceSum(ctx context.Context, buf []float32) error {
	return r.run(ctx, opAllReduce, len(buf), func() error { return r.allReduce(opAllReduce, float32Sum, floatBytes(buf)) })
}

// AllReduceSumInt64 replaces buf on every member by the element-wise sum
// of all members' bufs, wrapping on overflow like Go's int64 addition.
// Integer addition is associative, so the result does not depend on the
// ring's size or order: members that split the same terms differently
// among themselves get the same bits.
func (r *Ring) AllReduceSumInt64(ctx context.Context, buf []int64) error {
	return r.run(ctx, opSumInt64, len(buf), func() error { return r.allReduce(opSumInt64, int64Sum, int64Bytes(buf)) })
}

// AllReduceMaxInt64 replaces buf on every member by the element-wise
// maximum of all members' bufs.
func (r *Ring) AllReduceMaxInt64(ctx context.Context, buf []int64) error {
	return r.run(ctx, opMaxInt64, len(buf), func() error {
		if 8*len(buf) <= r.segBytes {
			return r.gatherMax(buf)
		}
		return r.allReduce(opMaxInt64, int64Max, int64Bytes(buf))
	})
}

// gatherMax is the max of a vector that fits one segment in N-1 steps
// instead of the all-reduce's 2(N-1): at step s every member sends the
// max it holds so far to the next and folds in the one from prev, so
// after N-1 steps each holds the max over all N (max is idempotent: that
// some members' values arrive twice does not matter). A step's latency,
// not its few bytes, is what such an exchange costs.
func (r *Ring) gatherMax(buf []int64) error {
	l := len(buf)
	in := make([]int64, l)
	for s := range r.n - 1 {
		// The sender writes the payload later: it must not change.
		out := append([]int64(nil), buf...)
		r.enqueue(header{kind: kindData, op: opMaxInt64, generation: r.cfg.Generation, seq: r.seq, step: uint32(s),
			total: uint64(l)}, int64Bytes(out))
		if err := r.recv(expect{op: opMaxInt64, total: uint64(l), step: uint32(s), length: 8 * l}, int64Bytes(in)); err != nil {
			return err
		}
		maxInt64(buf, in)
	}
	return nil
}

// AllReduceMean is AllReduceSum followed by a division by the ring size.
func (r *Ring) AllReduceMean(ctx context.Context, buf []float32) error {
	if err := r.AllReduceSum(ctx, buf); err != nil {
		return err
	}
	n := float32(r.n)
	for i := range buf {
		buf[i] /= n
	}
	return nil
}

// Barrier returns once every member has entered it.
func (r *Ring) Barrier(ctx context.Context) error {
	return r.run(ctx, opBarrier, 0, func() error { return r.allReduce(opBarrier, float32Sum, nil) })
}

// Broadcast copies root's buf into every member's buf.
func (r *Ring) Broadcast(ctx context.Context, root int, buf []float32) error {
	return r.BroadcastBytes(ctx, root, floatBytes(buf))
}

// BroadcastBytes copies root's buf into every member's buf (e.g.
// checkpoint bytes); lengths must agree.
func (r *Ring) BroadcastBytes(ctx context.Context, root int, buf []byte) error {
	if root < 0 || root >= r.n {
		return fmt.Errorf("allreduce: broadcast root %d outside 0..%d", root, r.n-1)
	}
	return r.run(ctx, opBroadcast, len(buf), func() error { return r.broadcast(root, buf) })
}

func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

func int64Bytes(v []int64) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))
}

// bytesFloat32 and bytesInt64 view whole elements of b; b comes from
// floatBytes or int64Bytes (or the scratch, which is read as bytes only
// through addInto), so its alignment is the element's.
func bytesFloat32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func bytesInt64(b []byte) []int64 {
	if len(b) < 8 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(&b[0])), len(b)/8)
}

// run wraps one collective: sequencing, cancellation, failure propagation
// and stats.
func (r *Ring) run(ctx context.Context, op opKind, elems int, body func() error) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.closed {
		return fmt.Errorf("allreduce %s: %w", op, ErrClosed)
	}
	if r.broken != nil {
		return fmt.Errorf("allreduce %s: ring broken by an earlier failure: %w", op, r.broken)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("allreduce %s: %w", op, err)
	}
	r.seq++
	start := time.Now()
	r.last = Stats{Op: op.String(), Seq: r.seq, Elements: elems}
	if r.n == 1 {
		r.last.Duration = time.Since(start)
		return nil
	}
	if err := r.interrupted(); err != nil {
		r.broken = err
		return fmt.Errorf("allreduce %s: %w", op, err)
	}
	fired := make(chan struct{})
	seq := r.seq
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		r.interrupt(fmt.Errorf("allreduce %s #%d: %w", op, seq, context.Cause(ctx)))
	})
	r.smu.Lock()
	r.opSeq, r.opName, r.sentOp, r.bytesOp = r.seq, op.String(), 0, 0
	r.smu.Unlock()
	r.recvd, r.opStart = 0, start

	err := body()
	if err == nil {
		err = r.flush(0)
	}
	if !stop() {
		<-fired
	}
	r.smu.Lock()
	r.last.Frames, r.last.BytesSent = int(r.sentOp), r.bytesOp
	r.smu.Unlock()
	r.last.Duration = time.Since(start)
	if err != nil {
		r.fail(op, err)
		return err
	}
	return nil
}

// fail marks the ring broken and tells the next member who is to blame, so
// that the news travels around the ring instead of every member waiting out
// its own deadline. Queued data frames are dropped: they point into the
// caller's buffer, which the caller owns again once we return.
func (r *Ring) fail(op opKind, err error) {
	r.broken = err
	culprit, reporter, reason, msg := r.rank, r.rank, reasonOther, err.Error()
	var pe *PeerError
	var ge *GenerationError
	switch {
	case errors.As(err, &pe):
		culprit, reporter, reason = pe.Rank, pe.ReportedBy, reasonCode(pe.Err)
		msg = pe.Err.Error()
	case errors.As(err, &ge):
		culprit, reason = ge.Rank, reasonGeneration
	}
	payload := encodeAbort(culprit, reporter, reason, msg)
	r.smu.Lock()
	r.discard = true
	r.queue = r.queue[:0]
	r.queue = append(r.queue, sendReq{h: header{kind: kindAbort, op: op, generation: r.cfg.Generation, seq: r.seq}, payload: payload})
	r.smu.Unlock()
	// Give the abort (and the data write in progress) a quarter deadline,
	// then cut the link: a slow next member must not delay our report.
	if r.flush(r.deadline/4) != nil {
		r.log.Debug("allreduce: abort not delivered", "rank", r.rank, "next", r.next)
	}
}

// flush waits until the sender has written everything queued. With a
// positive limit it cuts the outgoing link after that long.
func (r *Ring) flush(limit time.Duration) error {
	r.smu.Lock()
	r.queue = append(r.queue, sendReq{flush: true})
	r.smu.Unlock()
	r.poke()
	if limit <= 0 {
		err := <-r.flushed
		if err != nil {
			if ie := r.interrupted(); ie != nil {
				return ie
			}
			return r.peerErr(r.next, r.last.Op, err)
		}
		return nil
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case err := <-r.flushed:
		return err
	case <-t.C:
		r.out.SetWriteDeadline(time.Unix(1, 0))
		return <-r.flushed
	}
}

func (r *Ring) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// enqueue hands a frame to the sender; it never blocks, so the operation
// goroutine always keeps reading (see the package doc on cyclic waits).
func (r *Ring) enqueue(h header, payload []byte) {
	r.smu.Lock()
	r.queue = append(r.queue, sendReq{h: h, payload: payload})
	r.smu.Unlock()
	r.poke()
}

// sender owns writes to the next member: queued frames in order, and a
// heartbeat whenever nothing was written for a quarter of the deadline,
// inside an operation or between two, so that the next member, waiting
// in an operation this one has not reached, sees it alive and busy.
func (r *Ring) sender() {
	defer r.wg.Done()
	beat := r.deadline / 4
	tick := time.NewTicker(beat)
	defer tick.Stop()
	var hbuf [headerSize]byte
	fw, _ := r.out.(frameWriter)
	write := func(h *header, payload []byte) error {
		if h.kind == kindData && r.cfg.PayloadChecksum {
			h.payloadCRC = crc32.Checksum(payload, castagnoli)
		}
		h.length = uint32(len(payload))
		h.encode(hbuf[:])
		r.out.SetWriteDeadline(time.Now().Add(r.deadline))
		if err := r.interrupted(); err != nil && h.kind != kindAbort {
			return err
		}
		var err error
		switch {
		case r.rawOut != nil:
			err = writeRaw(r.rawOut, hbuf[:], payload)
		case fw != nil:
			err = fw.WriteFrame(hbuf[:], payload)
		case len(payload) == 0:
			_, err = r.out.Write(hbuf[:])
		default:
			bufs := net.Buffers{hbuf[:], payload}
			_, err = bufs.WriteTo(r.out)
		}
		return err
	}
	for {
		select {
		case <-r.quit:
			return
		case <-r.wake:
		case <-tick.C:
			r.smu.Lock()
			// Not once failed: a broken ring's heartbeats would tell a
			// peer still inside the failed operation that it goes on.
			due := !r.discard && len(r.queue) == 0 && r.sendErr == nil && time.Since(r.lastWrite) >= beat
			h := header{kind: kindHeartbeat, generation: r.cfg.Generation, seq: r.opSeq, aux: r.sentOp}
			r.smu.Unlock()
			if due {
				if err := write(&h, nil); err != nil {
					r.setSendErr(err)
				}
				r.smu.Lock()
				r.lastWrite = time.Now()
				r.smu.Unlock()
			}
			continue
		}
		for {
			r.smu.Lock()
			if len(r.queue) == 0 {
				r.smu.Unlock()
				break
			}
			batch := r.queue
			r.queue = r.spare[:0]
			sendErr := r.sendErr
			r.smu.Unlock()
			for i := range batch {
				req := &batch[i]
				if req.flush {
					r.flushed <- sendErr
					continue
				}
				r.smu.Lock()
				skip := r.discard && req.h.kind == kindData
				r.smu.Unlock()
				if sendErr != nil || skip {
					continue
				}
				if err := write(&req.h, req.payload); err != nil {
					sendErr = err
					r.setSendErr(err)
					continue
				}
				r.smu.Lock()
				r.lastWrite = time.Now()
				if req.h.kind == kindData {
					r.sentOp++
					r.bytesOp += int64(len(req.payload))
				}
				r.smu.Unlock()
			}
			clear(batch)
			r.smu.Lock()
			r.spare = batch[:0]
			r.smu.Unlock()
		}
	}
}

// setSendErr records a write failure and wakes the operation goroutine,
// which may be blocked reading, so it can blame the next member.
func (r *Ring) setSendErr(err error) {
	r.smu.Lock()
	first := r.sendErr == nil
	if first {
		r.sendErr = err
	}
	op, seq := r.opName, r.opSeq
	r.smu.Unlock()
	if first && r.interrupted() == nil {
		reason := ErrDisconnected
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = ErrTimeout
		}
		r.interrupt(r.peerErrAt(r.next, op, seq, fmt.Errorf("%w: send: %v", reason, err)))
	}
}

// expect is what the next data frame from prev must say.
type expect struct {
	op      opKind
	root    int
	total   uint64
	step    uint32
	segment uint32
	offset  uint64
	length  int
}

// recv reads frames from prev until the expected data frame, whose payload
// lands in dst. Heartbeats only reset the deadline; older generations are
// skipped; aborts and any disagreement end the operation.
func (r *Ring) recv(want expect, dst []byte) error {
	h, err := r.recvHeader(&want)
	if err != nil {
		return err
	}
	if err := r.readFull(dst); err != nil {
		return r.readErr(err)
	}
	if r.cfg.PayloadChecksum && h.payloadCRC != crc32.Checksum(dst, castagnoli) {
		return r.peerErr(r.prev, want.op.String(), fmt.Errorf("%w: payload checksum of step %d segment %d", ErrCorrupt, h.step, h.segment))
	}
	r.recvd++
	return nil
}

// recvAdd is recv for the reduce-scatter phase, combining the payload
// into dst (the bytes of whole elements of el) with el.add. It is read in
// pieces of at most len(r.scratch) bytes, each added while still in the
// cache, instead of landing whole in a scratch segment that the add then
// reads back from memory. With PayloadChecksum the scratch holds a whole
// segment, checked before anything is added.
func (r *Ring) recvAdd(want expect, dst []byte, el elemKind) error {
	h, err := r.recvHeader(&want)
	if err != nil {
		return err
	}
	piece := len(r.scratch) / el.size * el.size
	for a := 0; a < len(dst); a += piece {
		b := min(a+piece, len(dst))
		in := r.scratch[:b-a]
		if err := r.readFull(in); err != nil {
			return r.readErr(err)
		}
		if r.cfg.PayloadChecksum && h.payloadCRC != crc32.Checksum(in, castagnoli) {
			return r.peerErr(r.prev, want.op.String(), fmt.Errorf("%w: payload checksum of step %d segment %d", ErrCorrupt, h.step, h.segment))
		}
		el.add(dst[a:b], in)
	}
	r.recvd++
	return nil
}

// recvHeader reads frames from prev until the header of the expected data
// frame, and checks it; its payload is still to be read.
func (r *Ring) recvHeader(want *expect) (*header, error) {
	h := &r.rh
	for {
		if err := r.readHeader(h); err != nil {
			return nil, err
		}
		if h.generation < r.cfg.Generation {
			if _, err := r.br.Discard(int(h.length)); err != nil {
				return nil, r.readErr(err)
			}
			continue
		}
		if h.generation > r.cfg.Generation {
			return nil, &GenerationError{Rank: r.prev, Member: r.cfg.Members[r.prev], Ours: r.cfg.Generation, Theirs: h.generation}
		}
		switch h.kind {
		case kindHeartbeat:
			if h.seq == r.seq && h.aux > r.recvd {
				return nil, r.peerErr(r.prev, want.op.String(), fmt.Errorf("%w: it sent %d frames in this operation, %d arrived", ErrLost, h.aux, r.recvd))
			}
			if h.seq < r.seq {
				if waited := time.Since(r.opStart); waited > r.cfg.SkewLimit {
					return nil, r.peerErr(r.prev, want.op.String(), fmt.Errorf("%w: alive but still at operation #%d after %v, past the skew limit %v",
						ErrTimeout, h.seq, waited.Round(time.Millisecond), r.cfg.SkewLimit))
				}
			}
			continue
		case kindAbort:
			return nil, r.readAbort(h)
		}
		if err := r.check(h, want); err != nil {
			return nil, r.peerErr(r.prev, want.op.String(), err)
		}
		return h, nil
	}
}

// readFull fills p from prev: first from what the handshake's reader holds
// (nothing, once a ring runs), then straight from the connection, so that
// payloads land in their destination without passing through a buffer.
func (r *Ring) readFull(p []byte) error {
	n := 0
	if b := r.br.Buffered(); b > 0 {
		n, _ = r.br.Read(p[:min(b, len(p))])
	}
	if n == len(p) {
		return nil
	}
	if r.rawIn != nil {
		err := readRaw(r.rawIn, p[n:])
		if err == io.EOF && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	_, err := io.ReadFull(r.in, p[n:])
	return err
}

// rawConn returns c's syscall.RawConn, or nil.
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

func (r *Ring) check(h *header, w *expect) error {
	switch {
	case h.seq != r.seq || h.op != w.op:
		return fmt.Errorf("%w: it runs %s #%d, we run %s #%d", ErrMismatch, h.op, h.seq, w.op, r.seq)
	case h.total != w.total:
		unit := "elements"
		if w.op == opBroadcast {
			unit = "bytes"
		}
		return fmt.Errorf("%w: its buffer has %d %s, ours %d", ErrMismatch, h.total, unit, w.total)
	case w.op == opBroadcast && int(h.root) != w.root:
		return fmt.Errorf("%w: its broadcast root is %d, ours %d", ErrMismatch, h.root, w.root)
	case h.step != w.step || h.segment != w.segment:
		if h.step > w.step || (h.step == w.step && h.segment > w.segment) {
			return fmt.Errorf("%w: got step %d segment %d, expected step %d segment %d", ErrLost, h.step, h.segment, w.step, w.segment)
		}
		return fmt.Errorf("%w: got step %d segment %d, expected step %d segment %d", ErrMismatch, h.step, h.segment, w.step, w.segment)
	case h.offset != w.offset || int(h.length) != w.length:
		return fmt.Errorf("%w: segment at offset %d with %d bytes, expected offset %d with %d", ErrMismatch, h.offset, h.length, w.offset, w.length)
	}
	return nil
}

func (r *Ring) readHeader(h *header) error {
	r.in.SetReadDeadline(time.Now().Add(r.deadline))
	if err := r.interrupted(); err != nil {
		return err
	}
	// Exactly the header: through a bufio.Reader it would pull part of the
	// payload along and copy it once more.
	if err := r.readFull(r.hdr[:]); err != nil {
		return r.readErr(err)
	}
	if err := h.decode(r.hdr[:]); err != nil {
		return r.peerErr(r.prev, r.last.Op, err)
	}
	return nil
}

// readErr turns a failed read into the interruption that caused it, or
// into a PeerError blaming prev.
func (r *Ring) readErr(err error) error {
	if ie := r.interrupted(); ie != nil {
		return ie
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return r.peerErr(r.prev, r.last.Op, fmt.Errorf("%w: nothing received for %v", ErrTimeout, r.deadline))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return r.peerErr(r.prev, r.last.Op, fmt.Errorf("%w: truncated frame (connection closed mid-frame)", ErrCorrupt))
	default:
		return r.peerErr(r.prev, r.last.Op, fmt.Errorf("%w: %v", ErrDisconnected, err))
	}
}

type abortReason uint8

const (
	reasonOther abortReason = iota
	reasonTimeout
	reasonDisconnected
	reasonMismatch
	reasonCorrupt
	reasonLost
	reasonGeneration
	reasonClosed
)

var reasonErrs = map[abortReason]error{
	reasonTimeout: ErrTimeout, reasonDisconnected: ErrDisconnected, reasonMismatch: ErrMismatch,
	reasonCorrupt: ErrCorrupt, reasonLost: ErrLost, reasonClosed: ErrClosed,
}

func reasonCode(err error) abortReason {
	for code, e := range reasonErrs {
		if errors.Is(err, e) {
			return code
		}
	}
	return reasonOther
}

// readAbort turns an abort frame from prev into the error it reports.
func (r *Ring) readAbort(h *header) error {
	if !abortLengthOK(h.length) {
		return r.peerErr(r.prev, r.last.Op, fmt.Errorf("%w: abort frame of %d bytes", ErrCorrupt, h.length))
	}
	p := make([]byte, h.length)
	if err := r.readFull(p); err != nil {
		return r.readErr(err)
	}
	culprit, reporter, reason, msg, err := parseAbort(p, r.n)
	if err != nil {
		return r.peerErr(r.prev, r.last.Op, err)
	}
	if reason == reasonGeneration {
		return &GenerationError{Rank: culprit, Member: r.cfg.Members[culprit], Ours: r.cfg.Generation, Theirs: r.cfg.Generation + 1}
	}
	base := reasonErrs[reason]
	if base == nil {
		base = errors.New("aborted")
	}
	return &PeerError{Rank: culprit, Member: r.cfg.Members[culprit], ReportedBy: reporter, Op: r.last.Op, Seq: r.seq,
		Err: reportedError{base, msg}}
}

// reportedError is a reason that arrived in an abort frame: the reporter's
// message, matching its sentinel under errors.Is.
type reportedError struct {
	reason error
	msg    string
}

func (e reportedError) Error() string { return e.msg }
func (e reportedError) Unwrap() error { return e.reason }

// chunk returns the element range [lo, hi) of chunk c of a buffer of l
// elements cut in n nearly equal parts.
func chunk(l, n, c int) (lo, hi int) {
	return int(int64(l) * int64(c) / int64(n)), int(int64(l) * int64(c+1) / int64(n))
}

// segments is the number of frames chunk [lo, hi) travels in: at least one,
// so that even empty chunks carry the step-by-step dependency a Barrier
// relies on.
func segments(lo, hi, seg int) int {
	return max(1, (hi-lo+seg-1)/seg)
}

func (r *Ring) mod(i int) int { return ((i % r.n) + r.n) % r.n }

// elemKind is how the elements of a reduction travel and combine: size
// bytes each, in the members' shared byte order, and add combining a
// received run of them into a member's own.
type elemKind struct {
	size int
	add  func(dst, src []byte)
}

var (
	float32Sum = elemKind{4, func(dst, src []byte) { addInto(bytesFloat32(dst), src) }}
	int64Sum   = elemKind{8, func(dst, src []byte) { addInt64(bytesInt64(dst), bytesInt64(src)) }}
	int64Max   = elemKind{8, func(dst, src []byte) { maxInt64(bytesInt64(dst), bytesInt64(src)) }}
)

// allReduce runs reduce-scatter then all-gather over the l elements of el
// in data; see the package doc.
func (r *Ring) allReduce(op opKind, el elemKind, data []byte) error {
	n, l := r.n, len(data)/el.size
	seg := max(1, r.segBytes/el.size)
	pb := max(el.size, min(seg*el.size, addPiece))
	if r.cfg.PayloadChecksum {
		pb = seg * el.size // the whole segment, checked before it is added
	}
	if len(r.scratch) != pb {
		r.scratch = make([]byte, pb)
	}
	z := el.size
	mk := func(step uint32, j int, lo int, hi int) header {
		return header{kind: kindData, op: op, generation: r.cfg.Generation, seq: r.seq, step: step, segment: uint32(j),
			total: uint64(l), offset: uint64(lo)}
	}
	sendChunk := func(step uint32, c int) {
		lo, hi := chunk(l, n, c)
		for j := range segments(lo, hi, seg) {
			a, b := lo+j*seg, min(lo+(j+1)*seg, hi)
			r.enqueue(mk(step, j, a, b), data[z*a:z*b])
		}
	}
	sendChunk(0, r.rank)
	for s := 0; s < n-1; s++ {
		c := r.mod(r.rank - s - 1)
		lo, hi := chunk(l, n, c)
		fwd := uint32(s + 1)
		if s == n-2 {
			fwd = uint32(n - 1) // the chunk is complete: start its all-gather
		}
		for j := range segments(lo, hi, seg) {
			a, b := lo+j*seg, min(lo+(j+1)*seg, hi)
			if err := r.recvAdd(expect{op: op, total: uint64(l), step: uint32(s), segment: uint32(j), offset: uint64(a), length: z * (b - a)}, data[z*a:z*b], el); err != nil {
				return err
			}
			r.enqueue(mk(fwd, j, a, b), data[z*a:z*b])
		}
	}
	for s := 0; s < n-1; s++ {
		c := r.mod(r.rank - s)
		lo, hi := chunk(l, n, c)
		step := uint32(n - 1 + s)
		for j := range segments(lo, hi, seg) {
			a, b := lo+j*seg, min(lo+(j+1)*seg, hi)
			if err := r.recv(expect{op: op, total: uint64(l), step: step, segment: uint32(j), offset: uint64(a), length: z * (b - a)}, data[z*a:z*b]); err != nil {
				return err
			}
			if s < n-2 {
				r.enqueue(mk(step+1, j, a, b), data[z*a:z*b])
			}
		}
	}
	return nil
}

// broadcast pipelines root's buffer along the ring; the member before the
// root is the end of the chain and forwards nothing.
func (r *Ring) broadcast(root int, buf []byte) error {
	pos := r.mod(r.rank - root)
	l := len(buf)
	seg := r.segBytes
	for j := range segments(0, l, seg) {
		a, b := j*seg, min((j+1)*seg, l)
		if pos > 0 {
			if err := r.recv(expect{op: opBroadcast, root: root, total: uint64(l), segment: uint32(j), offset: uint64(a), length: b - a}, buf[a:b]); err != nil {
				return err
			}
		}
		if pos < r.n-1 {
			r.enqueue(header{kind: kindData, op: opBroadcast, root: uint8(root), generation: r.cfg.Generation, seq: r.seq,
				segment: uint32(j), total: uint64(l), offset: uint64(a)}, buf[a:b])
		}
	}
	return nil
}
