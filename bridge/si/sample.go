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
	// Method is euler, heun, rk4 or dopri5 (the ODE dX = b dt), or sde
	// (Euler-Maruyama) or sde-heun (stochastic Heun) for the SDEs
	// forward dX = (b + eps(t) s) dt + sqrt(2 eps(t)) dW and
	// reverse dX = (b - eps(t) s) dt + sqrt(2 eps(t)) dW-bar.
	Method string
	Steps  int // fixed steps on [0, 1]; dopri5 with Trajectory: the grid it reports on
	// Eps scales the diffusion eps(t) of the SDEs (EpsSchedule: constant,
	// gamma or gamma2; "" is constant). s is opts.Score when set, else
	// -eta/g. Eps = 0 makes sde the Euler ODE and sde-heun the Heun ODE.
	Eps         float64
	EpsSchedule string
	// ScoreTMin: eps(t) is 0 outside [ScoreTMin, 1-ScoreTMin] and where
	// g(t) = 0, so those steps are ODE steps (see EpsSchedule). 0 means
	// DefaultScoreTMin.
	ScoreTMin float64
	// Score, when set, is the score s itself (a score network, or the
	// closed form); otherwise the SDE reads it from eta as -eta/g.
	Score Field
	// Direction is forward (default: x0 from rho0 at t = 0 to t = 1) or
	// reverse (the start is drawn from rho1 at t = 1, the result is at t = 0).
	Direction string
	// RTol and ATol are dopri5's tolerances; 0 means DefaultRTol/DefaultATol.
	RTol, ATol float64
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

// MethodSDEHeun is the stochastic Heun sampler of the SDEs.
const MethodSDEHeun = "sde-heun"

// DefaultChunk is nn's own chunk size, so a network sees the same batches
// as when it was given 4096 rows at once (the former default) and results
// keep their bytes under OpenBLAS too, while twice as many pieces share the
// cores more evenly.
const DefaultChunk = 2048

// Samples is the result of Sample.
type Samples struct {
	X []float32 // final states at t = 1 (t = 0 in reverse), n*d
	// Evals is the number of drift evaluations of the longest chunk (each
	// covers every row of its chunk): 4 Steps for rk4, adaptive for dopri5.
	Evals int
	// Times and States are filled when Trajectory was asked: States[k] holds
	// all samples at Times[k].
	Times  []float64
	States [][]float32
}

// Sample transports x0 (n*d values, n = len(x0)/d) from one end to the
// other: drawn from rho0 and carried to t = 1, or, with Direction reverse,
// drawn from rho1 and carried back to t = 0. eta (the denoiser) is needed
// only by the SDEs with Eps > 0 and no opts.Score. Chunks of opts.Chunk
// samples are integrated on up to opts.Workers goroutines, each with its
// own forks of the fields (one goroutine unless they are all [Forker]s);
// the chunks do not depend on the worker count, so neither do the bytes.
// The first error or the end of ctx stops every chunk.
func Sample(ctx context.Context, p Path, b, eta Field, x0 []float32, opts SampleOptions) (*Samples, error) {
	d := b.Dim()
	if d <= 0 || len(x0)%d != 0 {
		return nil, fmt.Errorf("si sample: %d initial values is not a multiple of dimension %d", len(x0), d)
	}
	if opts.Steps <= 0 {
		return nil, fmt.Errorf("si sample: steps %d, want > 0", opts.Steps)
	}
	reverse := false
	switch opts.Direction {
	case "", DirectionForward:
	case DirectionReverse:
		reverse = true
	default:
		return nil, fmt.Errorf("si sample: direction %q: want %s or %s", opts.Direction, DirectionForward, DirectionReverse)
	}
	sde := opts.Method == MethodSDE || opts.Method == MethodSDEHeun
	var sched EpsSchedule
	var score Field
	if sde {
		var err error
		if sched, err = NewEpsSchedule(opts.EpsSchedule, opts.Eps, p, opts.ScoreTMin); err != nil {
			return nil, fmt.Errorf("si sample: %w", err)
		}
		if !sched.Zero() {
			switch {
			case opts.Score != nil:
				score = opts.Score
			case eta == nil:
				return nil, fmt.Errorf("si sample: the SDE with eps > 0 needs the denoiser eta or the score")
			default:
				score = &EtaScore{Path: p, Eta: eta}
			}
			if score.Dim() != d {
				return nil, fmt.Errorf("si sample: the score has dimension %d, b has %d", score.Dim(), d)
			}
		}
	} else if opts.Method != MethodDopri5 {
		if _, err := newStepper(opts.Method, 0); err != nil {
			return nil, fmt.Errorf("si sample: %w", err)
		}
	} else if _, err := newDopri(0, opts.RTol, opts.ATol); err != nil {
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
			if reverse {
				res.Times[k] = 1 - res.Times[k]
			}
			res.States[k] = make([]float32, len(x0))
		}
	}
	// Each chunk is one piece of work on its own rows of res, with fields
	// of its worker's own.
	chunks := (n + chunk - 1) / chunk
	bs := forkFields(b, par.Size(opts.Workers, chunks))
	scores := make([]Field, len(bs))
	if score != nil {
		if scores = forkFields(score, len(bs)); len(scores) < len(bs) {
			bs = bs[:len(scores)]
		}
	}
	evals := make([]int, chunks)
	err := par.Do(ctx, len(bs), chunks, func(ctx context.Context, w, c int) error {
		lo := c * chunk
		hi := min(lo+chunk, n)
		var err error
		if sde {
			evals[c], err = sampleSDEChunk(ctx, p, bs[w], scores[w], sched, reverse, x0, lo, hi, opts, res)
		} else {
			evals[c], err = sampleODEChunk(ctx, bs[w], reverse, x0, lo, hi, opts, res)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, e := range evals {
		res.Evals = max(res.Evals, e)
	}
	return res, nil
}

func sampleODEChunk(ctx context.Context, b Field, reverse bool, x0 []float32, lo, hi int, opts SampleOptions, res *Samples) (int, error) {
	d := b.Dim()
	m := hi - lo
	ev := newFieldEvaluator(b, m)
	evals := 0
	f := func(t float64, y, dy []float64) error {
		evals++
		return ev.eval(t, y, dy)
	}
	y := make([]float64, m*d)
	for i := range y {
		y[i] = float64(x0[lo*d+i])
	}
	record(res, 0, lo, d, y)
	h := 1 / float64(opts.Steps)
	t0 := 0.0
	if reverse {
		h, t0 = -h, 1
	}
	if opts.Method == MethodDopri5 {
		dp, err := newDopri(m*d, opts.RTol, opts.ATol)
		if err != nil {
			return 0, err
		}
		// Without a trajectory one adaptive run covers [0, 1]; with one it
		// stops at every grid time to report the state there.
		segments := 1
		if opts.Trajectory {
			segments = opts.Steps
		}
		hs := 0.0
		for k := 0; k < segments; k++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			ta := t0 + float64(k)/float64(segments)*(1-2*t0)
			tb := t0 + float64(k+1)/float64(segments)*(1-2*t0)
			if hs, err = dp.integrate(f, ta, tb, y, hs); err != nil {
				return 0, fmt.Errorf("si sample: %w", err)
			}
			if opts.Trajectory {
				record(res, k+1, lo, d, y)
			}
		}
	} else {
		st, err := newStepper(opts.Method, m*d)
		if err != nil {
			return 0, err
		}
		for k := 0; k < opts.Steps; k++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			if err := st.step(f, t0+float64(k)*h, h, y); err != nil {
				return 0, fmt.Errorf("si sample: %w", err)
			}
			record(res, k+1, lo, d, y)
		}
	}
	for i, v := range y {
		res.X[lo*d+i] = float32(v)
	}
	return evals, nil
}

// sdeDrift evaluates the SDE's drift b + sign eps s at (t, y); sign is +1
// forward, -1 reverse. It returns eps(t), and reads the score only when
// eps(t) > 0.
type sdeDrift struct {
	sched    EpsSchedule
	sign     float64
	bev, sev *fieldEvaluator
	b, s     []float64
	evals    int
	// etaPath is set when sev evaluates a denoiser: s = -eta/g is then
	// formed here in float64, as the constant-eps sampler always did.
	etaPath *Path
}

func (f *sdeDrift) eval(t float64, y, out []float64) (float64, error) {
	f.evals++
	if err := f.bev.eval(t, y, f.b); err != nil {
		return 0, fmt.Errorf("si sample: velocity: %w", err)
	}
	e := f.sched.At(t)
	if e == 0 {
		copy(out, f.b)
		return 0, nil
	}
	if err := f.sev.eval(t, y, f.s); err != nil {
		return 0, fmt.Errorf("si sample: score: %w", err)
	}
	if f.etaPath != nil {
		g := f.etaPath.At(t).G
		for q := range out {
			out[q] = f.b[q] + f.sign*e*(-f.s[q]/g)
		}
		return e, nil
	}
	for q := range out {
		out[q] = f.b[q] + f.sign*e*f.s[q]
	}
	return e, nil
}

func sampleSDEChunk(ctx context.Context, p Path, b, score Field, sched EpsSchedule, reverse bool, x0 []float32, lo, hi int, opts SampleOptions, res *Samples) (int, error) {
	d := b.Dim()
	m := hi - lo
	f := &sdeDrift{sched: sched, sign: 1, bev: newFieldEvaluator(b, m), b: make([]float64, m*d), s: make([]float64, m*d)}
	if es, ok := score.(*EtaScore); ok {
		f.sev, f.etaPath = newFieldEvaluator(es.Eta, m), &es.Path
	} else if score != nil {
		f.sev = newFieldEvaluator(score, m)
	}
	y := make([]float64, m*d)
	for i := range y {
		y[i] = float64(x0[lo*d+i])
	}
	drift := make([]float64, m*d)
	drift2 := make([]float64, m*d)
	yt := make([]float64, m*d)
	noise := make([]float64, m*d)
	// Row i's noise stream is rng.New(Seed, PurposeSample, First+lo+i, k);
	// all but k is hashed once.
	keys := make([]rng.Key, m)
	base := rng.NewKey(opts.Seed, rng.PurposeSample)
	for i := range keys {
		keys[i] = base.With(uint64(opts.First + lo + i))
	}
	record(res, 0, lo, d, y)
	h := 1 / float64(opts.Steps)
	t0, dt := 0.0, h
	if reverse {
		f.sign, t0, dt = -1, 1, -h
	}
	heun := opts.Method == MethodSDEHeun
	for k := 0; k < opts.Steps; k++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t := t0 + float64(k)*dt
		e, err := f.eval(t, y, drift)
		if err != nil {
			return 0, err
		}
		if heun {
			// Stochastic Heun with additive noise: the predictor and the
			// corrector share the increment, whose variance is 2 h times
			// the trapezoidal average of eps over the step.
			e2 := sched.At(t + dt)
			if e+e2 > 0 {
				fillNoise(keys, k, d, math.Sqrt((e+e2)*h), noise)
			} else {
				clear(noise)
			}
			for q := range y {
				yt[q] = y[q] + drift[q]*dt + noise[q]
			}
			if _, err := f.eval(t+dt, yt, drift2); err != nil {
				return 0, err
			}
			for q := range y {
				y[q] += (drift[q]+drift2[q])/2*dt + noise[q]
			}
		} else if e > 0 {
			sd := math.Sqrt(2 * e * h)
			for i := 0; i < m; i++ {
				s := keys[i].With(uint64(k)).Stream()
				for j := 0; j < d; j++ {
					q := i*d + j
					y[q] += drift[q]*dt + sd*s.Norm()
				}
			}
		} else {
			for q := range y {
				y[q] += drift[q] * dt
			}
		}
		record(res, k+1, lo, d, y)
	}
	for i, v := range y {
		res.X[lo*d+i] = float32(v)
	}
	return f.evals, nil
}

// fillNoise writes sd times the step-k normals of every row.
func fillNoise(keys []rng.Key, k, d int, sd float64, out []float64) {
	for i := range keys {
		s := keys[i].With(uint64(k)).Stream()
		for j := 0; j < d; j++ {
			out[i*d+j] = sd * s.Norm()
		}
	}
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
