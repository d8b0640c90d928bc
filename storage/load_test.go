package storage

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestLoadByID loads a checkpoint older than the newest by its ID, with
// its blobs verified: an intact one comes back whole, a damaged blob or an
// ID never committed is ErrInvalid.
func TestLoadByID(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		old := mustSave(t, c, testMeta(0, 10, true), Blob{Name: "state", Data: []byte("phase zero")})
		mustSave(t, c, testMeta(1, 3, false), Blob{Name: "state", Data: []byte("later")})
		id := ID{Seq: old.Seq, Phase: old.Phase, Step: old.Step}
		l, err := c.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(l.Blobs["state"], []byte("phase zero")) || !l.Manifest.PhaseEnd {
			t.Fatalf("loaded %q (phase end %v), want the phase-end checkpoint's blob", l.Blobs["state"], l.Manifest.PhaseEnd)
		}
		if _, err := c.Load(ctx, ID{Seq: 99, Phase: 0, Step: 1}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("an ID never committed: %v, want ErrInvalid", err)
		}
		corrupt(t, s, old.Blobs[0].Key, func(b []byte) []byte { b[0] ^= 1; return b })
		if _, err := c.Load(ctx, id); !errors.Is(err, ErrInvalid) {
			t.Fatalf("a damaged blob: %v, want ErrInvalid", err)
		}
	})
}
