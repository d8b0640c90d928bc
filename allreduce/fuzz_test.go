package allreduce

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzFrameHeader: 64 bytes from the ring decode into a header or give an
// error; a header that decodes re-encodes to the same bytes and never
// announces more than maxPayload.
func FuzzFrameHeader(f *testing.F) {
	for _, h := range []header{
		{kind: kindData, op: opAllReduce, generation: 3, seq: 9, step: 1, segment: 2, total: 1000, offset: 500, length: 2000, payloadCRC: 7},
		{kind: kindHeartbeat, op: opBroadcast, root: 2, aux: 11},
		{kind: kindAbort, op: opBarrier, length: 20},
	} {
		var b [headerSize]byte
		h.encode(b[:])
		f.Add(b[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < headerSize {
			b = append(b, make([]byte, headerSize-len(b))...)
		}
		b = b[:headerSize]
		var h header
		if err := h.decode(b); err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMismatch) {
				t.Fatalf("decode error %v is neither ErrCorrupt nor ErrMismatch", err)
			}
			return
		}
		if h.length > maxPayload {
			t.Fatalf("accepted a payload of %d bytes", h.length)
		}
		var again [headerSize]byte
		h.encode(again[:])
		if !bytes.Equal(again[:], b) {
			t.Fatalf("header %+v re-encodes differently", h)
		}
	})
}

// FuzzAbortPayload: an abort frame's payload names ranks inside the ring
// or is corrupt.
func FuzzAbortPayload(f *testing.F) {
	f.Add(encodeAbort(1, 2, reasonTimeout, "nothing received for 10s"), 3)
	f.Add(encodeAbort(0, 0, reasonGeneration, ""), 1)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1}, 4)
	f.Fuzz(func(t *testing.T, p []byte, size int) {
		culprit, reporter, reason, msg, err := parseAbort(p, size)
		if err != nil {
			return
		}
		if culprit < 0 || culprit >= size || reporter < 0 || reporter >= size {
			t.Fatalf("ranks %d, %d accepted in a ring of %d", culprit, reporter, size)
		}
		if again := encodeAbort(culprit, reporter, reason, msg); !bytes.Equal(again, p) {
			t.Fatal("payload re-encodes differently")
		}
	})
}

// TestAbortMessageIsCut: a long reason once made an abort frame its
// receiver refused as corrupt, losing the report.
func TestAbortMessageIsCut(t *testing.T) {
	p := encodeAbort(1, 0, reasonOther, strings.Repeat("x", 100<<10))
	if _, _, _, msg, err := parseAbort(p, 2); err != nil || len(msg) != maxAbortPayload-abortFixed {
		t.Fatalf("a 100 KiB reason: %v, message of %d bytes", err, len(msg))
	}
}

// FuzzHandshake: a handshake read from a connection is a hello or an
// error, reading at most what its bounded length announces; a hello that
// decodes (strings within encodeHello's limit) is written back the same,
// and the bytes it returns for a MAC to cover are the bytes it read.
func FuzzHandshake(f *testing.F) {
	for _, h := range []hello{
		{status: statusHello, run: "run-1", generation: 4, from: 1, to: 2, size: 3, fromID: "trainer-1", toID: "trainer-2"},
		{status: statusStale, run: "r", generation: 9, msg: "generation 3 is stale, endpoint is at 9"},
		{status: statusMismatch, msg: strings.Repeat("m", 1000)},
	} {
		f.Add(encodeHello(&h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, raw, err := readHello(r)
		consumed := len(b) - r.Len()
		if consumed > 12+maxHello {
			t.Fatalf("read %d bytes for one handshake", consumed)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(raw, b[:consumed]) {
			t.Fatalf("readHello returned %d bytes as sent, but read %d others", len(raw), consumed)
		}
		for _, s := range []string{h.run, h.fromID, h.toID, h.msg} {
			if len(s) > 1000 {
				return
			}
		}
		h2, _, err := readHello(bytes.NewReader(encodeHello(&h)))
		if err != nil || h2 != h {
			t.Fatalf("hello %+v reads back as %+v (%v)", h, h2, err)
		}
	})
}
