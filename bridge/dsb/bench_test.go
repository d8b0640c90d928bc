package dsb

import (
	"testing"

	"github.com/sbtrain/sbtrain/nn"
)

// BenchmarkSimulateShard builds one shard of 128 trajectories of the
// Gaussian benchmark (d = 5, N = 20) with a frozen 256x256 MLP: 2N forward
// passes at batch 128.
func BenchmarkSimulateShard(b *testing.B) {
	c := gaussianBenchmarkChain(b, 5, 1024, 8, 128)
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: 5, Hidden: []int{256, 256}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	frozen := &NetMean{Net: net, Dir: Backward, Sched: c.Sched, Dim: 5}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.SimulateShard(frozen, PhaseID{1, Forward}, uint64(i), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPhaseStep is one single-process optimiser step of the Gaussian
// example (batch 128, 64x64 MLP): gather, loss and gradient, Adam, EMA.
func BenchmarkPhaseStep(b *testing.B) {
	c := gaussianBenchmarkChain(b, 5, 1024, 8, 128)
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: 5, Hidden: []int{64, 64}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	p, err := NewPhase(c, PhaseID{1, Backward}, ReferenceMean{Sched: c.Sched, Ref: c.Ref, Dim: 5}, net,
		Hyper{LR: 1e-3, EMADecay: 0.999}, nil)
	if err != nil {
		b.Fatal(err)
	}
	shards := make([]*Shard, c.Shards)
	for i := range shards {
		if shards[i], err = p.SimulateShard(0, i); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.LocalGrad(0, shards); err != nil {
			b.Fatal(err)
		}
		if _, err := p.Apply(net.Grads()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLocalGradShards is the gradient of the embedded default
// config's step (dsb2d, d = 2, batch 512 from 8 shards) computed in one
// pass over the 512 rows ("whole") and shard by shard, 8 passes of 64
// rows ("per-shard"), as a reduction whose bits do not depend on who owns
// which shard needs it.
func BenchmarkLocalGradShards(b *testing.B) {
	c := gaussianBenchmarkChain(b, 2, 2048, 8, 512)
	net, err := nn.New(nn.Spec{Arch: nn.ArchDSB2D, Dim: 2}, 1)
	if err != nil {
		b.Fatal(err)
	}
	p, err := NewPhase(c, PhaseID{1, Backward}, ReferenceMean{Sched: c.Sched, Ref: c.Ref, Dim: 2}, net,
		Hyper{LR: 1e-3, EMADecay: 0.999}, nil)
	if err != nil {
		b.Fatal(err)
	}
	shards := make([]*Shard, c.Shards)
	for i := range shards {
		if shards[i], err = p.SimulateShard(0, i); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.LocalGrad(0, shards); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("per-shard", func(b *testing.B) {
		for b.Loop() {
			for _, sh := range shards {
				if _, err := p.LocalGrad(0, []*Shard{sh}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
