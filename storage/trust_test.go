package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An older binary once removed checkpoints written by a newer one (a newer
// manifest format version) as if they were abandoned writes, right after
// skipping them at load. GC keeps every checkpoint whose manifest exists
// but does not read, damaged ones too.
func TestGCKeepsCheckpointsItCannotRead(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, logs := newCkpts(t, s)
		var ms []*Manifest
		for i := 1; i <= 5; i++ {
			ms = append(ms, mustSave(t, c, testMeta(0, int64(10*i), false), Blob{Name: "a.bin", Data: []byte{byte(i)}}))
		}
		newer := manifestKeyOf(ms[0])
		corrupt(t, s, newer, func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"format_version": 1`, fmt.Sprintf(`"format_version": %d`, ManifestFormatVersion+1), 1))
		})
		damaged := manifestKeyOf(ms[1])
		corrupt(t, s, damaged, func(b []byte) []byte { return b[:len(b)/2] })
		res, err := c.GC(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		var kept, removed []int64
		for _, id := range res.Kept {
			kept = append(kept, id.Seq)
		}
		for _, id := range res.Removed {
			removed = append(removed, id.Seq)
		}
		if fmt.Sprint(kept) != "[1 2 5]" || fmt.Sprint(removed) != "[3 4]" {
			t.Fatalf("kept %v, removed %v; want kept [1 2 5] (newer format, damaged, newest), removed [3 4]", kept, removed)
		}
		for _, key := range []string{newer, damaged} {
			if _, err := s.Stat(ctx, key); err != nil {
				t.Errorf("GC removed %s: %v", key, err)
			}
		}
		if !strings.Contains(logs.String(), "keeping a checkpoint it cannot read") {
			t.Errorf("GC kept the unreadable checkpoints without a word:\n%s", logs)
		}
	})
}

// A LATEST naming a checkpoint that is gone (removed by hand, or a
// restore of an older copy of the store) once stayed so for good: every
// later commit has a lower seq and left it alone.
func TestLatestNamingAMissingCheckpointIsRepaired(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		mustSave(t, c, testMeta(0, 10, false), Blob{Name: "a.bin", Data: []byte{1}})
		gone := ID{Seq: 40, Phase: 0, Step: 400}
		put(t, s, c.latestKey(), []byte(fmt.Sprintf(`{"manifest": %q, "seq": 40}`, c.manifestKey(gone))))
		m := mustSave(t, c, testMeta(0, 20, false), Blob{Name: "a.bin", Data: []byte{2}})
		cur, _, err := c.readLatest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Manifest != manifestKeyOf(m) {
			t.Fatalf("after a commit LATEST names %s, want the new %s", cur.Manifest, manifestKeyOf(m))
		}
		// GC repairs it too, to the newest checkpoint that verifies.
		put(t, s, c.latestKey(), []byte(fmt.Sprintf(`{"manifest": %q, "seq": 40}`, c.manifestKey(gone))))
		if _, err := c.GC(ctx, 3); err != nil {
			t.Fatal(err)
		}
		if cur, _, err = c.readLatest(ctx); err != nil || cur.Manifest != manifestKeyOf(m) {
			t.Fatalf("after GC LATEST is %+v (%v), want %s", cur, err, manifestKeyOf(m))
		}
		for _, e := range mustList(t, c) {
			if e.Latest != (e.ID.Seq == m.Seq) {
				t.Errorf("checkpoint %s: Latest %v", e.ID, e.Latest)
			}
		}
	})
}

func mustList(t *testing.T, c *Checkpoints) []Entry {
	t.Helper()
	ents, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// Readers open a file store with MustExist: a mistyped path is an error,
// and is not created.
func TestFileStoreMustExist(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, err := Open(context.Background(), "file://"+dir, Options{MustExist: true})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open of a missing directory with MustExist: %v, want ErrNotFound naming %s", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open with MustExist created %s (%v)", dir, err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), "file://"+dir, Options{MustExist: true}); err != nil {
		t.Fatalf("Open of an existing directory with MustExist: %v", err)
	}
}

func TestLeaseLive(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	info := LeaseInfo{Holder: "coordinator@a", Acquired: now.Format(time.RFC3339), Token: "t",
		Renewed: now.Format(time.RFC3339Nano), TTLSeconds: 10, Host: "elsewhere", PID: 42}
	alive := func(string, int) bool { return true }
	cases := []struct {
		name string
		info LeaseInfo
		at   time.Time
		live bool
		want string
	}{
		{"just renewed", info, now.Add(time.Second), true, `held by "coordinator@a" (pid 42 on host elsewhere), renewed 1s ago, expires in 9s`},
		{"past its TTL", info, now.Add(11 * time.Second), false, "not renewed for 11s"},
		{"process gone", func() LeaseInfo { i := info; i.Host = "here"; return i }(), now, false, "process 42 on host here is gone"},
		{"no expiry", func() LeaseInfo { i := info; i.TTLSeconds = 0; return i }(), now.Add(time.Hour), true, "has no expiry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live, why := LeaseLive("run-1", c.info, c.at, func(host string, pid int) bool { return host != "here" && alive(host, pid) })
			if live != c.live || !strings.Contains(why, c.want) {
				t.Fatalf("LeaseLive = %v, %q; want %v, containing %q", live, why, c.live, c.want)
			}
		})
	}
}
