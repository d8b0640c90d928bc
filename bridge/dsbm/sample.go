package dsbm

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// Model is a drift network; *nn.Net satisfies it. Forward takes one time
// per row and writes v(t_b, x_b) into out.
type Model interface {
	Forward(t, x, out []float32) error
}

// Forker is a Model that can copy itself for concurrent use: the copy
// computes bitwise the same values and shares nothing that Forward writes.
// *nn.Net forks through its Evaluator; a Model that cannot fork runs on one
// goroutine.
type Forker interface {
	Model
	Fork() Model
}

// forkModels returns up to n models for n goroutines, m itself first.
func forkModels(m Model, n int) []Model {
	out := []Model{m}
	for len(out) < n {
		switch f := m.(type) {
		case *nn.Net:
			out = append(out, f.Evaluator())
		case Forker:
			out = append(out, f.Fork())
		default:
			return out
		}
	}
	return out
}

// SampleOptions tune [Chain.Sample].
type SampleOptions struct {
	Seed uint64
	// First is the global index of the first row: row r's noise at step i
	// is the stream (Seed, PurposeSample, First+r, i), so samples drawn in
	// several calls (or processes) match one big call.
	First uint64
	// Steps N of Euler-Maruyama; 0 means the chain's.
	Steps int
	// Path keeps every intermediate state for plots.
	Path bool
	// Chunk is the rows evaluated at once, the piece of work of one
	// goroutine; 0 means DefaultSampleChunk.
	Chunk int
	// Workers bounds the goroutines; 0 means one per core.
	Workers int
	// Denoise drops the noise of the last step. The backward drift
	// regresses (x0 - x_t)/t and the last step has dt = t, so that step
	// lands on the drift's estimate of x0; its noise, sigma sqrt(1/N), is
	// speckle on an image. The cache's pairs drop it only under
	// Chain.DenoiseCache.
	Denoise bool
}

// DefaultSampleChunk is nn's own chunk size, as in package dsb, so the
// samples keep their bytes whatever the worker count, OpenBLAS included.
const DefaultSampleChunk = 2048

// Samples is the output of [Chain.Sample].
type Samples struct {
	// End holds the end points: x1 for a forward drift, x0 for a backward.
	End []float32
	// Path[i] holds the state after i steps (Path[0] is the start) when
	// SampleOptions.Path is set; i counts along the direction of travel.
	Path [][]float32
}

// Sample runs the SDE of drift m in direction dir from start (rows of
// c.Dim): forward x <- x + v_f(i/N, x)/N + sigma sqrt(1/N) Z from t = 0,
// backward the same with v_b at times 1 - i/N from t = 1. Row r pairs its
// start with its end, so (start[r], End[r]) is a sampled coupling. Chunks
// run on up to Workers goroutines, each with its own fork of m; ctx is
// checked before every chunk.
func (c *Chain) Sample(ctx context.Context, m Model, dir Direction, start []float32, opt SampleOptions) (*Samples, error) {
	if m == nil {
		return nil, fmt.Errorf("sample: no %s drift", dir)
	}
	n := opt.Steps
	if n == 0 {
		n = c.Steps
	}
	if n < 0 {
		return nil, fmt.Errorf("sample: steps %d, want >= 0 (0 = the chain's)", n)
	}
	dim := c.Dim
	if dim <= 0 || len(start)%dim != 0 {
		return nil, fmt.Errorf("sample: start length %d is not a multiple of dim %d", len(start), dim)
	}
	if opt.Workers < 0 {
		return nil, fmt.Errorf("sample: workers %d, want >= 0 (0 = one per core)", opt.Workers)
	}
	chunk := opt.Chunk
	if chunk <= 0 {
		chunk = DefaultSampleChunk
	}
	rows := len(start) / dim
	out := &Samples{End: make([]float32, len(start))}
	if opt.Path {
		out.Path = make([][]float32, n+1)
		for i := range out.Path {
			out.Path[i] = make([]float32, len(start))
		}
	}
	chunks := (rows + chunk - 1) / chunk
	models := forkModels(m, par.Size(opt.Workers, chunks))
	base := rng.NewKey(opt.Seed, rng.PurposeSample)
	err := par.Do(ctx, len(models), chunks, func(_ context.Context, w, ci int) error {
		lo, hi := ci*chunk, min((ci+1)*chunk, rows)
		x := out.End[lo*dim : hi*dim]
		copy(x, start[lo*dim:hi*dim])
		keys := make([]rng.Key, hi-lo)
		for r := range keys {
			keys[r] = base.With(opt.First + uint64(lo+r))
		}
		var path func(i int, x []float32)
		if opt.Path {
			path = func(i int, x []float32) { copy(out.Path[i][lo*dim:hi*dim], x) }
		}
		if err := integrate(c.drift(models[w], dir), dir, c.Sigma, n, dim, x, keys, opt.Denoise, path); err != nil {
			return fmt.Errorf("sample rows %d..%d: %w", lo, hi-1, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// integrate runs n Euler-Maruyama steps of drift m in direction dir on the
// rows x in place; row r's noise at step i is keys[r].With(i), none at the
// last step when denoise is set. path, when set, sees the state after every
// step (and the start, as step 0).
func integrate(m Model, dir Direction, sigma float64, n, dim int, x []float32, keys []rng.Key, denoise bool, path func(i int, x []float32)) error {
	if path != nil {
		path(0, x)
	}
	rows := len(keys)
	if rows == 0 || n == 0 {
		return nil
	}
	t := make([]float32, rows)
	v := make([]float32, len(x))
	dt := 1 / float64(n)
	sd := sigma * math.Sqrt(dt)
	for i := 0; i < n; i++ {
		ti := float32(float64(i) / float64(n))
		if dir == Backward {
			ti = float32(float64(n-i) / float64(n))
		}
		for r := range t {
			t[r] = ti
		}
		if err := m.Forward(t, x, v); err != nil {
			return fmt.Errorf("%s drift at t = %v: %w", dir, ti, err)
		}
		if denoise && i == n-1 {
			sd = 0
		}
		for r, key := range keys {
			z := key.With(uint64(i)).Stream()
			for j := r * dim; j < (r+1)*dim; j++ {
				x[j] = float32(float64(x[j]) + float64(v[j])*dt + sd*z.Norm())
			}
		}
		if path != nil {
			path(i+1, x)
		}
	}
	return nil
}
