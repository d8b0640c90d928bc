package eval

import (
	"bytes"
	"flag"
	"image"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/rng"
)

var plotDir = flag.String("plotdir", "", "also save the test plots in this folder, to look at them")

func toyCloud(t *testing.T, name string, n int, seed uint64, dim int) Cloud {
	t.Helper()
	spec := dataset.Spec{Name: name}
	if name == "gaussian" {
		spec.Dim = dim
	}
	d, err := dataset.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return Cloud{Data: dataset.Draw(d, seed, rng.PurposeHeldOut, nil, 0, n), Dim: d.Dim()}
}

// checkPNG decodes the plot and checks its size; with -plotdir it keeps it.
func checkPNG(t *testing.T, name string, b []byte, w, h int) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: not a decodable image: %v", name, err)
	}
	if format != "png" {
		t.Errorf("%s: format %q, want png", name, format)
	}
	if got := img.Bounds().Size(); got != (image.Point{X: w, Y: h}) {
		t.Errorf("%s: size %v, want %dx%d", name, got, w, h)
	}
	// A plot is not a blank canvas: count pixels that are not white.
	inked := 0
	for y := 0; y < h; y += 3 {
		for x := 0; x < w; x += 3 {
			if r, g, b, _ := img.At(x, y).RGBA(); r < 0xf000 || g < 0xf000 || b < 0xf000 {
				inked++
			}
		}
	}
	if inked < w*h/9/100 {
		t.Errorf("%s: only %d sampled pixels are not white", name, inked)
	}
	if *plotDir != "" {
		if err := os.WriteFile(filepath.Join(*plotDir, name+".png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPlotSamples(t *testing.T) {
	data := toyCloud(t, "checkerboard", 5000, 1, 2)
	gen := toyCloud(t, "8gaussians", 5000, 2, 2)
	var b bytes.Buffer
	if err := PlotSamples(&b, data, gen, "checkerboard vs 8gaussians"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "samples", b.Bytes(), 600, 600)

	b.Reset()
	if err := PlotSamples(&b, toyCloud(t, "gaussian", 2000, 1, 5), toyCloud(t, "gaussian", 2000, 2, 5), "5-D Gaussian"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "samples-5d", b.Bytes(), 600, 600)
}

func TestPlotTrajectories(t *testing.T) {
	// Particles move from the moons to the 8 gaussians along straight lines
	// with a little noise, 21 time steps.
	start := toyCloud(t, "moons", 2000, 1, 2)
	end := toyCloud(t, "8gaussians", 2000, 2, 2)
	s := rng.New(1, rng.PurposeBench)
	steps := make([]Cloud, 21)
	for k := range steps {
		tt := float64(k) / 20
		c := Cloud{Data: make([]float32, len(start.Data)), Dim: 2}
		for i := range c.Data {
			noise := 0.3 * math.Sqrt(tt*(1-tt)) * s.Norm()
			c.Data[i] = float32((1-tt)*float64(start.Data[i]) + tt*float64(end.Data[i]) + noise)
		}
		steps[k] = c
	}
	var b bytes.Buffer
	if err := PlotTrajectories(&b, steps, 24, "moons to 8gaussians"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "trajectories", b.Bytes(), 600, 600)
}

func TestPlotLoss(t *testing.T) {
	s := rng.New(2, rng.PurposeBench)
	noisy := func(n int, scale float64) []float64 {
		y := make([]float64, n)
		for i := range y {
			y[i] = scale * (0.05 + 2*math.Exp(-float64(i)/300)) * math.Exp(0.3*s.Norm())
		}
		return y
	}
	steps := make([]float64, 300)
	for i := range steps {
		steps[i] = float64(10 * i)
	}
	curves := []Curve{
		{Name: "backward 1", Y: noisy(2000, 1)},
		{Name: "forward 1", Y: noisy(2000, 0.5)},
		{Name: "eval every 10", X: steps, Y: noisy(300, 0.8)},
	}
	var b bytes.Buffer
	if err := PlotLoss(&b, curves, "DSB losses"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "loss-log", b.Bytes(), 800, 500)

	// SI losses are negative: a linear axis.
	neg := make([]float64, 500)
	for i := range neg {
		neg[i] = -1 - math.Exp(-float64(i)/100) + 0.1*s.Norm()
	}
	b.Reset()
	if err := PlotLoss(&b, []Curve{{Name: "velocity", Y: neg}, {Name: "denoiser", Y: noisy(500, 1)}}, "SI losses"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "loss-linear", b.Bytes(), 800, 500)

	// PlotLines: linear axes even over a wide positive range.
	b.Reset()
	secs := make([]float64, 400)
	for i := range secs {
		secs[i] = 0.5 * float64(i)
	}
	rate := noisy(400, 1000)
	if err := PlotLines(&b, []Curve{{Name: "t0", X: secs, Y: rate}, {Name: "t1", X: secs, Y: noisy(400, 900)}},
		"throughput", "seconds", "samples/s"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "lines", b.Bytes(), 800, 500)
	if err := PlotLines(io.Discard, nil, "x", "s", "samples/s"); err == nil || !strings.Contains(err.Error(), "plot samples/s: no curves") {
		t.Errorf("PlotLines of nothing: %v", err)
	}
}

func TestPlotErrors(t *testing.T) {
	ok := toyCloud(t, "moons", 10, 1, 2)
	three := toyCloud(t, "gaussian", 10, 1, 3)
	one := Cloud{Data: []float32{1, 2, 3}, Dim: 1}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"empty data", PlotSamples(io.Discard, Cloud{Dim: 2}, ok, "x"), "data cloud is empty"},
		{"empty generated", PlotSamples(io.Discard, ok, Cloud{Dim: 2}, "x"), "generated cloud is empty"},
		{"dims", PlotSamples(io.Discard, ok, three, "x"), "data has dimension 2, generated 3"},
		{"1-D", PlotSamples(io.Discard, one, one, "x"), "dimension 1, want >= 2"},
		{"one step", PlotTrajectories(io.Discard, []Cloud{ok}, 3, "x"), "1 time steps"},
		{"step dims", PlotTrajectories(io.Discard, []Cloud{ok, three}, 3, "x"), "step 1 has 10 points of dimension 3"},
		{"empty step", PlotTrajectories(io.Discard, []Cloud{ok, {Dim: 2}}, 3, "x"), "step 1 cloud is empty"},
		{"paths", PlotTrajectories(io.Discard, []Cloud{ok, ok}, 0, "x"), "paths = 0"},
		{"no curves", PlotLoss(io.Discard, nil, "x"), "no curves"},
		{"empty curve", PlotLoss(io.Discard, []Curve{{Name: "a"}}, "x"), `curve "a" is empty`},
		{"x length", PlotLoss(io.Discard, []Curve{{Name: "a", X: []float64{1}, Y: []float64{1, 2}}}, "x"), "1 x values and 2 y values"},
		{"nan", PlotLoss(io.Discard, []Curve{{Name: "a", Y: []float64{1, math.NaN()}}}, "x"), `curve "a" value 1 is NaN`},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
}

func TestSavePNG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "samples.png")
	ok := toyCloud(t, "moons", 100, 1, 2)
	if err := SavePNG(path, func(w io.Writer) error { return PlotSamples(w, ok, ok, "moons") }); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("saved file is not a PNG: %v", err)
	}
	// A failing plot leaves neither the file nor a temporary behind.
	bad := filepath.Join(dir, "bad.png")
	if err := SavePNG(bad, func(w io.Writer) error { return PlotSamples(w, Cloud{Dim: 2}, ok, "x") }); err == nil {
		t.Error("SavePNG of a failing plot succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after a failed save, want only samples.png", len(entries))
	}
	if err := SavePNG(filepath.Join(dir, "missing", "x.png"), func(w io.Writer) error { return nil }); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("save into a missing folder: %v", err)
	}
}
