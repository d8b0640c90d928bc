package job

import (
	"bytes"
	"context"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/storage"
)

// FuzzDecode: a snapshot a peer broadcasts or a checkpoint holds decodes
// into a state of this run or gives an error, never a panic; a state that
// decodes encodes to bytes that decode to the same state.
func FuzzDecode(f *testing.F) {
	j := newJob(f, dsbYAML)
	s := replicas(f, j, 1)
	f.Add(encode(f, s[0]))
	runReplicas(f, s, Position{0, 3})
	f.Add(encode(f, s[0]))
	runReplicas(f, s, Position{1, 2})
	f.Add(encode(f, s[0]))
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := j.Decode(b, "fuzz")
		if err != nil {
			return
		}
		again, err := st.Encode()
		if err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		st2, err := j.Decode(again, "re-encoded")
		if err != nil {
			t.Fatalf("own encoding does not decode: %v", err)
		}
		if st2.Position() != st.Position() {
			t.Fatalf("position %v became %v", st.Position(), st2.Position())
		}
		if third, err := st2.Encode(); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("encode(decode(encode)) differs (%v)", err)
		}
	})
}

// FuzzDecodeShard: a cache shard read from the store is this run's shard
// or an error.
func FuzzDecodeShard(f *testing.F) {
	j := newJob(f, dsbYAML)
	s := replicas(f, j, 1)[0]
	c := &memShards{}
	if _, err := s.Gradient(context.Background(), []int{1}, c); err != nil {
		f.Fatal(err)
	}
	key := ShardKey{Phase: 0, Gen: 0, Index: 1}
	ts, meta, err := j.EncodeShard(c.m[key])
	if err != nil {
		f.Fatal(err)
	}
	good, err := storage.EncodeSafetensors(ts, meta)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, meta, err := storage.DecodeSafetensors(b)
		if err != nil {
			return
		}
		dec, err := j.DecodeShard(key, ts, meta)
		if err != nil {
			return
		}
		sh := dec.(*dsb.Shard)
		if n := sh.Trajectories * sh.Steps * sh.Dim; len(sh.Inputs) != n || len(sh.Targets) != n {
			t.Fatalf("shard of %d×%d×%d has %d inputs and %d targets", sh.Trajectories, sh.Steps, sh.Dim, len(sh.Inputs), len(sh.Targets))
		}
	})
}
