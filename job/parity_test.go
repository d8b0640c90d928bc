package job

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

// parityRuns has one tiny config per method; a new method adds its row.
// The DSB row runs two IPF iterations so that an iteration's figures come
// from a phase-end checkpoint and the last's from the final one.
var parityRuns = []struct{ name, yaml string }{
	{"dsb", dsbYAML + "eval: {samples: 300, trajectories: 4}\n"},
	{"si", siYAML + "eval: {samples: 300, trajectories: 4, likelihood_points: 20}\n"},
	{"dsbm", dsbmYAML + "eval: {samples: 300, trajectories: 4}\n"},
}

// TestOneReplicaJobMatchesTrain: a distributed run of one replica, which
// checkpoints every phase end as a trainer does and is concluded from its
// checkpoints, ends with the same state bytes (parameters, EMA, Adam) as
// `sbtrain train` in process, and writes the same metrics.json except for
// the timings.
func TestOneReplicaJobMatchesTrain(t *testing.T) {
	ctx := context.Background()
	for _, run := range parityRuns {
		t.Run(run.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(run.yaml), run.name)
			if err != nil {
				t.Fatal(err)
			}
			setup, err := experiment.Prepare(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := experiment.Train(ctx, setup, nil)
			if err != nil {
				t.Fatal(err)
			}

			j, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			store, err := storage.Open(ctx, "file://"+t.TempDir(), storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ckpts, err := storage.NewCheckpoints(store, "parity", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			s, err := j.Init()
			if err != nil {
				t.Fatal(err)
			}
			all, src := owners(j.Shards(), 1)[0], &memShards{}
			for !s.Done() {
				buf, err := s.Sum(ctx, all, src, fixedsum.Alone{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.Apply(slices.Clone(buf)); err != nil {
					t.Fatal(err)
				}
				if s.Position().Step == 0 {
					b := encode(t, s)
					if _, err := ckpts.Save(ctx, j.CheckpointMeta(s.Position()), []storage.Blob{{Name: SnapshotBlob, Data: b}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, _, err := j.Conclude(ctx, ckpts, RunFigures{}, nil)
			if err != nil {
				t.Fatal(err)
			}

			if a, b := stateTensors(t, want.Final, j), stateTensors(t, s.Method(), j); !slices.EqualFunc(a, b, func(x, y storage.Tensor) bool {
				return x.Name == y.Name && bytes.Equal(x.Data, y.Data)
			}) {
				t.Error("final state differs between sbtrain train and the one-replica job")
			}
			wn, gn := want.Model.Nets(), got.Model.Nets()
			if len(wn) != len(gn) {
				t.Fatalf("%d networks from train, %d from the job", len(wn), len(gn))
			}
			for i := range wn {
				if wn[i].Role != gn[i].Role || !slices.Equal(wn[i].Net.Params(), gn[i].Net.Params()) {
					t.Errorf("sampling network %s differs from the job's %s", wn[i].Role, gn[i].Role)
				}
			}
			wm, gm := untimed(t, want.Metrics), untimed(t, got.Metrics)
			if !bytes.Equal(wm, gm) {
				t.Errorf("metrics.json differs:\ntrain %s\njob   %s", wm, gm)
			}
			if cfg.Method == config.MethodDSB && len(got.Metrics.Iterations) != cfg.DSB.Iterations {
				t.Errorf("job metrics have %d ipf iterations, want %d", len(got.Metrics.Iterations), cfg.DSB.Iterations)
			}
		})
	}
}

// stateTensors is a finished state's method tensors.
func stateTensors(t *testing.T, st method.State, j *Job) []storage.Tensor {
	t.Helper()
	w := &method.Writer{}
	if err := st.Encode(j.Phases(), 0, w); err != nil {
		t.Fatal(err)
	}
	if len(w.Tensors) == 0 {
		t.Fatal("a finished state encodes no tensor")
	}
	return w.Tensors
}

// untimed is metrics.json without what timing and the process count set.
func untimed(t *testing.T, m *experiment.Metrics) []byte {
	t.Helper()
	c := *m
	c.WallSeconds, c.SamplesPerSec, c.Workers, c.AllReduceFraction = 0, 0, 0, nil
	c.Phases = slices.Clone(m.Phases)
	for i := range c.Phases {
		c.Phases[i].SamplesPerSec = 0
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
