package nn

import (
	"fmt"
	"testing"
	"time"
)

// cpuMeter adds a cpu-ns/op metric: on a shared machine the wall-clock
// ns/op includes time spent waiting for a CPU, process CPU time does not.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

func startCPU(b *testing.B) cpuMeter {
	b.ResetTimer()
	c, ok := processCPU()
	return cpuMeter{c, ok}
}

func (m cpuMeter) stop(b *testing.B) {
	if end, ok := processCPU(); ok && m.ok && b.N > 0 {
		b.ReportMetric(float64(end-m.start)/float64(b.N), "cpu-ns/op")
	}
}

// benchStep times one training step: LossGrad then Adam.Step.
func benchStep(b *testing.B, spec Spec, batch int) {
	n, err := New(spec, 1)
	if err != nil {
		b.Fatal(err)
	}
	ts, x := randomBatch(1, batch, spec.Dim)
	_, target := randomBatch(2, batch, spec.Dim)
	opt := NewAdam(n.NumParams(), 1e-4)
	if _, err := n.LossGrad(ts, x, target); err != nil { // sizes the workspace
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU(b)
	defer cpu.stop(b)
	for b.Loop() {
		if _, err := n.LossGrad(ts, x, target); err != nil {
			b.Fatal(err)
		}
		opt.Step(n.Params(), n.Grads())
	}
}

// BenchmarkDSB2DStep is the reference 2D DSB network at its batch size.
func BenchmarkDSB2DStep(b *testing.B) { benchStep(b, Spec{Arch: ArchDSB2D, Dim: 2}, 512) }

// BenchmarkMLPStep is the Gaussian-benchmark MLP (d=5, 256-256, SiLU).
func BenchmarkMLPStep(b *testing.B) {
	benchStep(b, Spec{Arch: ArchMLP, Dim: 5, Hidden: []int{256, 256}}, 128)
}

// BenchmarkForward10000 is a sampling-sized dsb2d forward pass.
func BenchmarkForward10000(b *testing.B) {
	n, err := New(Spec{Arch: ArchDSB2D, Dim: 2}, 1)
	if err != nil {
		b.Fatal(err)
	}
	ts, x := randomBatch(1, 10000, 2)
	out := make([]float32, len(x))
	if err := n.Forward(ts, x, out); err != nil { // sizes the workspace
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU(b)
	defer cpu.stop(b)
	for b.Loop() {
		if err := n.Forward(ts, x, out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMLPForward2048 is the Gaussian-benchmark MLP (d=5, 256-256,
// SiLU) on one 2048-row chunk, forward only: what sampling and the DSB
// trajectory simulation spend most of their time in.
func BenchmarkMLPForward2048(b *testing.B) {
	n, err := New(Spec{Arch: ArchMLP, Dim: 5, Hidden: []int{256, 256}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	ts, x := randomBatch(1, 2048, 5)
	out := make([]float32, len(x))
	if err := n.Forward(ts, x, out); err != nil { // sizes the workspace
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU(b)
	defer cpu.stop(b)
	for b.Loop() {
		if err := n.Forward(ts, x, out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVJP512 is one exact-divergence probe of the dsb2d net.
func BenchmarkVJP512(b *testing.B) {
	n, err := New(Spec{Arch: ArchDSB2D, Dim: 2}, 1)
	if err != nil {
		b.Fatal(err)
	}
	ts, x := randomBatch(1, 512, 2)
	_, v := randomBatch(2, 512, 2)
	out := make([]float32, len(x))
	vjp := make([]float32, len(x))
	if err := n.VJP(ts, x, v, out, vjp); err != nil { // sizes the workspace
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU(b)
	defer cpu.stop(b)
	for b.Loop() {
		if err := n.VJP(ts, x, v, out, vjp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDesignMLPStep is the 3->256->256->256->2 MLP at batch 512 whose
// step DESIGN.md section 5 timed with gorgonia graphs, for comparison.
func BenchmarkDesignMLPStep(b *testing.B) {
	benchStep(b, Spec{Arch: ArchMLP, Dim: 2, Hidden: []int{256, 256, 256}}, 512)
}

// BenchmarkGraphDSB2DStep is BenchmarkDSB2DStep's training step with the
// gradient from the gorgonia expression graph (symbolic differentiation,
// tape machine) instead of the fused passes: the baseline they replace.
func BenchmarkGraphDSB2DStep(b *testing.B) {
	const batch = 512
	spec := Spec{Arch: ArchDSB2D, Dim: 2}
	n, err := New(spec, 1)
	if err != nil {
		b.Fatal(err)
	}
	g, err := NewGraph(n, batch)
	if err != nil {
		b.Fatal(err)
	}
	ts, x := randomBatch(1, batch, spec.Dim)
	_, target := randomBatch(2, batch, spec.Dim)
	opt := NewAdam(n.NumParams(), 1e-4)
	if _, err := g.LossGrad(ts, x, target, n.Grads()); err != nil { // warms the machine
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU(b)
	defer cpu.stop(b)
	for b.Loop() {
		if _, err := g.LossGrad(ts, x, target, n.Grads()); err != nil {
			b.Fatal(err)
		}
		opt.Step(n.Params(), n.Grads())
	}
}

// unetSmall is the reference image network: MNIST-sized, 444,833 parameters.
var unetSmall = Spec{Arch: ArchUNet, Image: [3]int{1, 28, 28}, Channels: []int{32, 64, 64}}

// BenchmarkUNetSmallStep times a unet-small training step (LossGrad and
// Adam) at batch 64 and 128, and reports each layer kind's share of it.
func BenchmarkUNetSmallStep(b *testing.B) {
	for _, batch := range []int{64, 128} {
		b.Run(fmt.Sprintf("b%d", batch), func(b *testing.B) {
			n, err := New(unetSmall, 1)
			if err != nil {
				b.Fatal(err)
			}
			ts, x := randomBatch(1, batch, unetSmall.Image[1]*unetSmall.Image[2])
			_, target := randomBatch(2, batch, len(x)/batch)
			opt := NewAdam(n.NumParams(), 1e-4)
			if _, err := n.LossGrad(ts, x, target); err != nil { // sizes the workspace
				b.Fatal(err)
			}
			n.SetLayerTiming(true)
			b.ReportAllocs()
			cpu := startCPU(b)
			for b.Loop() {
				if _, err := n.LossGrad(ts, x, target); err != nil {
					b.Fatal(err)
				}
				opt.Step(n.Params(), n.Grads())
			}
			cpu.stop(b)
			var total time.Duration
			lt := n.LayerTimes()
			for _, d := range lt {
				total += d
			}
			for k, d := range lt {
				b.ReportMetric(100*float64(d)/float64(total), k+"-%")
			}
		})
	}
}
