package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/experiment"
)

// A run that ended before its figures were written must read as "not
// produced", never panic while results collects the table.
func TestResultChecksTolerateMissingFigures(t *testing.T) {
	cases := []struct {
		name string
		m    *experiment.Metrics
	}{
		{"no figures", &experiment.Metrics{}},
		{"iterations without gaussian", &experiment.Metrics{Iterations: []*experiment.Figures{{}}}},
		{"final without optional figures", &experiment.Metrics{Final: &experiment.Figures{}, Iterations: []*experiment.Figures{{}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, ex := range exampleChecks {
				for _, c := range ex.checks {
					func() {
						defer func() {
							if r := recover(); r != nil {
								t.Fatalf("%s: %q panicked on %s: %v", ex.file, c.result, tc.name, r)
							}
						}()
						if _, ok := c.measure(tc.m); ok && tc.m.Final == nil && len(tc.m.Iterations) == 0 {
							t.Errorf("%s: %q claims a value from empty metrics", ex.file, c.result)
						}
					}()
				}
			}
		})
	}
}

func gaussianMetrics(covErrs ...float64) *experiment.Metrics {
	m := &experiment.Metrics{}
	for i, e := range covErrs {
		m.Iterations = append(m.Iterations, &experiment.Figures{Iteration: i + 1,
			Gaussian: &experiment.GaussianFigures{MeanMaxErr: 0.01, VarMaxErr: 0.02, CovMaxErr: &e}})
	}
	return m
}

func TestIterationTablePrintsBothMethods(t *testing.T) {
	var b bytes.Buffer
	printIterations(&b, gaussianMetrics(0.12, 0.05), gaussianMetrics(0.09, 0.03, 0.01))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want a title, a header and 3 iterations:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{{"1", "0.1200", "0.0900"}, {"2", "0.0500", "0.0300"}, {"3", "-", "0.0100"}} {
		if got := strings.Fields(lines[2+i]); !slicesHasPrefix(got, want) {
			t.Errorf("iteration row %d is %q, want it to start %q", i+1, lines[2+i], want)
		}
	}
	b.Reset()
	printIterations(&b, nil, nil)
	if b.Len() != 0 {
		t.Fatalf("printed %q with neither run", b.String())
	}
}

func TestDSBMCouplingCheckNeedsBothRuns(t *testing.T) {
	c := acrossChecks[0]
	if _, ok := c.measure(map[string]*experiment.Metrics{"gaussian-d5-dsbm.yaml": gaussianMetrics(0.01)}); ok {
		t.Fatal("measured without the DSB run")
	}
	v, ok := c.measure(map[string]*experiment.Metrics{
		"gaussian-d5-dsb.yaml":  gaussianMetrics(0.2, 0.05),
		"gaussian-d5-dsbm.yaml": gaussianMetrics(0.3, 0.02),
	})
	if !ok || !c.pass(v) || v > -0.029 || v < -0.031 {
		t.Fatalf("last-iteration difference %v (ok %v), want -0.03 and a pass", v, ok)
	}
}

func slicesHasPrefix(s, prefix []string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := range prefix {
		if s[i] != prefix[i] {
			return false
		}
	}
	return true
}
