package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trainTinyBridge trains one IPF (or IMF) iteration of a DSB or DSBM run
// between 2D Gaussians and returns its directory.
func trainTinyBridge(t *testing.T, method string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := "name: tiny-" + method + "\nmethod: " + method + "\nseed: 3\nprior: {name: gaussian, dim: 2}\n" +
		"data: {name: gaussian, dim: 2, mean: [1, -1]}\n" +
		"model: {arch: mlp, hidden: [16], activation: silu}\n" +
		"train: {batch: 64, lr: 0.003, steps: 10}\n" +
		method + ": {steps: 6, iterations: 1, cache_size: 128, cache_shards: 2, cache_refresh: 10}\n" +
		"eval: {samples: 64, trajectories: 4}\n"
	path := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	var stderr bytes.Buffer
	if code := runMain([]string{"train", "--config", path, "--out", run, "--quiet"}, &stderr); code != 0 {
		t.Fatalf("train %s: exit %d: %s", method, code, stderr.String())
	}
	return run
}

// A two-network bridge samples both ways, from draws or from a file of
// points; what cannot be done names the flag.
func TestSampleBridgeDirections(t *testing.T) {
	for _, method := range []string{"dsb", "dsbm"} {
		t.Run(method, func(t *testing.T) {
			run := trainTinyBridge(t, method)
			points := writePoints(t, "1,-1\n0.5,-0.5\n2,0\n")
			wrong := writePoints(t, "1,2,3\n")
			ok := []struct {
				args []string
				rows int
			}{
				{[]string{"--n", "20"}, 20},
				{[]string{"--n", "20", "--direction", "backward"}, 20},
				{[]string{"--n", "20", "--direction", "forward"}, 20},
				{[]string{"--from", points, "--direction", "forward"}, 3},
				{[]string{"--from", points, "--n", "2"}, 2},
			}
			outs := map[string]string{}
			for _, c := range ok {
				out := filepath.Join(t.TempDir(), "s.csv")
				var stderr bytes.Buffer
				if code := runMain(append([]string{"sample", "--run", run, "--out", out}, c.args...), &stderr); code != 0 {
					t.Fatalf("%v: exit %d: %s", c.args, code, stderr.String())
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(string(b), "\n"); n != c.rows {
					t.Errorf("%v: %d rows, want %d", c.args, n, c.rows)
				}
				outs[strings.Join(c.args, " ")] = string(b)
			}
			if outs["--n 20"] != outs["--n 20 --direction backward"] {
				t.Error("backward is not the default direction")
			}
			if outs["--n 20"] == outs["--n 20 --direction forward"] {
				t.Error("forward gave the backward samples")
			}
			bad := []struct {
				args []string
				want string
			}{
				{[]string{"--direction", "reverse"}, `--direction "reverse"`},
				{[]string{"--from", wrong}, "points of dimension 3, but run"},
				{[]string{"--from", points, "--n", "4"}, "holds 3 points"},
				{[]string{"--from", filepath.Join(t.TempDir(), "missing.csv")}, "--from"},
				{[]string{"--sampler", "rk4"}, "apply to si runs"},
			}
			for _, c := range bad {
				var stderr bytes.Buffer
				if code := runMain(append([]string{"sample", "--run", run, "--out", filepath.Join(t.TempDir(), "s.csv")}, c.args...), &stderr); code != 2 {
					t.Fatalf("%v: exit %d, want 2: %s", c.args, code, stderr.String())
				}
				if !strings.Contains(stderr.String(), c.want) {
					t.Errorf("%v: stderr %q does not mention %q", c.args, stderr.String(), c.want)
				}
			}
		})
	}
}
