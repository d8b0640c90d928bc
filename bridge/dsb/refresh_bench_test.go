package dsb

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
	"gonum.org/v1/gonum/blas"
	"gorgonia.org/gorgonia"
)

// BenchmarkRefresh is one whole cache refresh of the public Gaussian
// benchmark (d = 5, N = 20, Brownian reference, gamma 1/40, 10,000
// trajectories in 8 shards, frozen 256x256 SiLU MLP) on GOMAXPROCS workers:
// run with -cpu 1,2. Each iteration also times the network evaluations the
// refresh contains, 2 Forward calls of 10,000 rows per step (400,000 rows),
// on the same workers in the same 8 pieces, each worker with its own
// evaluator, so the two figures share the machine's load. Metrics (medians
// over iterations): refresh-s, net-s, refresh/net (wall), cpu-refresh-s,
// cpu-refresh/net and cpu-refresh/gemm (process CPU time, which does not
// count waiting for a busy CPU), net1-s,
// the same evaluations as single 10,000-row calls on one goroutine, and
// gemm-s and refresh/gemm, the matrix products of those evaluations alone
// (same shapes, same pieces): the GEMM-rate floor.
func BenchmarkRefresh(b *testing.B) {
	const dim, cache, shards = 5, 10000, 8
	c := gaussianBenchmarkChain(b, dim, cache, shards, 128)
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: dim, Hidden: []int{256, 256}, Activation: nn.SiLU}, 1)
	if err != nil {
		b.Fatal(err)
	}
	frozen := &NetMean{Net: net, Dir: Backward, Sched: c.Sched, Dim: dim}
	all := make([]int, shards)
	for i := range all {
		all[i] = i
	}
	x := make([]float32, cache*dim)
	for i := range x {
		x[i] = float32(i%17)/17 - 0.5
	}
	out := make([]float32, len(x))
	ts := make([]float32, cache)
	nets := []*nn.Net{net}
	for len(nets) < par.Size(0, shards) {
		nets = append(nets, net.Evaluator())
	}
	per := c.PerShard()
	netEval := func() {
		for step := 0; step < 2*c.Sched.N(); step++ {
			err := par.Do(context.Background(), len(nets), shards, func(_ context.Context, w, p int) error {
				lo, hi := p*per, (p+1)*per
				return nets[w].Forward(ts[lo:hi], x[lo*dim:hi*dim], out[lo*dim:hi*dim])
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	// The matrix products alone, in the same pieces: per Forward of a
	// 1250-row piece, x and t into the first layer, 256x256, 256 -> d.
	type gemm struct{ k, n int }
	shapes := []gemm{{dim, 256}, {1, 256}, {256, 256}, {256, dim}}
	type gemmBufs struct{ in, w, out []float32 }
	gb := make([]gemmBufs, len(nets))
	for i := range gb {
		gb[i] = gemmBufs{make([]float32, per*256), make([]float32, 256*256), make([]float32, per*256)}
		// Nonzero operands: gonum's kernels skip the work of zero entries.
		for j := range gb[i].in {
			gb[i].in[j] = float32(j%13)/13 - 0.4
		}
		for j := range gb[i].w {
			gb[i].w[j] = float32(j%7)/70 - 0.04
		}
	}
	impl := gorgonia.WhichBLAS()
	gemmOnly := func() {
		for step := 0; step < 2*c.Sched.N(); step++ {
			err := par.Do(context.Background(), len(nets), shards, func(_ context.Context, w, _ int) error {
				g := gb[w]
				for _, sh := range shapes {
					impl.Sgemm(blas.NoTrans, blas.NoTrans, per, sh.n, sh.k, 1, g.in, sh.k, g.w, sh.n, 1, g.out, sh.n)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	var refresh, pure, single, gemms, cpuRefresh, cpuPure, cpuGemm []time.Duration
	timed := func(f func()) (wall, cpu time.Duration) {
		c0, t0 := processCPU(), time.Now()
		f()
		return time.Since(t0), processCPU() - c0
	}
	for i := 0; b.Loop(); i++ {
		w, cpu := timed(func() {
			if _, err := c.SimulateShards(context.Background(), frozen, PhaseID{1, Forward}, uint64(i), all, 0); err != nil {
				b.Fatal(err)
			}
		})
		refresh, cpuRefresh = append(refresh, w), append(cpuRefresh, cpu)
		w, cpu = timed(netEval)
		pure, cpuPure = append(pure, w), append(cpuPure, cpu)
		w, _ = timed(func() {
			for step := 0; step < 2*c.Sched.N(); step++ {
				if err := net.Forward(ts, x, out); err != nil {
					b.Fatal(err)
				}
			}
		})
		single = append(single, w)
		w, cpu = timed(gemmOnly)
		gemms, cpuGemm = append(gemms, w), append(cpuGemm, cpu)
	}
	med := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2].Seconds()
	}
	b.ReportMetric(med(refresh), "refresh-s")
	b.ReportMetric(med(pure), "net-s")
	b.ReportMetric(med(single), "net1-s")
	b.ReportMetric(med(gemms), "gemm-s")
	b.ReportMetric(med(refresh)/med(pure), "refresh/net")
	b.ReportMetric(med(refresh)/med(gemms), "refresh/gemm")
	if m := med(cpuPure); m > 0 {
		b.ReportMetric(med(cpuRefresh)/m, "cpu-refresh/net")
		b.ReportMetric(med(cpuRefresh)/med(cpuGemm), "cpu-refresh/gemm")
		b.ReportMetric(med(cpuRefresh), "cpu-refresh-s")
	}
}
