package main

import (
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
