package job

import (
	"bytes"
	"context"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsbm"
	"github.com/sbtrain/sbtrain/method"
)

const dsbmYAML = `
name: jobtest-dsbm
method: dsbm
seed: 6
data: {name: moons}
prior: {name: 8gaussians}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 48, lr: 0.002, steps: 7, ema_decay: 0.99}
dsbm: {steps: 5, iterations: 2, warm_start: true, cache_size: 96, cache_shards: 6, cache_refresh: 3}
`

// One DSBM replica owning every shard takes the same steps as dsbm.Train,
// bit for bit: the sequencing lives once, in dsbm.Result.OpenPhase.
func TestOneDSBMReplicaMatchesSingleProcess(t *testing.T) {
	j := newJob(t, dsbmYAML)
	one := replicas(t, j, 1)
	runReplicas(t, one, j.End())
	res, err := dsbm.Train(context.Background(), j.Core().(*method.DSBM).Options(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fin := one[0].Method().(interface{ Finished() *dsbm.Result }).Finished()
	for _, c := range []struct {
		name string
		a, b []float32
	}{
		{"backward params", fin.B.Params(), res.B.Params()},
		{"backward ema", fin.BEMA, res.BEMA},
		{"forward params", fin.F.Params(), res.F.Params()},
		{"forward ema", fin.FEMA, res.FEMA},
	} {
		if len(c.a) == 0 || len(c.a) != len(c.b) {
			t.Fatalf("%s: %d values in the job, %d from dsbm.Train", c.name, len(c.a), len(c.b))
		}
		for i := range c.a {
			if c.a[i] != c.b[i] {
				t.Fatalf("%s[%d]: job %v, dsbm.Train %v", c.name, i, c.a[i], c.b[i])
			}
		}
	}
	m, err := one[0].Model()
	if err != nil {
		t.Fatalf("model of a finished run: %v", err)
	}
	if _, ok := m.(*method.DSBMModel); !ok {
		t.Fatalf("model is a %T, want *method.DSBMModel", m)
	}
}

func TestDSBMShardRoundTrip(t *testing.T) {
	j := newJob(t, dsbmYAML)
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
	again, _, err := j.EncodeShard(got)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts {
		if !bytes.Equal(ts[i].Data, again[i].Data) {
			t.Fatalf("tensor %s changed in a round trip", ts[i].Name)
		}
	}
	bad := map[string]string{"pairs": "7", "dim": meta["dim"]}
	if _, err := j.DecodeShard(key, ts, bad); err == nil {
		t.Fatal("a shard with the wrong pair count was accepted")
	}
	if _, err := j.DecodeShard(ShardKey{Phase: 1, Gen: 0, Index: 2}, ts, meta); err != nil {
		t.Fatalf("a forward phase's shard has the same shape: %v", err)
	}
}
