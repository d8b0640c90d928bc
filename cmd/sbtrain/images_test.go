package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/nn"
)

// writeTinyIDX writes n 8x8 two-class images (a bright left or right
// half) as an IDX pair.
func writeTinyIDX(t *testing.T, dir string, n int) (string, string) {
	t.Helper()
	var pix, labels []byte
	for i := range n {
		for y := range 8 {
			for x := range 8 {
				v := byte(20 + (i*11+y*5+x)%50)
				if (x < 4) == (i%2 == 0) {
					v += 160
				}
				pix = append(pix, v)
			}
		}
		labels = append(labels, byte(i%2))
	}
	idx := func(dims []int, data []byte) []byte {
		b := []byte{0, 0, 8, byte(len(dims))}
		for _, d := range dims {
			b = binary.BigEndian.AppendUint32(b, uint32(d))
		}
		return append(b, data...)
	}
	ip, lp := filepath.Join(dir, "images.idx"), filepath.Join(dir, "labels.idx")
	if err := os.WriteFile(ip, idx([]int{n, 8, 8}, pix), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lp, idx([]int{n}, labels), 0o644); err != nil {
		t.Fatal(err)
	}
	return ip, lp
}

// train then sample on image data: samples come out as an N×C×H×W .npy
// and a PNG grid; CSV is refused with the way out.
func TestSampleWritesImages(t *testing.T) {
	t.Setenv("SBTRAIN_CACHE", t.TempDir())
	dir := t.TempDir()
	ip, lp := writeTinyIDX(t, dir, 300)
	cfg := filepath.Join(dir, "run.yaml")
	yaml := fmt.Sprintf(`name: tiny-images
method: si
data: {name: idx, path: %q, labels: %q}
prior: {name: gaussian, dim: 64}
model: {arch: unet, channels: [8, 8], groups: 4}
train: {batch: 16, lr: 0.002, steps: 4}
si: {path: linear, sampler_steps: 3}
eval: {samples: 32, trajectories: 2}
`, ip, lp)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	var stderr bytes.Buffer
	if code := runMain([]string{"train", "--quiet", "--config", cfg, "--out", run}, &stderr); code != 0 {
		t.Fatalf("train exits %d: %s", code, stderr.String())
	}
	for _, f := range []string{"samples.png", "trajectories.png", "trajectories.gif"} {
		if _, err := os.Stat(filepath.Join(run, f)); err != nil {
			t.Errorf("train wrote no %s: %v", f, err)
		}
	}
	npy, grid := filepath.Join(dir, "s.npy"), filepath.Join(dir, "s.png")
	stderr.Reset()
	if code := runMain([]string{"sample", "--run", run, "--n", "5", "--out", npy, "--png", grid}, &stderr); code != 0 {
		t.Fatalf("sample exits %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(npy)
	if err != nil {
		t.Fatal(err)
	}
	hlen := int(binary.LittleEndian.Uint16(b[8:10]))
	header := string(b[10 : 10+hlen])
	if string(b[:8]) != "\x93NUMPY\x01\x00" || (10+hlen)%64 != 0 || !strings.Contains(header, "'shape': (5, 1, 8, 8,)") || !strings.Contains(header, "'<f4'") {
		t.Fatalf("npy header %q (%d bytes)", header, hlen)
	}
	if got := len(b) - 10 - hlen; got != 5*64*4 {
		t.Fatalf("npy holds %d data bytes, want %d", got, 5*64*4)
	}
	f, err := os.Open(grid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("grid: %v", err)
	}
	stderr.Reset()
	if code := runMain([]string{"sample", "--run", run, "--n", "5"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--out FILE.npy") {
		t.Fatalf("CSV of images: exit %d, %s", code, stderr.String())
	}
}

// The quick image examples train end to end as users run them, each with
// image figures and pictures (each under two minutes on two idle cores
// with OpenBLAS; the classifiers are trained on first use and cached).
// The pure-Go BLAS build skips them: its unet convolutions are several
// times slower, and TestSampleWritesImages runs the same path there.
func TestQuickImageExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the quick image examples")
	}
	if !strings.HasPrefix(nn.BLAS(), "OpenBLAS") {
		t.Skipf("the quick image examples are sized for OpenBLAS; this build uses %s", nn.BLAS())
	}
	for _, c := range []struct {
		file     string
		pictures []string
	}{
		{"mnist-si-quick.yaml", []string{"samples.png", "trajectories.png", "trajectories.gif"}},
		{"mnist-dsb-quick.yaml", []string{"samples.png", "trajectories.png", "trajectories.gif"}},
		{"mnist-fashion-dsb-quick.yaml", []string{"samples.png", "trajectories.png", "trajectories.gif", "pairs.png"}},
		{"mnist-fashion-dsbm-quick.yaml", []string{"samples.png", "trajectories.png", "trajectories.gif", "pairs.png"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			out := t.TempDir()
			var stderr bytes.Buffer
			code := runMain([]string{"train", "--quiet", "--config", filepath.Join("..", "..", "examples", c.file), "--out", out}, &stderr)
			if code != 0 {
				if strings.Contains(stderr.String(), "install") && os.Getenv("CI") == "" {
					t.Skip(stderr.String())
				}
				t.Fatalf("train exits %d: %s", code, stderr.String())
			}
			b, err := os.ReadFile(filepath.Join(out, "metrics.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"frechet_floor"`) || !strings.Contains(string(b), `"class_shares"`) {
				t.Fatalf("metrics.json has no image figures:\n%s", b)
			}
			for _, p := range c.pictures {
				if _, err := os.Stat(filepath.Join(out, p)); err != nil {
					t.Errorf("no %s: %v", p, err)
				}
			}
		})
	}
}
