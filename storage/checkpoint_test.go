package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	envWriterURL = "SBTRAIN_TEST_KILLED_WRITER_URL"
	envWriterRun = "SBTRAIN_TEST_KILLED_WRITER_RUN"
)

func TestMain(m *testing.M) {
	if u := os.Getenv(envWriterURL); u != "" {
		killedWriter(u, os.Getenv(envWriterRun))
		return
	}
	loadMinioEnv()
	os.Exit(m.Run())
}

// killedWriter is the child process of TestWriterKilledMidCheckpoint: it
// writes one blob of a new checkpoint, starts streaming the second, says
// "MIDWAY" and keeps streaming until SIGKILL ends it.
func killedWriter(url, run string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // if never killed
	defer cancel()
	fail := func(err error) {
		fmt.Println("ERROR", err)
		os.Exit(3)
	}
	s, err := Open(ctx, url, Options{})
	if err != nil {
		fail(err)
	}
	c, err := NewCheckpoints(s, run, nil)
	if err != nil {
		fail(err)
	}
	id, err := c.NextID(ctx, 1, 200)
	if err != nil {
		fail(err)
	}
	if _, err := c.PutBlob(ctx, id, "netB.safetensors", bytes.Repeat([]byte{9}, 1<<20)); err != nil {
		fail(err)
	}
	_, err = c.PutBlobStream(ctx, id, "optim.safetensors", &endlessReader{ctx: ctx, midway: 3 << 20})
	fail(fmt.Errorf("streaming ended without being killed: %v", err))
}

// endlessReader yields bytes, announcing on stdout once midway bytes have
// gone, then slowly forever (until its context ends).
type endlessReader struct {
	ctx       context.Context
	n, midway int
}

func (r *endlessReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.n >= r.midway {
		if r.n == r.midway {
			fmt.Println("MIDWAY")
		}
		time.Sleep(5 * time.Millisecond)
	}
	k := min(len(p), 64<<10)
	for i := range p[:k] {
		p[i] = byte(r.n + i)
	}
	r.n += k
	if r.n > r.midway && r.n-k < r.midway {
		r.n = r.midway // announce on the next read
	}
	return k, nil
}

func testMeta(phase int, step int64, end bool) Meta {
	return Meta{Phase: phase, IPFIteration: phase/2 + 1, Direction: DirectionBackward, Step: step, PhaseEnd: end, ConfigHash: "cfg-abc"}
}

func newCkpts(t *testing.T, s Store) (*Checkpoints, *logBuffer) {
	t.Helper()
	log, logs := newTestLogger(t)
	c, err := NewCheckpoints(s, "run-1", log)
	if err != nil {
		t.Fatal(err)
	}
	return c, logs
}

func mustSave(t *testing.T, c *Checkpoints, meta Meta, blobs ...Blob) *Manifest {
	t.Helper()
	m, err := c.Save(context.Background(), meta, blobs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustLoad(t *testing.T, c *Checkpoints) *Loaded {
	t.Helper()
	l, err := c.LoadLatest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCheckpointRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		if _, err := c.LoadLatest(ctx); !errors.Is(err, ErrNoCheckpoint) {
			t.Fatalf("empty run: %v, want ErrNoCheckpoint", err)
		}
		params := make([]float32, 10_000)
		for i := range params {
			params[i] = float32(math.Sin(float64(i))) * 1e-3
		}
		params[0], params[1] = float32(math.NaN()), float32(math.Inf(-1))
		st, err := EncodeSafetensors([]Tensor{F32Tensor("w", []int{100, 100}, params)}, map[string]string{"format": "pt"})
		if err != nil {
			t.Fatal(err)
		}
		mustSave(t, c, testMeta(0, 100, false), Blob{Name: "netB.safetensors", Data: st}, Blob{Name: "state.json", Data: []byte(`{"x":1}`)})
		// The zero-copy path writes the same bytes as the encoder.
		m2 := mustSave(t, c, testMeta(1, 7, true), Blob{Name: "netB.safetensors", Tensors: []Tensor{F32Tensor("w", []int{100, 100}, params)}, Metadata: map[string]string{"format": "pt"}})

		l := mustLoad(t, c)
		if l.Manifest.Seq != m2.Seq || l.Manifest.Phase != 1 || l.Manifest.Step != 7 || !l.Manifest.PhaseEnd ||
			l.Manifest.RunID != "run-1" || l.Manifest.ConfigHash != "cfg-abc" || l.Manifest.FormatVersion != 1 || l.Manifest.Direction != DirectionBackward {
			t.Errorf("loaded manifest %+v, want seq %d phase 1 step 7", l.Manifest, m2.Seq)
		}
		if !bytes.Equal(l.Blobs["netB.safetensors"], st) {
			t.Error("blob written from tensors differs from EncodeSafetensors' bytes")
		}
		ts, _, err := l.Tensors("netB.safetensors")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := ts[0].Float32s()
		for i := range params {
			if math.Float32bits(got[i]) != math.Float32bits(params[i]) {
				t.Fatalf("param %d: %v, want bit-identical %v", i, got[i], params[i])
			}
		}
		// What a PyTorch user would open is a plain safetensors file.
		_, raw := independentRead(t, l.Blobs["netB.safetensors"])
		if !bytes.Equal(raw["w"], st[len(st)-len(params)*4:]) {
			t.Error("independent reader disagrees on the loaded blob")
		}

		ents, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 || ents[0].Manifest == nil || ents[1].Manifest == nil || !ents[1].Latest || ents[0].Latest {
			t.Fatalf("list = %+v, want two committed checkpoints, the second LATEST", ents)
		}
		if k := ents[1].ManifestKey; k != "runs/run-1/ckpt/00000002-p0001-s000000000007/MANIFEST.json" {
			t.Errorf("manifest key %q is not the self-describing, sortable one", k)
		}
		if _, err := c.Verify(ctx, ents[0].ID); err != nil {
			t.Errorf("verify first: %v", err)
		}
	})
}

// corrupt rewrites the object at key through the store.
func corrupt(t *testing.T, s Store, key string, f func([]byte) []byte) {
	t.Helper()
	put(t, s, key, f(get(t, s, key)))
}

func TestCheckpointFallsBackFromDamage(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, s Store, m *Manifest)
		reason string // in the error and the log
	}{
		{"flipped byte in a blob", func(t *testing.T, s Store, m *Manifest) {
			corrupt(t, s, m.Blobs[0].Key, func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b })
		}, "sha256"},
		{"blob longer than recorded", func(t *testing.T, s Store, m *Manifest) {
			corrupt(t, s, m.Blobs[0].Key, func(b []byte) []byte { return append(b, 0) })
		}, "the manifest says"},
		{"blob missing", func(t *testing.T, s Store, m *Manifest) {
			if err := s.Delete(context.Background(), m.Blobs[1].Key); err != nil {
				t.Fatal(err)
			}
		}, "not found"},
		{"truncated manifest", func(t *testing.T, s Store, m *Manifest) {
			corrupt(t, s, manifestKeyOf(m), func(b []byte) []byte { return b[:len(b)/2] })
		}, "not valid JSON"},
		{"manifest edited but still JSON", func(t *testing.T, s Store, m *Manifest) {
			corrupt(t, s, manifestKeyOf(m), func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"step": 20`), []byte(`"step": 21`), 1)
			})
		}, "checksum"},
		{"manifest of a newer format", func(t *testing.T, s Store, m *Manifest) {
			corrupt(t, s, manifestKeyOf(m), func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"format_version": 1`), []byte(fmt.Sprintf(`"format_version": %d`, ManifestFormatVersion+1)), 1)
			})
		}, fmt.Sprintf("format version %d", ManifestFormatVersion+1)},
		{"manifest deleted", func(t *testing.T, s Store, m *Manifest) {
			if err := s.Delete(context.Background(), manifestKeyOf(m)); err != nil {
				t.Fatal(err)
			}
		}, "no manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, _ string, s Store) {
				ctx := context.Background()
				c, logs := newCkpts(t, s)
				good := mustSave(t, c, testMeta(0, 10, false), Blob{Name: "a.bin", Data: []byte("good-a")}, Blob{Name: "b.bin", Data: []byte("good-b")})
				bad := mustSave(t, c, testMeta(0, 20, false), Blob{Name: "a.bin", Data: []byte("bad-a")}, Blob{Name: "b.bin", Data: []byte("bad-b")})
				tc.damage(t, s, bad)

				l := mustLoad(t, c)
				if l.Manifest.Seq != good.Seq || string(l.Blobs["a.bin"]) != "good-a" {
					t.Errorf("loaded seq %d, want the previous valid one %d", l.Manifest.Seq, good.Seq)
				}
				if !strings.Contains(logs.String(), tc.reason) || !strings.Contains(logs.String(), "00000002-p0000-s000000000020") {
					t.Errorf("log does not say which checkpoint was skipped and why (%q):\n%s", tc.reason, logs)
				}
				_, err := c.Verify(ctx, ID{Seq: bad.Seq, Phase: 0, Step: 20})
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), "runs/run-1/ckpt/00000002") {
					t.Errorf("verify damaged: %v, want an error naming the object and %q", err, tc.reason)
				}
				// The good checkpoint is untouched and a new one commits past the damage.
				if _, err := c.Verify(ctx, ID{Seq: good.Seq, Phase: 0, Step: 10}); err != nil {
					t.Errorf("verify good: %v", err)
				}
				m3 := mustSave(t, c, testMeta(0, 30, false), Blob{Name: "a.bin", Data: []byte("new")})
				if m3.Seq != 3 || mustLoad(t, c).Manifest.Seq != 3 {
					t.Errorf("new checkpoint seq %d, want 3 loaded", m3.Seq)
				}
			})
		})
	}
}

func manifestKeyOf(m *Manifest) string {
	return fmt.Sprintf("runs/%s/ckpt/%s/%s", m.RunID, ID{m.Seq, m.Phase, m.Step}.dirName(), manifestName)
}

func TestCommitProtocol(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		first := mustSave(t, c, testMeta(0, 1, false), Blob{Name: "a.bin", Data: []byte("a")})

		// Trainers write blobs, a different Checkpoints (the coordinator)
		// commits; a blob that is missing or of the wrong size stops it.
		trainer, _ := newCkpts(t, s)
		id, err := trainer.NextID(ctx, 0, 50)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := trainer.PutBlob(ctx, id, "netF.safetensors", []byte("weights"))
		if err != nil {
			t.Fatal(err)
		}
		coord, _ := newCkpts(t, s)
		if _, err := coord.Commit(ctx, id, testMeta(0, 50, false), []BlobRef{ref, {Name: "optim.safetensors", Key: coord.blobKey(id, "optim.safetensors"), Size: 3, SHA256: strings.Repeat("0", 64)}}); !errors.Is(err, ErrNotFound) {
			t.Errorf("commit with a missing blob: %v, want ErrNotFound", err)
		}
		wrong := ref
		wrong.Size++
		if _, err := coord.Commit(ctx, id, testMeta(0, 50, false), []BlobRef{wrong}); err == nil || !strings.Contains(err.Error(), ref.Key) {
			t.Errorf("commit with a wrong size: %v, want an error naming %s", err, ref.Key)
		}
		if l := mustLoad(t, c); l.Manifest.Seq != first.Seq {
			t.Errorf("a failed commit changed what loads: seq %d", l.Manifest.Seq)
		}
		described, err := coord.DescribeBlob(ctx, id, "netF.safetensors")
		if err != nil || described != ref {
			t.Errorf("DescribeBlob = %+v, %v; want %+v", described, err, ref)
		}
		m, err := coord.Commit(ctx, id, testMeta(0, 50, false), []BlobRef{described})
		if err != nil {
			t.Fatal(err)
		}
		if l := mustLoad(t, c); l.Manifest.Seq != m.Seq || string(l.Blobs["netF.safetensors"]) != "weights" {
			t.Errorf("after commit loaded seq %d", l.Manifest.Seq)
		}
		// A committed manifest is never overwritten.
		before := get(t, s, manifestKeyOf(m))
		if _, err := coord.Commit(ctx, id, testMeta(0, 50, true), []BlobRef{described}); !errors.Is(err, ErrExists) {
			t.Errorf("second commit of one id: %v, want ErrExists", err)
		}
		if !bytes.Equal(before, get(t, s, manifestKeyOf(m))) {
			t.Error("second commit changed the committed manifest")
		}
		// Bad metadata is refused before anything is written.
		for _, meta := range []Meta{
			{Phase: 0, Step: 60, Direction: "sideways", ConfigHash: "h"},
			{Phase: 0, Step: 60, Direction: DirectionSI},
			{Phase: -1, Step: 60, Direction: DirectionSI, ConfigHash: "h"},
		} {
			if _, err := c.Save(ctx, meta, []Blob{{Name: "a.bin", Data: nil}}); err == nil {
				t.Errorf("Save(%+v) accepted bad metadata", meta)
			}
		}
		if _, err := c.Save(ctx, testMeta(0, 60, false), []Blob{{Name: "../x", Data: nil}}); err == nil {
			t.Error("Save accepted a blob name with a slash")
		}
		var ptr latestPointer
		if err := json.Unmarshal(get(t, s, "runs/run-1/LATEST"), &ptr); err != nil || ptr.Manifest != manifestKeyOf(m) {
			t.Errorf("LATEST = %+v, %v; want %s", ptr, err, manifestKeyOf(m))
		}
	})
}

func TestGC(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		for i := 1; i <= 6; i++ {
			mustSave(t, c, testMeta(i/3, int64(10*i), i == 2), Blob{Name: "a.bin", Data: []byte{byte(i)}})
		}
		// An abandoned write older than the newest commit, and one newer
		// (perhaps in progress).
		put(t, s, "runs/run-1/ckpt/00000004-p0001-s000000000039/x.bin", []byte("orphan"))
		put(t, s, "runs/run-1/ckpt/00000099-p0002-s000000000999/x.bin", []byte("in progress"))
		if _, err := c.GC(ctx, 0); err == nil {
			t.Error("GC keep=0 accepted")
		}
		res, err := c.GC(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		var kept []int64
		for _, id := range res.Kept {
			kept = append(kept, id.Seq)
		}
		if got := fmt.Sprint(kept); got != "[2 5 6 99]" {
			t.Errorf("kept seqs %s, want [2 5 6 99] (last two, the phase end, the in-progress write)", got)
		}
		objs, _ := s.List(ctx, "runs/run-1/ckpt/")
		for _, o := range objs {
			if strings.Contains(o.Key, "00000001-") || strings.Contains(o.Key, "-s000000000039") {
				t.Errorf("GC left %s", o.Key)
			}
		}
		if l := mustLoad(t, c); l.Manifest.Seq != 6 {
			t.Errorf("after GC loaded seq %d, want 6", l.Manifest.Seq)
		}
		// If every recent checkpoint is damaged, GC still keeps the newest
		// one that verifies.
		corrupt(t, s, "runs/run-1/ckpt/00000006-p0002-s000000000060/a.bin", func(b []byte) []byte { return []byte{b[0] ^ 0xff} })
		corrupt(t, s, "runs/run-1/ckpt/00000005-p0001-s000000000050/a.bin", func(b []byte) []byte { return []byte{b[0] ^ 0xff} })
		mustSave(t, c, testMeta(3, 70, false), Blob{Name: "a.bin", Data: []byte{7}})
		corrupt(t, s, "runs/run-1/ckpt/00000100-p0003-s000000000070/a.bin", func(b []byte) []byte { return []byte{b[0] ^ 0xff} })
		if _, err := c.GC(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if l := mustLoad(t, c); l.Manifest.Seq != 2 {
			t.Errorf("after damaging 5, 6 and 100 and GC keep=1, loaded seq %d, want the phase end 2", l.Manifest.Seq)
		}
	})
}

// TestWriterKilledMidCheckpoint SIGKILLs a writer process in the middle of
// a checkpoint: the previous checkpoint is the one loaded, the partial one
// is reported as never committed, and nothing partial is visible.
func TestWriterKilledMidCheckpoint(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		first := mustSave(t, c, testMeta(0, 100, true), Blob{Name: "netB.safetensors", Data: []byte("committed")})

		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envWriterURL+"="+url, envWriterRun+"=run-1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make(chan string, 1)
		go func() { // ends when the child's stdout closes
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				select {
				case line <- sc.Text():
				default:
				}
			}
			close(line)
		}()
		select {
		case l := <-line:
			if l != "MIDWAY" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("writer said %q, want MIDWAY", l)
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("writer never reached the middle of its checkpoint")
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("writer ended with %v, want killed by SIGKILL", err)
		}

		l := mustLoad(t, c)
		if l.Manifest.Seq != first.Seq || string(l.Blobs["netB.safetensors"]) != "committed" {
			t.Errorf("loaded seq %d, want the previous checkpoint %d", l.Manifest.Seq, first.Seq)
		}
		ents, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 || ents[1].Manifest != nil || !strings.Contains(fmt.Sprint(ents[1].Err), "no manifest") {
			t.Fatalf("list after the kill = %+v, want the committed one and an uncommitted one", ents)
		}
		objs, _ := s.List(ctx, "")
		for _, o := range objs {
			if strings.Contains(o.Key, "optim") {
				t.Errorf("the half-streamed blob is visible as %s (%d bytes)", o.Key, o.Size)
			}
		}
		// The next checkpoint takes a fresh seq; GC then clears the wreck.
		m := mustSave(t, c, testMeta(1, 300, false), Blob{Name: "netB.safetensors", Data: []byte("next")})
		if m.Seq != 3 {
			t.Errorf("next seq %d, want 3 (past the abandoned 2)", m.Seq)
		}
		if _, err := c.GC(ctx, 5); err != nil {
			t.Fatal(err)
		}
		if ents, _ := c.List(ctx); len(ents) != 2 {
			t.Errorf("after GC %d entries, want 2 committed", len(ents))
		}
	})
}

func TestShards(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		traj := make([]float32, 4*21*2)
		for i := range traj {
			traj[i] = float32(i) / 7
		}
		k := ShardKey{Run: "run-1", Phase: 3, Generation: 12, Shard: 42}
		if k.Key() != "runs/run-1/cache/p0003/g000012/shard-00042.sbshard" {
			t.Errorf("shard key %q", k.Key())
		}
		if _, _, err := GetShard(ctx, s, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing shard: %v, want ErrNotFound", err)
		}
		if err := PutShard(ctx, s, k, []Tensor{F32Tensor("x", []int{4, 21, 2}, traj)}, map[string]string{"items": "4"}); err != nil {
			t.Fatal(err)
		}
		if err := PutShard(ctx, s, k, nil, map[string]string{"sbtrain.run": "x"}); err == nil {
			t.Error("reserved metadata key accepted")
		}
		ts, meta, err := GetShard(ctx, s, k)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := ts[0].Float32s()
		for i := range traj {
			if math.Float32bits(got[i]) != math.Float32bits(traj[i]) {
				t.Fatalf("trajectory value %d differs", i)
			}
		}
		if meta["items"] != "4" || meta["sbtrain.shard"] != "42" {
			t.Errorf("metadata %v", meta)
		}
		// The same bytes under another shard's key are rejected.
		other := k
		other.Shard = 43
		put(t, s, other.Key(), get(t, s, k.Key()))
		if _, _, err := GetShard(ctx, s, other); err == nil || !strings.Contains(err.Error(), "sbtrain.shard") {
			t.Errorf("misplaced shard: %v, want a metadata mismatch", err)
		}
		corrupt(t, s, k.Key(), func(b []byte) []byte { b[len(b)-3] ^= 0x10; return b })
		if _, _, err := GetShard(ctx, s, k); err == nil || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), k.Key()) {
			t.Errorf("damaged shard: %v, want a checksum error naming it", err)
		}
		corrupt(t, s, k.Key(), func(b []byte) []byte { return b[:20] })
		if _, _, err := GetShard(ctx, s, k); err == nil {
			t.Error("truncated shard accepted")
		}
		if err := DeleteGeneration(ctx, s, "run-1", 3, 12); err != nil {
			t.Fatal(err)
		}
		if objs, _ := s.List(ctx, "runs/run-1/cache/"); len(objs) != 0 {
			t.Errorf("DeleteGeneration left %v", keys(objs))
		}
	})
}

// flakyStore fails reads of one key with an I/O error, as a cut connection
// would.
type flakyStore struct {
	Store
	failKey string
}

func (f flakyStore) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if key == f.failKey {
		return nil, ObjectInfo{}, fmt.Errorf("get %s: connection reset by peer", key)
	}
	return f.Store.Get(ctx, key)
}

// TestIOErrorDoesNotFallBack: an error that says nothing about the
// checkpoint's content stops the load instead of silently loading an older
// checkpoint.
func TestIOErrorDoesNotFallBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		c, _ := newCkpts(t, s)
		mustSave(t, c, testMeta(0, 1, false), Blob{Name: "a.bin", Data: []byte("old")})
		m := mustSave(t, c, testMeta(0, 2, false), Blob{Name: "a.bin", Data: []byte("new")})
		for _, key := range []string{m.Blobs[0].Key, manifestKeyOf(m)} {
			fc, _ := newCkpts(t, flakyStore{s, key})
			if l, err := fc.LoadLatest(ctx); err == nil || errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "connection reset") {
				t.Errorf("read error on %s: loaded %v, err %v; want the I/O error, no fallback", key, l != nil, err)
			}
			if _, err := fc.GC(ctx, 1); err == nil {
				t.Errorf("GC went ahead despite a read error on %s", key)
			}
		}
		if l := mustLoad(t, c); l.Manifest.Seq != m.Seq {
			t.Errorf("loaded %d, want %d", l.Manifest.Seq, m.Seq)
		}
	})
}

func TestParseID(t *testing.T) {
	for _, id := range []ID{{1, 0, 0}, {42, 3, 1500}, {99_999_999, 9999, 999_999_999_999}} {
		got, err := ParseID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseID(%q) = %+v, %v; want %+v", id.String(), got, err, id)
		}
	}
	for _, bad := range []string{
		"", "00000001", "00000001-p0000", "1-p0-s0", "00000001-p0000-s00000000000",
		"00000001-p0000-s000000000000/", "00000001-p0000-s000000000000x", " 00000001-p0000-s000000000000",
		"0000000a-p0000-s000000000000", "00000001-q0000-s000000000000", "-0000001-p0000-s000000000000",
		"000000001-p0000-s000000000000", "00000001-p0000-s000000000000\n",
	} {
		if id, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) = %+v, want an error", bad, id)
		} else if !strings.Contains(err.Error(), "00000001-p0000-s000000000000") || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseID(%q): error %q does not name the string and the expected form", bad, err)
		}
	}
}
