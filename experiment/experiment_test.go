package experiment

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsbm"
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
	// The scaled drift and a finer sampler than the cache's: the round trip
	// holds only if Load restores both.
	{"dsbm-scaled", `
name: tiny-dsbm-scaled
method: dsbm
data: {name: gaussian, dim: 2, mean: [-0.5], var: [1]}
prior: {name: gaussian, dim: 2, mean: [0.5]}
model: {arch: mlp, hidden: [16]}
train: {batch: 64, lr: 0.001, steps: 20}
dsbm: {steps: 5, sample_steps: 7, scaled_drift: true, iterations: 2, cache_size: 256, cache_shards: 4, cache_refresh: 10}
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
	_, out := trainYAML(t, "dsb", tinyRuns[0].yaml, nil)
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

// countingModel counts the Generate calls that reach the model.
type countingModel struct {
	Model
	generated int
}

func (m *countingModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	m.generated++
	return m.Model.Generate(ctx, start, seed, paths)
}

// trainYAML parses, edits (when edit is set), prepares and trains a config.
func trainYAML(t *testing.T, name, yaml string, edit func(*config.Config)) (*Setup, *Outcome) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), name)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	setup, err := Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Train(context.Background(), setup, nil)
	if err != nil {
		t.Fatal(err)
	}
	return setup, out
}

func trainTiny(t *testing.T, name string, edit func(*config.Config)) (*Setup, *Outcome) {
	t.Helper()
	for _, run := range tinyRuns {
		if run.name == name {
			return trainYAML(t, run.name, run.yaml, edit)
		}
	}
	t.Fatalf("no tiny run %q", name)
	return nil, nil
}

// The final model is the last iteration's, so its evaluation must reuse
// that one's samples rather than draw them again; other weights must not.
func TestEvaluateSamplesTheSameNetworksOnce(t *testing.T) {
	setup, out := trainTiny(t, "dsbm-scaled", nil)
	ev, err := setup.NewEvaluator()
	if err != nil {
		t.Fatal(err)
	}
	m := &countingModel{Model: out.Model}
	first, _, err := ev.Evaluate(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	first.Iteration = 3 // what Evaluator.Iteration does to its copy
	second, _, err := ev.Evaluate(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if m.generated != 1 {
		t.Errorf("the same networks were sampled %d times, want once", m.generated)
	}
	if second.Iteration != 0 || second.Distances != first.Distances {
		t.Errorf("the reused figures differ: %+v, want %+v with iteration 0", second, first)
	}

	dm := out.Model.(*DSBMModel)
	moved, err := dm.Backward.Clone()
	if err != nil {
		t.Fatal(err)
	}
	moved.Params()[0] += 0.5
	other := *dm
	other.Backward = moved
	m.Model = &other
	third, _, err := ev.Evaluate(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if m.generated != 2 {
		t.Errorf("changed weights were sampled %d times in all, want 2", m.generated)
	}
	if third.Distances == first.Distances {
		t.Error("changed weights kept the old figures")
	}
}

func TestEvalSwitchesTrimTheFigures(t *testing.T) {
	tests := []struct {
		name           string
		edit           func(*config.Config)
		iterations     int
		forwardFigures bool
	}{
		{"every iteration, both directions", nil, 2, true},
		{"final_only", func(c *config.Config) { c.Eval.FinalOnly = true }, 0, true},
		{"skip_forward", func(c *config.Config) { c.Eval.SkipForward = true }, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, out := trainTiny(t, "dsbm-scaled", tt.edit)
			if n := len(out.Metrics.Iterations); n != tt.iterations {
				t.Errorf("%d iteration figures, want %d", n, tt.iterations)
			}
			final := out.Metrics.Final
			if final == nil || !(final.SlicedW2Ratio > 0) {
				t.Fatalf("final figures missing: %+v", final)
			}
			figures := append([]*Figures{final}, out.Metrics.Iterations...)
			for _, f := range figures {
				if got := f.Forward != nil; got != tt.forwardFigures {
					t.Errorf("iteration %d: forward figures %v, want %v", f.Iteration, got, tt.forwardFigures)
				}
			}
		})
	}
}

func TestDSBMSampleStepsSetTheSampler(t *testing.T) {
	_, out := trainTiny(t, "dsbm-scaled", nil)
	gen, err := out.Model.Generate(context.Background(), make([]float32, 2*3), 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(gen.Paths) != 8 {
		t.Errorf("%d states along the chain, want dsbm.sample_steps + 1 = 8", len(gen.Paths))
	}
}

// The training-time switches must reach the bridges' options.
func TestBridgeSwitchesReachTheTrainers(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		test func(*Setup) (bool, error)
	}{
		{"dsb.posterior_target", func(c *config.Config) { c.DSB.PosteriorTarget = true }, func(s *Setup) (bool, error) {
			o, err := s.DSBOptions()
			return o.PosteriorTarget, err
		}},
		{"dsbm.scaled_drift", func(c *config.Config) { c.DSBM.ScaledDrift = true }, func(s *Setup) (bool, error) {
			o, err := s.DSBMOptions()
			return o.ScaledDrift, err
		}},
		{"dsbm.sample_steps", func(c *config.Config) { c.DSBM.SampleSteps = 9 }, func(s *Setup) (bool, error) {
			o, err := s.DSBMOptions()
			return o.SampleSteps == 9, err
		}},
		{"dsbm.denoise_cache", func(c *config.Config) { c.DSBM.DenoiseCache = true }, func(s *Setup) (bool, error) {
			o, err := s.DSBMOptions()
			if err != nil {
				return false, err
			}
			chain, err := o.Chain()
			return err == nil && chain.DenoiseCache, err
		}},
		{"dsbm.warm_lr", func(c *config.Config) { c.DSBM.WarmStart, c.DSBM.WarmLR = true, 3e-4 }, func(s *Setup) (bool, error) {
			o, err := s.DSBMOptions()
			return o.HyperFor(dsbm.PhaseID{Iteration: 2, Dir: dsbm.Backward}).LR == 3e-4, err
		}},
		{"dsbm.last_phase", func(c *config.Config) { c.DSBM.LastPhase = config.LastPhaseBackward }, func(s *Setup) (bool, error) {
			o, err := s.DSBMOptions()
			return o.EndOnBackward, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := tinyRuns[0]
			if strings.HasPrefix(tc.name, "dsbm.") {
				run = tinyRuns[2]
			}
			cfg, err := config.Parse([]byte(run.yaml), run.name)
			if err != nil {
				t.Fatal(err)
			}
			before := cfg.Hash()
			tc.edit(cfg)
			if cfg.Hash() == before {
				t.Error("the switch does not change the config hash")
			}
			setup, err := Prepare(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if on, err := tc.test(setup); err != nil || !on {
				t.Errorf("not set in the options (err %v)", err)
			}
		})
	}
}
