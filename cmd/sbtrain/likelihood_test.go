package main

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// trainTinySI trains a few steps of an SI run between 2D Gaussians and
// returns its directory.
func trainTinySI(t *testing.T, denoiser bool) string {
	t.Helper()
	dir := t.TempDir()
	cfg := "name: tiny-si\nmethod: si\nseed: 3\nprior: {name: gaussian, dim: 2}\n" +
		"data: {name: gaussian, dim: 2, mean: [1, -1]}\n" +
		"model: {arch: mlp, hidden: [16], activation: silu}\n" +
		"train: {batch: 64, lr: 0.003, steps: 20}\n" +
		"si: {path: linear, gamma: sqrt, sampler_steps: 8, likelihood_steps: 8, train_denoiser: " + strconv.FormatBool(denoiser) + "}\n" +
		"eval: {samples: 64, likelihood_points: 16, trajectories: 4}\n"
	path := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	var stderr bytes.Buffer
	if code := runMain([]string{"train", "--config", path, "--out", run, "--quiet"}, &stderr); code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr.String())
	}
	return run
}

func writePoints(t *testing.T, rows string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "points.csv")
	if err := os.WriteFile(p, []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readLikelihoodCSV(t *testing.T, path string) [][]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(recs[0], ",") != "index,log_likelihood,std_err" {
		t.Fatalf("header %v", recs[0])
	}
	var out [][]float64
	for _, r := range recs[1:] {
		row := make([]float64, len(r))
		for i, c := range r {
			if row[i], err = strconv.ParseFloat(c, 64); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, row)
	}
	return out
}

func TestLikelihoodCommandWritesPerPointEstimates(t *testing.T) {
	run := trainTinySI(t, true)
	points := writePoints(t, "x,y\n1,-1\n0.5,-0.5\n2,0\n")
	for _, est := range []string{"ode", "sde"} {
		out := filepath.Join(t.TempDir(), est+".csv")
		var stderr bytes.Buffer
		args := []string{"likelihood", "--run", run, "--points", points, "--estimator", est, "--probes", "8", "--eps", "0.5", "--out", out}
		if code := runMain(args, &stderr); code != 0 {
			t.Fatalf("%s: exit %d: %s", est, code, stderr.String())
		}
		rows := readLikelihoodCSV(t, out)
		if len(rows) != 3 {
			t.Fatalf("%s: %d rows, want 3", est, len(rows))
		}
		for i, r := range rows {
			if r[0] != float64(i) || !(r[1] < 0) || r[2] < 0 {
				t.Errorf("%s row %d: %v", est, i, r)
			}
			if est == "sde" && !(r[2] > 0) {
				t.Errorf("sde row %d: standard error %v, want > 0", i, r[2])
			}
		}
	}
}

func TestLikelihoodAndSampleBadInputNameTheField(t *testing.T) {
	run := trainTinySI(t, false)
	good := writePoints(t, "1,-1\n")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"wrong dimension", []string{"likelihood", "--run", run, "--points", writePoints(t, "1,2\n1,2,3\n")}, "line 2: 3 values, but run"},
		{"no score", []string{"likelihood", "--run", run, "--points", good, "--estimator", "sde"}, "--estimator sde: run"},
		{"estimator", []string{"likelihood", "--run", run, "--points", good, "--estimator", "mcmc"}, `--estimator "mcmc"`},
		{"points missing", []string{"likelihood", "--run", run}, "--points is required"},
		{"direction", []string{"sample", "--run", run, "--direction", "up"}, `--direction "up"`},
		{"sde without score", []string{"sample", "--run", run, "--sampler", "sde", "--eps", "1"}, "no score network"},
		{"eps schedule", []string{"sample", "--run", run, "--sampler", "sde", "--eps", "0", "--eps-schedule", "cubic"}, `eps schedule "cubic"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := runMain(c.args, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), c.want)
			}
		})
	}
}

func TestSampleTakesSamplerEpsScheduleAndDirection(t *testing.T) {
	run := trainTinySI(t, true)
	for _, args := range [][]string{
		{"--sampler", "dopri5"},
		{"--sampler", "sde-heun", "--eps", "0.5", "--eps-schedule", "gamma"},
		{"--sampler", "rk4", "--direction", "reverse"},
	} {
		out := filepath.Join(t.TempDir(), "s.csv")
		var stderr bytes.Buffer
		all := append([]string{"sample", "--run", run, "--n", "20", "--out", out}, args...)
		if code := runMain(all, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n != 20 {
			t.Errorf("%v: %d lines, want 20", args, n)
		}
	}
}
