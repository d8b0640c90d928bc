package trainer

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

// A small DSB run: 2 phases of 5 steps, 4 cache shards, a new cache
// generation every 2 steps.
const shardsYAML = `
name: shardtest
method: dsb
seed: 5
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16, 16]}
train: {batch: 32, lr: 0.002, steps: 5, ema_decay: 0.99}
dsb: {steps: 4, gamma_min: 0.01, gamma_max: 0.02, iterations: 1, warm_start: true, cache_size: 32, cache_shards: 4, cache_refresh: 2}
`

const (
	shardsRun     = "shard-run"
	shardsRefresh = 2
)

func shardsJob(t *testing.T) *job.Job {
	t.Helper()
	cfg, err := config.Parse([]byte(shardsYAML), "test config")
	if err != nil {
		t.Fatal(err)
	}
	j, err := job.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// shardStore is a file store and the directory it keeps objects in.
func shardStore(t *testing.T) (storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := storage.Open(context.Background(), "file://"+dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// countingSource passes requests to a shardCache, counting the builds it
// asks for and keeping the shards it hands out.
type countingSource struct {
	c      *shardCache
	builds int
	got    map[job.ShardKey]*dsb.Shard
}

func (s *countingSource) Shard(ctx context.Context, k job.ShardKey, build func() (method.Shard, error)) (method.Shard, error) {
	sh, err := s.c.Shard(ctx, k, func() (method.Shard, error) {
		s.builds++
		return build()
	})
	if err == nil {
		if s.got == nil {
			s.got = map[job.ShardKey]*dsb.Shard{}
		}
		s.got[k], _ = sh.(*dsb.Shard)
	}
	return sh, err
}

// newSource is a fresh cache on store (a new trainer process) whose
// warnings go to logs.
func newSource(store storage.Store, j *job.Job, logs *bytes.Buffer) *countingSource {
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return &countingSource{c: newShardCache(store, shardsRun, j, log)}
}

// gradientAtStart computes the first step's gradient of a fresh state on
// the owned shards through src, returning a copy of the buffer.
func gradientAtStart(t *testing.T, j *job.Job, owned []int, src job.ShardSource) []float32 {
	t.Helper()
	st, err := j.Init()
	if err != nil {
		t.Fatal(err)
	}
	buf, err := st.Gradient(context.Background(), owned, src)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(buf)
}

func sameShard(a, b *dsb.Shard) bool {
	return a != nil && b != nil && a.Phase == b.Phase && a.Gen == b.Gen && a.Index == b.Index &&
		a.Trajectories == b.Trajectories && a.Steps == b.Steps && a.Dim == b.Dim &&
		slices.Equal(a.Inputs, b.Inputs) && slices.Equal(a.Targets, b.Targets)
}

func TestShardCacheBuildsOnceThenLoads(t *testing.T) {
	j := shardsJob(t)
	store, _ := shardStore(t)
	var logs bytes.Buffer
	owned := []int{1, 2}

	first := newSource(store, j, &logs)
	buf1 := gradientAtStart(t, j, owned, first)
	if first.builds != 2 || first.c.built != 2 || first.c.loaded != 0 {
		t.Fatalf("first cache: %d builds (counted %d), %d loaded; want 2 builds, none loaded",
			first.builds, first.c.built, first.c.loaded)
	}
	for _, i := range owned {
		sk := storage.ShardKey{Run: shardsRun, Phase: 0, Generation: 0, Shard: i}
		if _, _, err := storage.GetShard(context.Background(), store, sk); err != nil {
			t.Errorf("built shard %d was not stored: %v", i, err)
		}
	}
	// The same cache asked again answers from memory.
	gradientAtStart(t, j, owned, first)
	if first.builds != 2 || first.c.loaded != 0 {
		t.Errorf("first cache asked again: %d builds, %d loaded; want 2, 0", first.builds, first.c.loaded)
	}

	// Another trainer's cache on the same store loads without building.
	second := newSource(store, j, &logs)
	buf2 := gradientAtStart(t, j, owned, second)
	if second.builds != 0 || second.c.loaded != 2 {
		t.Fatalf("second cache: %d builds, %d loaded; want 0 builds, 2 loaded", second.builds, second.c.loaded)
	}
	for k, want := range first.got {
		if !sameShard(second.got[k], want) {
			t.Errorf("shard %+v loaded from the store differs from the one built", k)
		}
	}
	if !slices.Equal(buf1, buf2) {
		t.Error("the gradient on loaded shards differs from the one on built shards")
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected warnings:\n%s", logs.String())
	}
}

func TestShardCacheRebuildsDamagedShard(t *testing.T) {
	const index = 3
	sk := storage.ShardKey{Run: shardsRun, Phase: 0, Generation: 0, Shard: index}
	for _, tc := range []struct {
		name string
		// damage spoils the stored object at path (key sk in store).
		damage func(t *testing.T, store storage.Store, path string)
		want   string // in the warning
	}{
		{"flipped byte", func(t *testing.T, _ storage.Store, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-5] ^= 0x40
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "checksum mismatch"},
		{"overwritten middle", func(t *testing.T, _ storage.Store, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 16), 200); err != nil {
				t.Fatal(err)
			}
		}, "damaged"},
		{"truncated", func(t *testing.T, _ storage.Store, path string) {
			if err := os.Truncate(path, 10); err != nil {
				t.Fatal(err)
			}
		}, "shorter than its"},
		{"wrong shape", func(t *testing.T, store storage.Store, _ string) {
			// Intact as an object, but not this run's shard.
			v := make([]float32, 6)
			ts := []storage.Tensor{
				storage.F32Tensor("inputs", []int{3, 2}, v),
				storage.F32Tensor("targets", []int{3, 2}, v),
			}
			meta := map[string]string{"trajectories": "1", "steps": "3", "dim": "2"}
			if err := storage.PutShard(context.Background(), store, sk, ts, meta); err != nil {
				t.Fatal(err)
			}
		}, "unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := shardsJob(t)
			store, dir := shardStore(t)
			var logs bytes.Buffer
			built := newSource(store, j, &logs)
			gradientAtStart(t, j, []int{index}, built)
			want := built.got[job.ShardKey{Phase: 0, Gen: 0, Index: index}]

			tc.damage(t, store, filepath.Join(dir, filepath.FromSlash(sk.Key())))

			again := newSource(store, j, &logs)
			gradientAtStart(t, j, []int{index}, again)
			if again.builds != 1 || again.c.loaded != 0 {
				t.Fatalf("after damage: %d builds, %d loaded; want the shard rebuilt, not trusted", again.builds, again.c.loaded)
			}
			if !sameShard(again.got[job.ShardKey{Phase: 0, Gen: 0, Index: index}], want) {
				t.Error("the rebuilt shard differs from the original")
			}
			if w := logs.String(); !strings.Contains(w, "level=WARN") || !strings.Contains(w, sk.Key()) || !strings.Contains(w, tc.want) {
				t.Errorf("warning does not name the shard %s and %q:\n%s", sk.Key(), tc.want, w)
			}

			// The rebuild replaced the damaged object.
			logs.Reset()
			healed := newSource(store, j, &logs)
			gradientAtStart(t, j, []int{index}, healed)
			if healed.builds != 0 || healed.c.loaded != 1 || logs.Len() != 0 {
				t.Errorf("after the rebuild: %d builds, %d loaded, warnings %q; want it loaded cleanly", healed.builds, healed.c.loaded, logs.String())
			}
		})
	}
}

func TestShardCacheEvictsOlderGenerations(t *testing.T) {
	j := shardsJob(t)
	store, _ := shardStore(t)
	var logs bytes.Buffer
	src := newSource(store, j, &logs)
	owned := []int{0, 1, 2, 3}
	st, err := j.Init()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seen := map[job.ShardKey]bool{}
	for !st.Done() {
		pos := st.Position()
		buf, err := st.Gradient(ctx, owned, src)
		if err != nil {
			t.Fatal(err)
		}
		gen := uint64(pos.Step / shardsRefresh)
		if len(src.c.mem) != len(owned) {
			t.Errorf("at %v: %d shards in memory, want the %d of the current generation", pos, len(src.c.mem), len(owned))
		}
		for k := range src.c.mem {
			if k.Phase != pos.Phase || k.Gen != gen {
				t.Errorf("at %v (generation %d): shard %+v still in memory", pos, gen, k)
			}
			seen[k] = true
		}
		// One replica owning every shard: its buffer is the sum.
		if _, err := st.Apply(buf); err != nil {
			t.Fatal(err)
		}
	}
	// 2 phases of 5 steps with a new generation every 2 steps: 3
	// generations a phase, each built once.
	if want := 2 * 3 * len(owned); len(seen) != want || src.builds != want {
		t.Errorf("%d shards seen, %d built; want %d each", len(seen), src.builds, want)
	}
	// Eviction is from memory only: every generation stays loadable.
	for k := range seen {
		sk := storage.ShardKey{Run: shardsRun, Phase: k.Phase, Generation: int(k.Gen), Shard: k.Index}
		if _, _, err := storage.GetShard(ctx, store, sk); err != nil {
			t.Errorf("evicted shard %s is not in the store: %v", sk.Key(), err)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected warnings:\n%s", logs.String())
	}
}
