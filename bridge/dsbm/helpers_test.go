package dsbm

import (
	"github.com/sbtrain/sbtrain/rng"
)

// gaussian is N(mean*1, std^2 I), enough to test the bridge without the
// dataset package.
type gaussian struct {
	dim       int
	mean, std float64
}

func (g gaussian) Dim() int     { return g.dim }
func (g gaussian) Name() string { return "test-gaussian" }
func (g gaussian) Sample(s *rng.Stream, dst []float64) {
	for i := range dst {
		dst[i] = g.mean + g.std*s.Norm()
	}
}

// draw returns n rows of g keyed by (seed, PurposeBench, id, row).
func draw(g gaussian, seed, id uint64, n int) []float32 {
	out := make([]float32, n*g.dim)
	buf := make([]float64, g.dim)
	for r := 0; r < n; r++ {
		s := rng.New(seed, rng.PurposeBench, id, uint64(r))
		g.Sample(&s, buf)
		for i, v := range buf {
			out[r*g.dim+i] = float32(v)
		}
	}
	return out
}

// stats are per-coordinate averages over the coordinates of the moments of
// paired rows a and b: mean and variance of b, and Cov(a, b).
type stats struct{ mean, variance, cov float64 }

func pairStats(a, b []float32, dim int) stats {
	n := float64(len(a) / dim)
	var out stats
	for i := 0; i < dim; i++ {
		var ma, mb float64
		for r := i; r < len(a); r += dim {
			ma += float64(a[r])
			mb += float64(b[r])
		}
		ma, mb = ma/n, mb/n
		var vb, c float64
		for r := i; r < len(a); r += dim {
			da, db := float64(a[r])-ma, float64(b[r])-mb
			vb += db * db
			c += da * db
		}
		out.mean += mb / float64(dim)
		out.variance += vb / (n - 1) / float64(dim)
		out.cov += c / (n - 1) / float64(dim)
	}
	return out
}

// testChain is a small Gaussian chain, N(-0.1, I) <-> N(0.1, I).
func testChain(dim int) *Chain {
	return &Chain{Dim: dim, Sigma: 1, Eps: DefaultEps, Steps: 20, First: CouplingRef,
		Data: gaussian{dim, -0.1, 1}, Prior: gaussian{dim, 0.1, 1}, Seed: 7,
		CacheSize: 240, Shards: 4, Batch: 32, Refresh: 10}
}

func fill(n int, v float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = v
	}
	return s
}
