package job

import (
	"math"
	"testing"
	"time"
)

// The training rate counts only what this command trained: a resumed run
// its steps after the checkpoint, a finished run started again nothing
// (it used to divide the whole run's samples by a second of start-up).
func TestSamplesPerSec(t *testing.T) {
	const steps, batch = 100, 10 // per phase; 4 phases: 4000 rows
	rows := int64(4 * steps * batch)
	cases := []struct {
		name string
		fig  RunFigures
		want float64
	}{
		{"whole run", RunFigures{Wall: 30 * time.Second, Train: 20 * time.Second}, 200},
		{"resumed at phase 2", RunFigures{Wall: 30 * time.Second, Train: 10 * time.Second, From: Position{Phase: 2}}, 200},
		{"resumed mid-phase", RunFigures{Train: 5 * time.Second, From: Position{Phase: 3, Step: 50}}, 100},
		{"no start time: wall clock", RunFigures{Wall: 40 * time.Second}, 100},
		{"finished before it started", RunFigures{Wall: 2 * time.Second, Idle: true}, 0},
		{"nothing left to train", RunFigures{Train: time.Second, From: Position{Phase: 4}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.fig.SamplesPerSec(rows, steps, batch); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("samples/s %v, want %v", got, tc.want)
			}
		})
	}
}
