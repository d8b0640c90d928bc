package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// The runs of these tests are the embedded default config cut to 2 IPF
// iterations of 600 steps (where float32 sums in ownership order already
// moved the weights 0.3 apart between 1 and 2 workers) and a small
// interpolant config of the same length.
const (
	cutIterations = 2
	cutSteps      = 600
)

// cutDefaultConfig writes the embedded default config with 2 iterations
// of 600 steps.
func cutDefaultConfig(t *testing.T) string {
	t.Helper()
	body := string(config.DefaultYAML())
	for _, r := range [][2]string{{"\n  steps: 1000\n", "\n  steps: 600\n"}, {"\n  iterations: 8\n", "\n  iterations: 2\n"}} {
		if !strings.Contains(body, r[0]) {
			t.Fatalf("the embedded default config has no %q to cut", strings.TrimSpace(r[0]))
		}
		body = strings.Replace(body, r[0], r[1], 1)
	}
	return writeTestConfig(t, "default-cut.yaml", body)
}

// siCutConfig is an interpolant between a Gaussian and the moons, with
// the denoiser trained too, so that both networks' sums are held to the
// same bytes.
func siCutConfig(t *testing.T) string {
	t.Helper()
	return writeTestConfig(t, "si-cut.yaml", `name: si-cut
method: si
seed: 5
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [64, 64]}
train: {batch: 256, lr: 0.002, steps: 600, ema_decay: 0.99}
si: {path: linear, gamma: sqrt, train_denoiser: true, sampler: heun, sampler_steps: 50}
eval: {samples: 500}
`)
}

func writeTestConfig(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err != nil {
		t.Fatalf("test config %s: %v", name, err)
	}
	return path
}

// netFiles reads the networks a run wrote to out (*.safetensors, the
// sampling weights), by file name.
func netFiles(t *testing.T, out string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(out, "*.safetensors"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no networks in %s (%v)", out, err)
	}
	nets := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		nets[filepath.Base(p)] = b
	}
	return nets
}

// requireSameNets fails unless both runs wrote the same network files,
// byte for byte.
func requireSameNets(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range want {
			if !yield(n) {
				return
			}
		}
	})
	if len(got) != len(want) {
		t.Errorf("%s wrote %d networks, want %d (%v)", what, len(got), len(want), names)
	}
	for _, n := range names {
		if !bytes.Equal(got[n], want[n]) {
			t.Errorf("%s: %s differs from the reference run's", what, n)
		}
	}
}

// TestSameBytesAnyWorkerCount trains the same run with `sbtrain train`
// and with `local` at 1, 2 and 3 trainers: the networks written, and the
// parameters, Adam moments and EMA of the final checkpoints, are the same
// bytes.
func TestSameBytesAnyWorkerCount(t *testing.T) {
	skipUnderRace(t)
	for _, tc := range []struct {
		name, run string
		config    func(*testing.T) string
		phases    int
	}{
		{"dsb default", "demo", cutDefaultConfig, 2 * cutIterations},
		{"si", "si-cut", siCutConfig, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.phases > 1 && !strings.HasPrefix(nn.BLAS(), "OpenBLAS") {
				// dsb2d's steps at batch 512 take about ten times longer
				// on the pure-Go BLAS: train alone would outlast the
				// process timeout. The OpenBLAS build (make test) runs it.
				t.Skipf("the default config needs OpenBLAS to train within %s (this build: %s)", procTimeout(), nn.BLAS())
			}
			cfg := tc.config(t)
			dir := t.TempDir()
			trainOut := filepath.Join(dir, "train")
			tr := startProc(t, "train", dir, "train", "--config", cfg, "--out", trainOut, "--quiet")
			tr.waitOK(procTimeout())
			want := netFiles(t, trainOut)
			var ref finalState
			for _, workers := range []int{1, 2, 3} {
				name := "local --workers " + string(rune('0'+workers))
				storeDir, out := filepath.Join(dir, name, "store"), filepath.Join(dir, name, "out")
				p := startProc(t, name, dir, "local", "--config", cfg, "--workers", string(rune('0'+workers)),
					"--store", "file://"+storeDir, "--out", out, "--checkpoint-every", "100", "--quiet")
				p.logDirs = []string{filepath.Join(out, "logs")}
				p.waitOK(procTimeout())
				requireSameNets(t, name+" against train", netFiles(t, out), want)
				st := readFinalRun(t, openStore(t, "file://"+storeDir, storage.Options{}), tc.run, tc.phases, cutSteps)
				if workers == 1 {
					ref = st
					continue
				}
				requireSameBytes(t, st, ref)
			}
		})
	}
}
