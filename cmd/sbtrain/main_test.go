package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input must end in exit code 2 and a one-line error naming the problem.
func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const ok = "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, dim: 2}\n"
	points3D := write("points3d.csv", "1,2,3\n4,5,6\n")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"train", "--bogus"}, "flag provided but not defined: -bogus"},
		{"missing config file", []string{"train", "--config", filepath.Join(dir, "absent.yaml")}, "absent.yaml"},
		{"unknown field", []string{"train", "--config", write("unknown.yaml", ok+"colour: blue\n")}, "field colour not found"},
		{"wrong type", []string{"train", "--config", write("type.yaml", ok+"train: {steps: lots}\n")}, "cannot unmarshal !!str `lots` into int"},
		{"odd N", []string{"train", "--config", write("odd.yaml", ok+"dsb: {steps: 7}\n")}, "dsb.steps: 7"},
		{"non-positive gamma", []string{"train", "--config", write("gamma.yaml", ok+"dsb: {gamma_min: 0}\n")}, "dsb.gamma_min: 0, want > 0"},
		{"missing data file", []string{"train", "--config", write("nofile.yaml", "method: dsb\ndata: {name: points, path: "+filepath.Join(dir, "nope.csv")+"}\nprior: {name: gaussian, dim: 2}\n")}, "nope.csv"},
		{"point file of wrong dimension", []string{"train", "--config", write("dim.yaml", "method: dsb\ndata: {name: points, path: "+points3D+"}\nprior: {name: gaussian, dim: 2}\n")}, "prior: dimension 2 differs from data dimension 3"},
		{"eval without run", []string{"eval"}, "--run is required"},
		{"trainer join without a port", []string{"trainer", "--join", "coordinator"}, `--join "coordinator": want host:port`},
		{"trainer host not an IP", []string{"trainer", "--join", "127.0.0.1:7946", "--host", "localhost"}, `--host "localhost": want an IP address`},
		{"trainer ports out of range", []string{"trainer", "--join", "127.0.0.1:7946", "--ring-port", "70000"}, "--ring-port 70000: want 0 (any free port) to 65535"},
		{"trainer ports clash", []string{"trainer", "--join", "127.0.0.1:7946", "--gossip-port", "7946", "--ring-port", "7946"}, "--gossip-port and --ring-port are both 7946"},
		{"trainer skew limit", []string{"trainer", "--join", "127.0.0.1:7946", "--ring-skew-limit", "0s"}, "--ring-skew-limit, --coordinator-timeout and --store-outage must be positive"},
		{"local skew limit", []string{"local", "--ring-skew-limit", "-1m"}, "--ring-skew-limit -1m0s: want a positive duration"},
		{"trainer cpus not a list", []string{"trainer", "--join", "127.0.0.1:7946", "--cpus", "0-x"}, `--cpus: cpu list "0-x"`},
		{"trainer cpus out of range", []string{"trainer", "--join", "127.0.0.1:7946", "--cpus", "4096"}, `--cpus: cpu list "4096"`},
		{"bench step threads", []string{"bench", "step", "--threads", "100000"}, "--threads 100000: want 1.."},
		{"bench step threads zero", []string{"bench", "step", "--threads", "0"}, "--threads 0: want 1.."},
		{"bench step unet image size", []string{"bench", "step", "--arch", "unet", "--image", "1,30,30"}, "Image H, W = 30, 30: want both divisible by 2^(levels-1) = 4"},
		{"bench step unet groups", []string{"bench", "step", "--arch", "unet", "--channels", "32,60"}, "Channels[1] = 60: not divisible by Groups 8"},
		{"bench step arch", []string{"bench", "step", "--arch", "resnet"}, `--arch "resnet": want mlp, dsb2d or unet`},
		{"unet image of another size than the data", []string{"train", "--config", write("unetdim.yaml", ok+"model: {arch: unet, image: [1, 4, 4]}\n")}, "model.image: 1x4x4 = 16 values, but the data (moons) has dimension 2"},
		{"unet without an image shape", []string{"train", "--config", write("unetnoimage.yaml", ok+"model: {arch: unet}\n")}, "model.image: arch unet needs the image shape"},
		{"sample of a missing run", []string{"sample", "--run", filepath.Join(dir, "norun")}, "norun"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := runMain(c.args, &stderr)
			msg := strings.TrimSpace(stderr.String())
			if code != 2 {
				t.Fatalf("exit code %d, want 2 (stderr %q)", code, msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Fatalf("stderr %q does not mention %q", msg, c.want)
			}
			// The flag package follows a bad flag with the usage, as Go tools do.
			if c.name != "unknown command" && c.name != "unknown flag" && strings.Contains(msg, "\n") {
				t.Fatalf("error spans several lines:\n%s", msg)
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name, c := range commands {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := runMain([]string{name, "--help"}, &stderr); code != 0 {
				t.Fatalf("%s --help exits %d: %s", name, code, stderr.String())
			}
			if c.hidden {
				return
			}
			if !strings.Contains(stderr.String(), "Usage: sbtrain "+name) {
				t.Fatalf("%s --help prints no usage line:\n%s", name, stderr.String())
			}
		})
	}
}
