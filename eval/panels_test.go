package eval

import (
	"bytes"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
)

func decayingLoss(s *rng.Stream, n int, level float64) []float64 {
	y := make([]float64, n)
	for i := range y {
		y[i] = level * (0.2 + math.Exp(-float64(i)/float64(n/4+1))) * math.Exp(0.4*s.Norm())
	}
	return y
}

func TestPlotLossPanels(t *testing.T) {
	s := rng.New(3, rng.PurposeBench)
	var back, fwd []Curve
	for it := 1; it <= 5; it++ {
		back = append(back, Curve{Name: "ipf " + string(rune('0'+it)), Y: decayingLoss(&s, 600, 1/float64(it))})
		fwd = append(fwd, Curve{Name: "ipf " + string(rune('0'+it)), Y: decayingLoss(&s, 600, 2/float64(it))})
	}
	var b bytes.Buffer
	if err := PlotLossPanels(&b, []LossPanel{{Name: "backward", Phases: back}, {Name: "forward", Phases: fwd}}, "dsb"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "loss-panels", b.Bytes(), 800, 520)

	b.Reset()
	short := []Curve{{Name: "interpolant", Y: []float64{-1, -1.5, -1.7, -1.8}}}
	if err := PlotLossPanels(&b, []LossPanel{{Name: "interpolant", Phases: short}}, "si"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "loss-panels-short", b.Bytes(), 800, 260)
}

func TestPlotIterations(t *testing.T) {
	x := []float64{1, 2, 3, 4, 5}
	panels := []IterationPanel{
		{Title: "sliced W2", YLabel: "W2", Curves: []Curve{{Name: "dsb", X: x, Y: []float64{0.4, 0.2, 0.15, 0.12, 0.11}}},
			Floor: &Curve{Name: "floor", X: x, Y: []float64{0.05, 0.05, 0.05, 0.05, 0.05}}},
		{Title: "coupling", YLabel: "err", Curves: []Curve{{Name: "cov", X: x, Y: []float64{0.12, 0.08, 0.05, 0.05, 0.04}}, {Name: "mean", X: x, Y: []float64{0.1, 0.05, 0.03, 0.03, 0.02}}}},
	}
	var b bytes.Buffer
	if err := PlotIterations(&b, panels, "gaussian"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "iterations", b.Bytes(), 800, 520)
}

func TestPlotMarginals(t *testing.T) {
	start := toyCloud(t, "gaussian", 500, 1, 2)
	end := toyCloud(t, "moons", 500, 2, 2)
	clouds := make([]Cloud, 6)
	for k := range clouds {
		a := float32(k) / 5
		c := Cloud{Data: make([]float32, len(start.Data)), Dim: 2}
		for i := range c.Data {
			c.Data[i] = (1-a)*start.Data[i] + a*end.Data[i]
		}
		clouds[k] = c
	}
	labels := []string{"0", "4", "8", "12", "16", "20"}
	var b bytes.Buffer
	if err := PlotMarginals(&b, clouds, labels, &end, "moons"); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, "marginals", b.Bytes(), 6*260, 260)
}

func TestMarginalTimes(t *testing.T) {
	cases := []struct {
		steps, n int
		want     []int
	}{
		{21, 6, []int{0, 4, 8, 12, 16, 20}},
		{101, 6, []int{0, 20, 40, 60, 80, 100}},
		{3, 6, []int{0, 1, 2}},
		{1, 6, []int{0}},
		{10, 1, []int{9}},
		{0, 6, nil},
	}
	for _, c := range cases {
		if got := MarginalTimes(c.steps, c.n); !reflect.DeepEqual(got, c.want) {
			t.Errorf("MarginalTimes(%d, %d) = %v, want %v", c.steps, c.n, got, c.want)
		}
	}
}

func TestPanelErrors(t *testing.T) {
	ok := toyCloud(t, "moons", 10, 1, 2)
	three := toyCloud(t, "gaussian", 10, 1, 3)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"no loss panels", PlotLossPanels(io.Discard, nil, "x"), "0 panels"},
		{"no phases", PlotLossPanels(io.Discard, []LossPanel{{Name: "b"}}, "x"), `panel "b" has no phases`},
		{"nan loss", PlotLossPanels(io.Discard, []LossPanel{{Name: "b", Phases: []Curve{{Name: "p", Y: []float64{1, math.Inf(1)}}}}}, "x"), `curve "p" point 1`},
		{"no iteration curves", PlotIterations(io.Discard, []IterationPanel{{Title: "w"}}, "x"), `panel "w" has no curves`},
		{"floor length", PlotIterations(io.Discard, []IterationPanel{{Title: "w", Curves: []Curve{{Name: "a", Y: []float64{1}}}, Floor: &Curve{Name: "f", X: []float64{1, 2}, Y: []float64{1}}}}, "x"), "2 x values and 1 y values"},
		{"one cloud", PlotMarginals(io.Discard, []Cloud{ok}, []string{"a"}, nil, "x"), "1 clouds"},
		{"labels", PlotMarginals(io.Discard, []Cloud{ok, ok}, []string{"a"}, nil, "x"), "1 labels for 2 clouds"},
		{"dims", PlotMarginals(io.Discard, []Cloud{ok, three}, []string{"a", "b"}, nil, "x"), "b has dimension 3, want 2"},
		{"reference dims", PlotMarginals(io.Discard, []Cloud{ok, ok}, []string{"a", "b"}, &three, "x"), "reference has dimension 3"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
}
