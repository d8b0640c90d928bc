package experiment

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/nn"
)

// Tiny budgets: these tests check the plumbing (train, write, reload,
// evaluate), not the quality, which bridge/ and `make results` hold.
var tinyRuns = []struct {
	name, yaml string
	nets       []string
}{
	{"dsb", `
name: tiny-dsb
method: dsb
data: {name: gaussian, dim: 2, mean: [-0.5], var: [1]}
prior: {name: gaussian, dim: 2, mean: [0.5]}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
dsb: {steps: 4, gamma_min: 0.1, reference: brownian, iterations: 1, cache_size: 256, cache_shards: 4, cache_refresh: 10}
eval: {samples: 400, trajectories: 8}
`, []string{"backward", "forward"}},
	{"si", `
name: tiny-si
method: si
data: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
si: {path: linear, gamma: sqrt, train_denoiser: true, sampler_steps: 10, likelihood_steps: 10}
eval: {samples: 400, likelihood_points: 50, trajectories: 8}
`, []string{"velocity", "denoiser"}},
	{"dsbm", `
name: tiny-dsbm
method: dsbm
data: {name: gaussian, dim: 2, mean: [-0.5], var: [1]}
prior: {name: gaussian, dim: 2, mean: [0.5]}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
dsbm: {steps: 5, iterations: 2, cache_size: 256, cache_shards: 4, cache_refresh: 10}
eval: {samples: 400, trajectories: 8}
`, []string{"backward", "forward"}},
	{"si-score", `
name: tiny-si-score
method: si
data: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
si: {path: linear, gamma: sqrt, train_denoiser: true, field: score, velocity: v, sampler: sde-heun, epsilon: 0.5, eps_schedule: gamma, sampler_steps: 10, likelihood_steps: 10, likelihood_estimator: sde, likelihood_paths: 4}
eval: {samples: 400, likelihood_points: 20, trajectories: 8}
`, []string{"velocity", "denoiser"}},
	{"si-mirror", `
name: tiny-si-mirror
method: si
data: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
prior: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
si: {path: mirror, gamma: sqrt, train_denoiser: true, field: score, sampler: dopri5, sampler_steps: 4, likelihood_steps: 10}
eval: {samples: 400, likelihood_points: 20, trajectories: 8}
`, []string{"velocity", "denoiser"}},
}

func TestTrainWriteLoadEvaluateRoundTrip(t *testing.T) {
	for _, run := range tinyRuns {
		t.Run(run.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(run.yaml), run.name)
			if err != nil {
				t.Fatal(err)
			}
			setup, err := Prepare(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var reports int
			out, err := Train(context.Background(), setup, func(Progress) { reports++ })
			if err != nil {
				t.Fatal(err)
			}
			if reports == 0 {
				t.Error("no progress reported")
			}
			dir := t.TempDir()
			if err := out.Write(dir); err != nil {
				t.Fatalf("%v: %+v %+v", err, out.Metrics.Final, out.Metrics.Final.Likelihood)
			}
			files := []string{ConfigFile, MetricsFile, SamplesPlot, TrajectoriesPlot, LossPlot}
			for _, n := range run.nets {
				files = append(files, n+".safetensors")
			}
			for _, f := range files {
				if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
					t.Errorf("output %s missing or empty: %v", f, err)
				}
			}
			m := out.Metrics
			if m.Final == nil || m.Final.Distances.SlicedW2 <= 0 || m.Final.Baseline.SlicedW2 <= 0 {
				t.Fatalf("final figures incomplete: %+v", m.Final)
			}
			switch cfg.Method {
			case "dsbm":
				if len(m.Iterations) != 2 || m.Final.Gaussian == nil || m.Final.Gaussian.CovMaxErr == nil || len(m.Phases) != 4 ||
					m.Final.Forward == nil || !(m.Final.Forward.SlicedW2Ratio > 0) {
					t.Fatalf("DSBM per-iteration or Gaussian figures missing: %+v", m)
				}
			case "dsb":
				if len(m.Iterations) != 1 || m.Final.Gaussian == nil || m.Final.Gaussian.CovMaxErr == nil {
					t.Fatalf("DSB Gaussian figures missing: %+v", m)
				}
			case "si":
				if m.Final.Likelihood == nil || m.Final.Likelihood.Exact == nil || (m.Final.VelocityRelL2 == nil) != (cfg.SI.Path == "mirror") {
					t.Fatalf("SI likelihood or velocity figures missing: %+v", m.Final)
				}
				if cfg.SI.TrainDenoiser && m.Final.ScoreRelL2 == nil {
					t.Fatalf("SI score figure missing: %+v", m.Final)
				}
				if l := m.Final.Likelihood; cfg.SI.LikelihoodEstimator == "sde" && (l.SDE == nil || l.SDEStdErr == nil || l.ODEOnThem == nil || l.SDEPoints != 20) {
					t.Fatalf("SDE likelihood figures missing: %+v", l)
				}
			}

			// The saved networks must reproduce the final figures exactly.
			s2, model, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if s2.Config.Hash() != cfg.Hash() {
				t.Fatal("reloaded config differs")
			}
			ev, err := s2.NewEvaluator()
			if err != nil {
				t.Fatal(err)
			}
			again, _, err := ev.Evaluate(context.Background(), model)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, m.Final) {
				t.Fatalf("reloaded model evaluates differently:\n got %+v\nwant %+v", again, m.Final)
			}
		})
	}
}

func TestLoadRejectsDamagedNetworks(t *testing.T) {
	cfg, err := config.Parse([]byte(tinyRuns[0].yaml), "dsb")
	if err != nil {
		t.Fatal(err)
	}
	setup, err := Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Train(context.Background(), setup, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := out.Write(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "backward.safetensors")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	net3D, err := nn.New(nn.Spec{Arch: "mlp", Dim: 3, Hidden: []int{16}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	other, err := EncodeNet(RoleNet{Role: "backward", Net: net3D}, "x")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"truncated", good[:len(good)/2], "backward.safetensors"},
		{"empty", nil, "backward.safetensors"},
		{"spec disagrees with tensors", []byte(strings.Replace(string(good), `\"Hidden\":[16]`, `\"Hidden\":[17]`, 1)), "shape"},
		{"other dimension", other, "network dimension 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, c.bytes, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load = %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}
