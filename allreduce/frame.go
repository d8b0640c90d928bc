package allreduce

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// frameKind says what a frame carries.
type frameKind uint8

const (
	kindData      frameKind = 1 // a segment of an operation
	kindHeartbeat frameKind = 2 // "alive, inside operation seq, sent so many frames"
	kindAbort     frameKind = 3 // the sender gave up on the operation; payload names the culprit
)

// opKind is the collective a data frame belongs to; a member running a
// different collective than its peer is a mismatch, not a silent mix-up.
type opKind uint8

const (
	opAllReduce opKind = 1
	opBroadcast opKind = 2
	opBarrier   opKind = 3
	opSumInt64  opKind = 4
	opMaxInt64  opKind = 5
)

func (o opKind) String() string {
	switch o {
	case opAllReduce:
		return "all-reduce"
	case opBroadcast:
		return "broadcast"
	case opBarrier:
		return "barrier"
	case opSumInt64:
		return "int64 sum"
	case opMaxInt64:
		return "int64 max"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

const (
	frameMagic   = 0x52414253 // "SBAR" little-endian
	frameVersion = 1
	headerSize   = 64
	// maxPayload bounds what a header may announce, so a corrupt length can
	// never make a reader allocate or wait for gigabytes.
	maxPayload = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the fixed 64-byte prefix of every frame (little-endian):
//
//	0 magic u32 | 4 version u8 | 5 kind u8 | 6 op u8 | 7 root u8
//	8 generation u64 | 16 seq u64 | 24 step u32 | 28 segment u32
//	32 total u64 | 40 offset u64 | 48 length u32 | 52 payload crc u32
//	56 aux u32 | 60 header crc u32 (over bytes 0..59)
//
// total is the whole buffer's length in elements (bytes for byte
// broadcasts), offset the segment's first element, length the payload bytes.
// aux is the frames-sent count in heartbeats and the culprit rank in aborts.
type header struct {
	kind       frameKind
	op         opKind
	root       uint8
	generation uint64
	seq        uint64
	step       uint32
	segment    uint32
	total      uint64
	offset     uint64
	length     uint32
	payloadCRC uint32
	aux        uint32
}

func (h *header) encode(b []byte) {
	_ = b[headerSize-1]
	binary.LittleEndian.PutUint32(b[0:], frameMagic)
	b[4] = frameVersion
	b[5] = byte(h.kind)
	b[6] = byte(h.op)
	b[7] = h.root
	binary.LittleEndian.PutUint64(b[8:], h.generation)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint32(b[24:], h.step)
	binary.LittleEndian.PutUint32(b[28:], h.segment)
	binary.LittleEndian.PutUint64(b[32:], h.total)
	binary.LittleEndian.PutUint64(b[40:], h.offset)
	binary.LittleEndian.PutUint32(b[48:], h.length)
	binary.LittleEndian.PutUint32(b[52:], h.payloadCRC)
	binary.LittleEndian.PutUint32(b[56:], h.aux)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
}

// decode validates magic, version, header checksum and the announced length
// before trusting any field.
func (h *header) decode(b []byte) error {
	_ = b[headerSize-1]
	if m := binary.LittleEndian.Uint32(b[0:]); m != frameMagic {
		return fmt.Errorf("%w: bad magic %#x, want %#x", ErrCorrupt, m, frameMagic)
	}
	if want, got := crc32.Checksum(b[:60], castagnoli), binary.LittleEndian.Uint32(b[60:]); want != got {
		return fmt.Errorf("%w: header checksum %#x, computed %#x", ErrCorrupt, got, want)
	}
	if b[4] != frameVersion {
		return fmt.Errorf("%w: frame version %d, want %d", ErrMismatch, b[4], frameVersion)
	}
	h.kind = frameKind(b[5])
	h.op = opKind(b[6])
	h.root = b[7]
	h.generation = binary.LittleEndian.Uint64(b[8:])
	h.seq = binary.LittleEndian.Uint64(b[16:])
	h.step = binary.LittleEndian.Uint32(b[24:])
	h.segment = binary.LittleEndian.Uint32(b[28:])
	h.total = binary.LittleEndian.Uint64(b[32:])
	h.offset = binary.LittleEndian.Uint64(b[40:])
	h.length = binary.LittleEndian.Uint32(b[48:])
	h.payloadCRC = binary.LittleEndian.Uint32(b[52:])
	h.aux = binary.LittleEndian.Uint32(b[56:])
	if h.kind < kindData || h.kind > kindAbort {
		return fmt.Errorf("%w: unknown frame kind %d", ErrCorrupt, h.kind)
	}
	if h.length > maxPayload {
		return fmt.Errorf("%w: payload length %d over the limit %d", ErrCorrupt, h.length, maxPayload)
	}
	return nil
}

// frameKindOf reads the kind of an encoded header without validating it;
// the fault injector uses it to count data frames only.
func frameKindOf(hdr []byte) frameKind {
	if len(hdr) < headerSize {
		return 0
	}
	return frameKind(hdr[5])
}

// An abort frame's payload: culprit rank u32 | reporter rank u32 | reason u8
// | message, at most maxAbortPayload bytes in all.
const (
	abortFixed      = 9
	maxAbortPayload = 64 << 10
)

// encodeAbort builds an abort payload; a longer message is cut, so the
// receiver never refuses the report as corrupt.
func encodeAbort(culprit, reporter int, reason abortReason, msg string) []byte {
	if len(msg) > maxAbortPayload-abortFixed {
		msg = msg[:maxAbortPayload-abortFixed]
	}
	p := make([]byte, abortFixed, abortFixed+len(msg))
	binary.LittleEndian.PutUint32(p[0:], uint32(culprit))
	binary.LittleEndian.PutUint32(p[4:], uint32(reporter))
	p[8] = byte(reason)
	return append(p, msg...)
}

// abortLengthOK says whether a header may announce an abort payload of n
// bytes, checked before the payload is read.
func abortLengthOK(n uint32) bool { return n >= abortFixed && n <= maxAbortPayload }

// parseAbort reads an abort payload from a peer of a ring of size members.
func parseAbort(p []byte, size int) (culprit, reporter int, reason abortReason, msg string, err error) {
	if !abortLengthOK(uint32(min(len(p), maxAbortPayload+1))) {
		return 0, 0, 0, "", fmt.Errorf("%w: abort frame of %d bytes", ErrCorrupt, len(p))
	}
	c, rep := binary.LittleEndian.Uint32(p[0:]), binary.LittleEndian.Uint32(p[4:])
	if int64(c) >= int64(size) || int64(rep) >= int64(size) {
		return 0, 0, 0, "", fmt.Errorf("%w: abort names rank %d reported by %d in a ring of %d", ErrCorrupt, c, rep, size)
	}
	return int(c), int(rep), abortReason(p[8]), string(p[abortFixed:]), nil
}
