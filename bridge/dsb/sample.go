package dsb

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// SampleOptions tune [Sample].
type SampleOptions struct {
	Seed uint64
	// First is the global index of the first row: row r uses the noise
	// streams (Seed, PurposeSample, First+r, k), so samples drawn in several
	// calls (or by several processes) match one big call.
	First uint64
	// Denoise drops the noise of the last transition, returning its mean
	// (e.g. X_0 = B(1, X_1)). The default keeps it, so the end point has the
	// chain's law, which is what the bridge's marginal and coupling are
	// defined by.
	Denoise bool
	// Path keeps every intermediate state for plots.
	Path bool
	// Chunk is the rows evaluated at once, the piece of work of one
	// goroutine; 0 means DefaultSampleChunk.
	Chunk int
	// Workers bounds the goroutines; 0 means one per core (GOMAXPROCS).
	Workers int
}

// DefaultSampleChunk is nn's own chunk size, so a network sees the same
// batches as when it was given 4096 rows at once (the former default) and
// the samples keep their bytes under OpenBLAS too, while twice as many
// pieces share the cores more evenly.
const DefaultSampleChunk = 2048

// Samples is the output of [Sample].
type Samples struct {
	// End holds the end points, rows of dim: X_0 for a backward mean, X_N
	// for a forward mean.
	End []float32
	// Path[k] holds X_k for k = 0..N when SampleOptions.Path is set.
	Path [][]float32
}

// Sample is [SampleContext] without a context.
func Sample(m Mean, sched Schedule, dim int, start []float32, opt SampleOptions) (*Samples, error) {
	return SampleContext(context.Background(), m, sched, dim, start, opt)
}

// SampleContext runs the learned chain from start (rows of dim): a Backward
// mean runs X_N = start down to X_0 with X_k = B(k+1, X_{k+1}) +
// sqrt(2 g_{k+1}) Z (generation, or transfer when start is another
// dataset); a Forward mean runs X_0 = start up to X_N with F. Row r pairs
// its start with its end, so (End[r], start[r]) is a sampled bridge
// coupling. Chunks of SampleOptions.Chunk rows run on up to Workers
// goroutines, each with its own fork of m (one goroutine when m is not a
// [Forker]); the chunks do not depend on the worker count, so neither do
// the bytes. ctx is checked before every chunk.
func SampleContext(ctx context.Context, m Mean, sched Schedule, dim int, start []float32, opt SampleOptions) (*Samples, error) {
	if m == nil {
		return nil, fmt.Errorf("sample: no mean")
	}
	n := sched.N()
	if n == 0 {
		return nil, fmt.Errorf("sample: empty schedule")
	}
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
		for k := range out.Path {
			out.Path[k] = make([]float32, len(start))
		}
	}
	chunks := (rows + chunk - 1) / chunk
	means := ForkMeans(m, par.Size(opt.Workers, chunks))
	err := par.Do(ctx, len(means), chunks, func(_ context.Context, w, c int) error {
		lo := c * chunk
		return sampleChunk(means[w], sched, dim, start, lo, min(lo+chunk, rows), opt, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sampleChunk runs rows lo..hi-1 of the chain, writing only those rows of
// out.
func sampleChunk(m Mean, sched Schedule, dim int, start []float32, lo, hi int, opt SampleOptions, out *Samples) error {
	n := sched.N()
	cx := make([]float32, (hi-lo)*dim)
	cm := make([]float32, len(cx))
	copy(cx, start[lo*dim:hi*dim])
	first := 0
	if m.Direction() == Backward {
		first = n
	}
	if opt.Path {
		copy(out.Path[first][lo*dim:hi*dim], cx)
	}
	rows := make([]rng.Key, hi-lo) // each row's noise key up to k, hashed once
	base := rng.NewKey(opt.Seed, rng.PurposeSample)
	for r := range rows {
		rows[r] = base.With(opt.First + uint64(lo+r))
	}
	for step := 0; step < n; step++ {
		k, to := step, step+1
		if m.Direction() == Backward {
			k, to = n-1-step, n-1-step
		}
		if err := m.Eval(k, cx, cm); err != nil {
			return fmt.Errorf("sample rows %d..%d: %w", lo, hi-1, err)
		}
		if step == n-1 && opt.Denoise {
			copy(cx, cm)
		} else {
			sd := sched.noiseScale(k)
			for r := range rows {
				z := rows[r].With(uint64(k)).Stream()
				for i := r * dim; i < (r+1)*dim; i++ {
					cx[i] = float32(float64(cm[i]) + sd*z.Norm())
				}
			}
		}
		if opt.Path {
			copy(out.Path[to][lo*dim:hi*dim], cx)
		}
	}
	copy(out.End[lo*dim:hi*dim], cx)
	return nil
}
