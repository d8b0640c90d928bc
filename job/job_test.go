package job

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/method"
)

const dsbYAML = `
name: jobtest
method: dsb
seed: 3
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 48, lr: 0.002, steps: 7, ema_decay: 0.99}
dsb: {steps: 6, gamma_min: 0.01, gamma_max: 0.02, iterations: 2, warm_start: true, cache_size: 96, cache_shards: 6, cache_refresh: 3}
`

const siYAML = `
name: jobtest-si
method: si
seed: 4
data: {name: checkerboard}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 64, lr: 0.002, steps: 9, ema_decay: 0.99}
si: {train_denoiser: true}
`

func newJob(t testing.TB, y string) *Job {
	t.Helper()
	cfg, err := config.Parse([]byte(y), "test config")
	if err != nil {
		t.Fatal(err)
	}
	j, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// memShards builds every shard once and counts builds.
type memShards struct {
	m      map[ShardKey]method.Shard
	builds int
}

func (c *memShards) Shard(_ context.Context, k ShardKey, build func() (method.Shard, error)) (method.Shard, error) {
	if c.m == nil {
		c.m = map[ShardKey]method.Shard{}
	}
	if s, ok := c.m[k]; ok {
		return s, nil
	}
	s, err := build()
	if err != nil {
		return nil, err
	}
	c.builds++
	c.m[k] = s
	return s, nil
}

// owners splits shards into n contiguous blocks, as the coordinator does.
func owners(shards, n int) [][]int {
	out := make([][]int, n)
	for i := 0; i < shards; i++ {
		r := i * n / shards
		out[r] = append(out[r], i)
	}
	return out
}

// runReplicas trains replicas in lockstep, summing their buffers in rank
// order (what a ring all-reduce computes up to summation order), until
// stop (or the end); every replica's state is returned.
func runReplicas(t testing.TB, states []*State, stop Position) {
	t.Helper()
	ctx := context.Background()
	n := len(states)
	caches := make([]*memShards, n)
	for i := range caches {
		caches[i] = &memShards{}
	}
	for guard := 0; !states[0].Done() && states[0].Position().Less(stop); guard++ {
		if guard > 10000 {
			t.Fatal("no progress")
		}
		own := owners(states[0].job.Shards(), n)
		var sum []float32
		for r, s := range states {
			buf, err := s.Gradient(ctx, own[r], caches[r])
			if err != nil {
				t.Fatal(err)
			}
			if sum == nil {
				sum = append([]float32(nil), buf...)
				continue
			}
			for i, v := range buf {
				sum[i] += v
			}
		}
		for _, s := range states {
			in := append([]float32(nil), sum...)
			if _, err := s.Apply(in); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func replicas(t testing.TB, j *Job, n int) []*State {
	out := make([]*State, n)
	for i := range out {
		s, err := j.Init()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

func encode(t testing.TB, s *State) []byte {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// relDiff is the largest relative L2 difference over the parameter, Adam
// and EMA tensors of two snapshots.
func relDiff(t *testing.T, a, b []byte) float64 {
	t.Helper()
	pa, err := ParamBytes(a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := ParamBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(pa) != len(pb) {
		t.Fatalf("snapshots hold %d and %d tensors", len(pa), len(pb))
	}
	worst := 0.0
	for name, x := range pa {
		y, ok := pb[name]
		if !ok || len(x) != len(y) {
			t.Fatalf("tensor %s differs in presence or size", name)
		}
		var num, den float64
		for i := 0; i+4 <= len(x); i += 4 {
			u := float64(math.Float32frombits(le32(x[i:])))
			v := float64(math.Float32frombits(le32(y[i:])))
			num += (u - v) * (u - v)
			den += u * u
		}
		if den > 0 {
			worst = max(worst, math.Sqrt(num/den))
		}
	}
	return worst
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestWorkerCountInvariance(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
	}{{"dsb", dsbYAML}, {"si", siYAML}, {"dsbm", dsbmYAML}} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(t, tc.yaml)
			one := replicas(t, j, 1)
			runReplicas(t, one, j.End())
			three := replicas(t, j, 3)
			runReplicas(t, three, j.End())
			ref := encode(t, one[0])
			for r, s := range three {
				if !s.Done() {
					t.Fatalf("replica %d at %v, want the end", r, s.Position())
				}
				if d := relDiff(t, ref, encode(t, s)); d > 1e-4 {
					t.Errorf("replica %d of 3 differs from 1 worker by %.3g relative L2, want <= 1e-4", r, d)
				}
			}
			if !bytes.Equal(encode(t, three[0]), encode(t, three[2])) {
				t.Error("replicas of one ring hold different bytes")
			}
		})
	}
}

// TestResumeIsExact cuts runs at several positions, round-trips the state
// through its bytes into a fresh replica set and checks the final bytes
// equal those of an uninterrupted run.
func TestResumeIsExact(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		cut  Position
	}{
		{"dsb mid phase 0", dsbYAML, Position{Phase: 0, Step: 4}},
		{"dsb phase boundary", dsbYAML, Position{Phase: 1, Step: 0}},
		{"dsb mid forward phase", dsbYAML, Position{Phase: 3, Step: 2}},
		{"si mid phase", siYAML, Position{Phase: 0, Step: 5}},
		{"dsbm mid first phase", dsbmYAML, Position{Phase: 0, Step: 4}},
		{"dsbm phase boundary", dsbmYAML, Position{Phase: 2, Step: 0}},
		{"dsbm mid forward phase", dsbmYAML, Position{Phase: 3, Step: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(t, tc.yaml)
			whole := replicas(t, j, 2)
			runReplicas(t, whole, j.End())

			cut := replicas(t, j, 2)
			runReplicas(t, cut, tc.cut)
			if cut[0].Position() != tc.cut {
				t.Fatalf("stopped at %v, want %v", cut[0].Position(), tc.cut)
			}
			b := encode(t, cut[1])
			resumed := make([]*State, 2)
			for i := range resumed {
				s, err := j.Decode(b, "snapshot")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(encode(t, s), b) {
					t.Fatal("decode then encode changed the bytes")
				}
				resumed[i] = s
			}
			runReplicas(t, resumed, j.End())
			if !bytes.Equal(encode(t, resumed[0]), encode(t, whole[0])) {
				t.Errorf("resumed at %v: final state differs from the uninterrupted run (rel %.3g)",
					tc.cut, relDiff(t, encode(t, whole[0]), encode(t, resumed[0])))
			}
		})
	}
}

// TestOneReplicaMatchesSingleProcess: one replica owning every shard takes
// the same steps as dsb.Train, bit for bit.
func TestOneReplicaMatchesSingleProcess(t *testing.T) {
	j := newJob(t, dsbYAML)
	one := replicas(t, j, 1)
	runReplicas(t, one, j.End())
	res, err := dsb.Train(context.Background(), j.Core().(*method.DSB).Options(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fin := one[0].Method().(interface{ Finished() *dsb.Result }).Finished()
	for _, c := range []struct {
		name string
		a, b []float32
	}{
		{"backward params", fin.B.Params(), res.B.Params()},
		{"backward ema", fin.BEMA, res.BEMA},
		{"forward params", fin.F.Params(), res.F.Params()},
		{"forward ema", fin.FEMA, res.FEMA},
	} {
		for i := range c.a {
			if c.a[i] != c.b[i] {
				t.Fatalf("%s[%d]: job %v, dsb.Train %v", c.name, i, c.a[i], c.b[i])
			}
		}
	}
	if _, err := one[0].Model(); err != nil {
		t.Fatalf("model of a finished run: %v", err)
	}
}

func TestDecodeRejectsBadSnapshots(t *testing.T) {
	j := newJob(t, dsbYAML)
	s := replicas(t, j, 1)
	runReplicas(t, s, Position{Phase: 1, Step: 3})
	good := encode(t, s[0])
	other := newJob(t, strings.Replace(dsbYAML, "seed: 3", "seed: 5", 1))
	si := newJob(t, siYAML)
	for _, tc := range []struct {
		name string
		job  *Job
		b    []byte
		want string
	}{
		{"other config", other, good, "config hash"},
		{"other method", si, good, "method"},
		{"truncated", j, good[:len(good)-9], "snapshot"},
		{"garbage", j, []byte("not a snapshot at all"), "snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.job.Decode(tc.b, "snapshot")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCheckpointMetaRoundTrip(t *testing.T) {
	j := newJob(t, dsbYAML)
	for p := 0; p <= j.Phases(); p++ {
		for _, step := range []int64{0, 1, j.StepsPerPhase() - 1} {
			pos := Position{Phase: p, Step: step}
			if j.Check(pos) != nil {
				continue
			}
			if got, err := j.PositionOf(j.CheckpointMeta(pos)); err != nil || got != pos {
				t.Errorf("%v -> %+v -> %v, %v", pos, j.CheckpointMeta(pos), got, err)
			}
		}
	}
	if err := j.Check(Position{Phase: j.Phases(), Step: 1}); err == nil {
		t.Error("a position past the end passed Check")
	}
	if got := fmt.Sprint(j.PhaseName(3)); got != "ipf 2 forward" {
		t.Errorf("phase 3 is %q", got)
	}
}

func TestShardRoundTrip(t *testing.T) {
	j := newJob(t, dsbYAML)
	s := replicas(t, j, 1)[0]
	c := &memShards{}
	if _, err := s.Gradient(context.Background(), []int{0, 2}, c); err != nil {
		t.Fatal(err)
	}
	key := ShardKey{Phase: 0, Gen: 0, Index: 2}
	ts, meta, err := j.EncodeShard(c.m[key])
	if err != nil {
		t.Fatal(err)
	}
	got, err := j.DecodeShard(key, ts, meta)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ts[0].Data, encodeShardData(t, j, got)) {
		t.Fatal("shard changed in a round trip")
	}
	if _, err := j.DecodeShard(ShardKey{Phase: 0, Gen: 0, Index: 3}, ts, meta); err != nil {
		// Index is not stored in the tensors: the key names it, and storage
		// checks the key against the object's metadata.
		t.Fatalf("index comes from the key: %v", err)
	}
	bad := map[string]string{"trajectories": "7", "steps": meta["steps"], "dim": meta["dim"]}
	if _, err := j.DecodeShard(key, ts, bad); err == nil {
		t.Fatal("a shard with the wrong trajectory count was accepted")
	}
}

// encodeShardData is the inputs tensor's bytes.
func encodeShardData(t *testing.T, j *Job, s method.Shard) []byte {
	t.Helper()
	ts, _, err := j.EncodeShard(s)
	if err != nil {
		t.Fatal(err)
	}
	return ts[0].Data
}
