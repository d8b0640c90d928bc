package method

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"testing"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/nn"
)

// A DSB model with Denoise ends every chain on the mean of its last
// transition, B(1, X_1), instead of adding the last noise; without it the
// end point differs from that mean.
func TestDSBModelDenoiseEndsOnTheMean(t *testing.T) {
	sched, err := dsb.NewSchedule(6, 0.05, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: 2, Hidden: []int{8}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	start := []float32{0.5, -1, 2, 0.25, -0.75, 1.5}
	mean := &dsb.NetMean{Net: net, Dir: dsb.Backward, Sched: sched, Dim: 2}
	for _, denoise := range []bool{false, true} {
		m := &DSBModel{Sched: sched, Dim: 2, Backward: net, Denoise: denoise}
		g, err := m.Generate(context.Background(), start, 9, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Paths) != sched.N()+1 {
			t.Fatalf("denoise %v: %d path states, want N+1 = %d", denoise, len(g.Paths), sched.N()+1)
		}
		last := make([]float32, len(start))
		if err := mean.Eval(0, g.Paths[sched.N()-1], last); err != nil {
			t.Fatal(err)
		}
		if got := bytes.Equal(f32le(g.End), f32le(last)); got != denoise {
			t.Errorf("denoise %v: end point equals the last transition's mean: %v", denoise, got)
		}
	}
}

func f32le(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}
