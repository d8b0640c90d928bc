package si

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// DefaultScoreTMin keeps the SDE's score term -eps eta/g away from the ends,
// where g = 0 and the score of the interpolant is not defined by eta.
const DefaultScoreTMin = 0.02

// SampleOptions configure Sample.
type SampleOptions struct {
	Method string // euler, heun, rk4 (ODE dX = b dt) or sde
	Steps  int    // fixed steps on [0, 1]
	// Eps is the SDE diffusion: dX = (b + eps s) dt + sqrt(2 eps) dW with
	// s = -eta/g. Eps = 0 makes the SDE the Euler ODE exactly.
	Eps float64
	// ScoreTMin: on the uniform grid t_k = k/Steps the SDE adds the score term
	// and the noise only for steps starting at t_k in [ScoreTMin, 1-ScoreTMin]
	// (and g(t_k) > 0); the other steps are Euler ODE steps. 0 means
	// DefaultScoreTMin.
	ScoreTMin float64
	// Seed keys the SDE noise: sample i at step k uses the stream
	// (Seed, PurposeSample, First+i, k).
	Seed  uint64
	First int
	// Trajectory keeps the Steps+1 states (for plots).
	Trajectory bool
	// Chunk is how many samples go through a network call at once, the
	// piece of work of one goroutine; 0 means DefaultChunk.
	Chunk int
	// Workers bounds the goroutines that integrate chunks; 0 means one per
	// core (GOMAXPROCS). The samples are the same bytes for any value.
	Workers int
}

// DefaultChunk is nn's own chunk size, so a network sees the same batches
// as when it was given 4096 rows at once (the former default) and results
// keep their bytes under OpenBLAS too, while twice as many pieces share the
// cores more evenly.
const DefaultChunk = 2048

// Samples is the result of Sample.
type Samples struct {
	X []float32 // final states at t = 1, n*d
	// Times and States are filled when Trajectory was asked: States[k] holds
	// all samples at Times[k].
	Times  []float64
	States [][]float32
}

// Sample transports x0 (n*d values, n = len(x0)/d, drawn from rho0) to t = 1.
// eta (the denoiser) is needed only by the SDE with Eps > 0. Chunks of
// opts.Chunk samples are integrated on up to opts.Workers goroutines, each
// with its own forks of b and eta (one goroutine unless both are
// [Forker]s); the chunks do not depend on the worker count, so neither do
// the bytes. The first error or the end of ctx stops every chunk.
func Sample(ctx context.Context, p Path, b, eta Field, x0 []float32, opts SampleOptions) (*Samples, error) {
	d := b.Dim()
	if d <= 0 || len(x0)%d != 0 {
		return nil, fmt.Errorf("si sample: %d initial values is not a multiple of dimension %d", len(x0), d)
	}
	if opts.Steps <= 0 {
		return nil, fmt.Errorf("si sample: steps %d, want > 0", opts.Steps)
	}
	sde := opts.Method == MethodSDE
	if sde {
		if opts.Eps < 0 || math.IsNaN(opts.Eps) || math.IsInf(opts.Eps, 0) {
			return nil, fmt.Errorf("si sample: eps %v, want a finite number >= 0", opts.Eps)
		}
		if opts.Eps > 0 {
			if eta == nil {
				return nil, fmt.Errorf("si sample: the SDE with eps > 0 needs the denoiser eta")
			}
			if !p.HasNoise() {
				return nil, fmt.Errorf("si sample: the SDE with eps > 0 needs a path with gamma > 0, %s has none", p)
			}
			if eta.Dim() != d {
				return nil, fmt.Errorf("si sample: eta has dimension %d, b has %d", eta.Dim(), d)
			}
		}
	} else if _, err := newStepper(opts.Method, 0); err != nil {
		return nil, fmt.Errorf("si sample: %w", err)
	}
	if opts.ScoreTMin == 0 {
		opts.ScoreTMin = DefaultScoreTMin
	}
	if !(opts.ScoreTMin > 0 && opts.ScoreTMin < 0.5) {
		return nil, fmt.Errorf("si sample: score tmin %v, want in (0, 0.5)", opts.ScoreTMin)
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("si sample: workers %d, want >= 0 (0 = one per core)", opts.Workers)
	}
	chunk := opts.Chunk
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	n := len(x0) / d
	res := &Samples{X: make([]float32, len(x0))}
	if opts.Trajectory {
		res.Times = make([]float64, opts.Steps+1)
		res.States = make([][]float32, opts.Steps+1)
		for k := range res.States {
			res.Times[k] = float64(k) / float64(opts.Steps)
			res.States[k] = make([]float32, len(x0))
		}
	}
	// Each chunk is one piece of work on its own rows of res, with fields
	// of its worker's own.
	chunks := (n + chunk - 1) / chunk
	bs := forkFields(b, par.Size(opts.Workers, chunks))
	etas := make([]Field, len(bs))
	if sde && opts.Eps > 0 {
		if etas = forkFields(eta, len(bs)); len(etas) < len(bs) {
			bs = bs[:len(etas)]
		}
	}
	err := par.Do(ctx, len(bs), chunks, func(ctx context.Context, w, c int) error {
		lo := c * chunk
		hi := min(lo+chunk, n)
		if sde {
			return sampleSDEChunk(ctx, p, bs[w], etas[w], x0, lo, hi, opts, res)
		}
		return sampleODEChunk(ctx, bs[w], x0, lo, hi, opts, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func sampleODEChunk(ctx context.Context, b Field, x0 []float32, lo, hi int, opts SampleOptions, res *Samples) error {
	d := b.Dim()
	m := hi - lo
	st, err := newStepper(opts.Method, m*d)
	if err != nil {
		return err
	}
	ev := newFieldEvaluator(b, m)
	y := make([]float64, m*d)
	for i := range y {
		y[i] = float64(x0[lo*d+i])
	}
	record(res, 0, lo, d, y)
	h := 1 / float64(opts.Steps)
	for k := 0; k < opts.Steps; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := st.step(ev.eval, float64(k)*h, h, y); err != nil {
			return fmt.Errorf("si sample: %w", err)
		}
		record(res, k+1, lo, d, y)
	}
	for i, v := range y {
		res.X[lo*d+i] = float32(v)
	}
	return nil
}

func sampleSDEChunk(ctx context.Context, p Path, b, eta Field, x0 []float32, lo, hi int, opts SampleOptions, res *Samples) error {
	d := b.Dim()
	m := hi - lo
	bev := newFieldEvaluator(b, m)
	var eev *fieldEvaluator
	if opts.Eps > 0 {
		eev = newFieldEvaluator(eta, m)
	}
	y := make([]float64, m*d)
	for i := range y {
		y[i] = float64(x0[lo*d+i])
	}
	drift := make([]float64, m*d)
	etaOut := make([]float64, m*d)
	// Row i's noise stream is rng.New(Seed, PurposeSample, First+lo+i, k);
	// all but k is hashed once.
	keys := make([]rng.Key, m)
	base := rng.NewKey(opts.Seed, rng.PurposeSample)
	for i := range keys {
		keys[i] = base.With(uint64(opts.First + lo + i))
	}
	record(res, 0, lo, d, y)
	h := 1 / float64(opts.Steps)
	for k := 0; k < opts.Steps; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := float64(k) * h
		if err := bev.eval(t, y, drift); err != nil {
			return fmt.Errorf("si sample: velocity: %w", err)
		}
		g := p.At(t).G
		diffuse := opts.Eps > 0 && g > 0 && t >= opts.ScoreTMin && t <= 1-opts.ScoreTMin
		if diffuse {
			if err := eev.eval(t, y, etaOut); err != nil {
				return fmt.Errorf("si sample: denoiser: %w", err)
			}
			noise := math.Sqrt(2 * opts.Eps * h)
			for i := 0; i < m; i++ {
				s := keys[i].With(uint64(k)).Stream()
				for j := 0; j < d; j++ {
					q := i*d + j
					score := -etaOut[q] / g
					y[q] += (drift[q]+opts.Eps*score)*h + noise*s.Norm()
				}
			}
		} else {
			for q := range y {
				y[q] += drift[q] * h
			}
		}
		record(res, k+1, lo, d, y)
	}
	for i, v := range y {
		res.X[lo*d+i] = float32(v)
	}
	return nil
}

func record(res *Samples, k, lo, d int, y []float64) {
	if res.States == nil {
		return
	}
	dst := res.States[k][lo*d:]
	for i, v := range y {
		dst[i] = float32(v)
	}
}
