package main

import (
	"github.com/sbtrain/sbtrain/experiment"
)

// imageExampleChecks are the image examples' targets (`results --set
// images`): the Fréchet distance in classifier features over its
// test-vs-test floor, and the class shares the classifier gives.
var imageExampleChecks = []struct {
	file   string
	checks []check
}{
	{"mnist-si.yaml", []check{
		{"SI MNIST: Fréchet distance / test-vs-test floor", "<= 10", imageFigure(-1, frechetRatio), atMost(10)},
		{"SI MNIST: smallest class share", ">= 0.05", imageFigure(-1, minShare), atLeast(0.05)},
		{"SI MNIST: classifier test accuracy", ">= 0.98", imageFigure(-1, classifierAccuracy), atLeast(0.98)},
	}},
	{"mnist-dsb.yaml", []check{
		{"DSB MNIST: Fréchet distance / floor, IPF iteration 1", "(shown)", imageFigure(0, frechetRatio), always},
		{"DSB MNIST: Fréchet distance falls from iteration 1 to last (last - first)", "< 0", frechetFall, below(0)},
		{"DSB MNIST: Fréchet distance / floor, last iteration", "<= 20", imageFigure(-1, frechetRatio), atMost(20)},
	}},
	// The same bridge by IMF, shown beside IPF's.
	{"mnist-dsbm.yaml", []check{
		{"DSBM MNIST: Fréchet distance / floor, IMF iteration 1", "(shown)", imageFigure(0, frechetRatio), always},
		{"DSBM MNIST: Fréchet distance / floor, last iteration", "(shown)", imageFigure(-1, frechetRatio), always},
	}},
	// The same bridge at 14x14, where IMF iteration 2 improves on 1.
	{"mnist14-dsbm.yaml", []check{
		{"DSBM MNIST 14x14: Fréchet distance / floor, IMF iteration 1", "(shown)", imageFigure(0, frechetRatio), always},
		{"DSBM MNIST 14x14: Fréchet distance falls from iteration 1 to last (last - first)", "< 0", frechetFall, below(0)},
		{"DSBM MNIST 14x14: Fréchet distance / floor, last iteration", "(shown)", imageFigure(-1, frechetRatio), always},
	}},
	// The transfer's targets are the DSBM bridge's; IPF's figures are
	// shown beside them, as the same bridge by the older method.
	{"mnist-fashion-dsbm.yaml", []check{
		{"DSBM MNIST->Fashion: Fréchet distance / Fashion floor", "<= 25", imageFigure(-1, frechetRatio), atMost(25)},
		{"DSBM MNIST->Fashion: smallest Fashion class share", ">= 0.03", imageFigure(-1, minShare), atLeast(0.03)},
		{"DSBM MNIST->Fashion: Fashion classifier test accuracy", ">= 0.88", imageFigure(-1, classifierAccuracy), atLeast(0.88)},
	}},
	{"mnist-fashion-dsb.yaml", []check{
		{"DSB (IPF) MNIST->Fashion: Fréchet distance / Fashion floor", "(shown)", imageFigure(-1, frechetRatio), always},
		{"DSB (IPF) MNIST->Fashion: smallest Fashion class share", "(shown)", imageFigure(-1, minShare), always},
	}},
}

// frechetFall is the last iteration's Fréchet distance less the first's:
// negative when iterating helped.
func frechetFall(m *experiment.Metrics) (float64, bool) {
	first, ok1 := imageFigure(0, frechet)(m)
	last, ok2 := imageFigure(-2, frechet)(m)
	return last - first, ok1 && ok2
}

func atLeast(t float64) func(float64) bool { return func(v float64) bool { return v >= t } }

func frechet(f *experiment.ImageFigures) float64            { return f.Frechet }
func frechetRatio(f *experiment.ImageFigures) float64       { return f.FrechetRatio }
func minShare(f *experiment.ImageFigures) float64           { return f.MinClassShare }
func classifierAccuracy(f *experiment.ImageFigures) float64 { return f.ClassifierAccuracy }

// imageFigure reads the image figures of the final evaluation (i = -1) or
// of IPF iteration i (-2 is the last iteration).
func imageFigure(i int, pick func(*experiment.ImageFigures) float64) func(*experiment.Metrics) (float64, bool) {
	return func(m *experiment.Metrics) (float64, bool) {
		f := m.Final
		if i != -1 {
			j := i
			if i == -2 {
				j = -1
			}
			f = iterFigures(m, j)
		}
		if f == nil || f.Image == nil {
			return 0, false
		}
		return pick(f.Image), true
	}
}
