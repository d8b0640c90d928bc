package experiment

import (
	"reflect"
	"testing"
)

func TestLossPanelsGroupByDirection(t *testing.T) {
	phases := []PhaseSummary{
		{Name: "ipf 1 backward", Loss: []float64{3, 2}},
		{Name: "ipf 1 forward", Loss: []float64{5, 4}},
		{Name: "ipf 2 backward", Loss: []float64{1}},
		{Name: "ipf 2 forward"}, // no recorded loss: left out
		{Name: "interpolant", Loss: []float64{-1}},
	}
	got := lossPanels(phases)
	type panel struct {
		name   string
		phases []string
	}
	var summary []panel
	for _, p := range got {
		var names []string
		for _, c := range p.Phases {
			names = append(names, c.Name)
		}
		summary = append(summary, panel{p.Name, names})
	}
	want := []panel{{"backward", []string{"ipf 1", "ipf 2"}}, {"forward", []string{"ipf 1"}}, {"interpolant", []string{""}}}
	if !reflect.DeepEqual(summary, want) {
		t.Errorf("panels %+v, want %+v", summary, want)
	}
}

func TestIterationPanels(t *testing.T) {
	cov := 0.05
	its := []*Figures{
		{Iteration: 1, Gaussian: &GaussianFigures{MeanMaxErr: 0.1, VarMaxErr: 0.2, CovMaxErr: &cov}},
		{Iteration: 2, Gaussian: &GaussianFigures{MeanMaxErr: 0.05, VarMaxErr: 0.1, CovMaxErr: &cov}},
	}
	its[0].Distances.SlicedW2, its[1].Distances.SlicedW2 = 0.4, 0.2
	panels := iterationPanels(its)
	if len(panels) != 2 {
		t.Fatalf("%d panels, want distances and closed-form errors", len(panels))
	}
	if got := panels[0].Curves[0].Y; !reflect.DeepEqual(got, []float64{0.4, 0.2}) {
		t.Errorf("sliced W2 curve %v", got)
	}
	if n := len(panels[1].Curves); n != 3 {
		t.Errorf("%d error curves, want mean, variance and coupling", n)
	}
	its[1].Gaussian = nil // figures missing for one iteration: no partial panel
	if panels := iterationPanels(its); len(panels) != 1 {
		t.Errorf("%d panels with one iteration's Gaussian figures missing, want 1", len(panels))
	}
	if iterationPanels(nil) != nil {
		t.Error("panels without iterations")
	}
}
