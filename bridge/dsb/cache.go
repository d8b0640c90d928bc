package dsb

import (
	"fmt"
	"math"
	"slices"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/rng"
)

// Distribution is a law to bridge: the data at k = 0 or the prior at k = N.
type Distribution = dataset.Distribution

// PhaseID names one training phase: IPF iteration n >= 1 and the direction
// trained in it (Backward trains B_n, then Forward trains F_n).
type PhaseID struct {
	Iteration int
	Dir       Direction
}

// Key is the phase's counter for random streams: 2(n-1) for the backward
// phase of iteration n, 2(n-1)+1 for its forward phase. Phases are run in
// increasing key order.
func (p PhaseID) Key() uint64 { return uint64(2*(p.Iteration-1)) + uint64(p.Dir) }

func (p PhaseID) String() string { return fmt.Sprintf("ipf %d %s", p.Iteration, p.Dir) }

func (p PhaseID) validate() error {
	if p.Iteration < 1 {
		return fmt.Errorf("phase iteration: must be >= 1, got %d", p.Iteration)
	}
	if p.Dir != Backward && p.Dir != Forward {
		return fmt.Errorf("phase direction: want backward or forward, got %d", int(p.Dir))
	}
	return nil
}

// Chain is everything about a run that the cache and the minibatches depend
// on. A coordinator and every trainer must hold the same Chain.
type Chain struct {
	Sched Schedule
	Dim   int
	Ref   Reference
	// Data is the law at k = 0, Prior at k = N. The prior may be any
	// distribution (transfer between two datasets).
	Data, Prior Distribution
	Seed        uint64
	// CacheSize M is the number of trajectories in one cache generation, cut
	// into Shards S virtual shards of M/S consecutive trajectories each.
	CacheSize int
	Shards    int
	// Batch B is the global minibatch: B/S samples from each shard.
	Batch int
	// Refresh R: step s uses cache generation s/R; 0 keeps generation 0 for
	// the whole phase.
	Refresh int
	// PosteriorTarget makes backward phase 1, whose frozen mean is the
	// reference, regress on F(E[X_k | X_{k+1}, X_0]) - F(X_{k+1}) in place
	// of F(X_k) - F(X_{k+1}). The reference is affine, so the target is
	// affine in X_k and both have the same conditional mean given X_{k+1}
	// (the tower rule): the same minimiser, without the transition's own
	// noise, of variance 2 g_{k+1} per coordinate, which otherwise swamps
	// the mean the net must learn. It is the denoising objective of
	// diffusion models, and it needs the trajectory's start X_0, which
	// later phases' cached chains (started from the prior) do not have.
	PosteriorTarget bool
}

// Validate checks sizes and divisibility; errors name the field.
func (c *Chain) Validate() error {
	if c.Sched.N() == 0 {
		return fmt.Errorf("schedule: no steps")
	}
	for i, g := range c.Sched.Gammas {
		if !(g > 0) || math.IsInf(g, 0) {
			return fmt.Errorf("schedule gamma[%d]: must be positive and finite, got %v", i, g)
		}
	}
	if c.Dim <= 0 {
		return fmt.Errorf("dim: must be positive, got %d", c.Dim)
	}
	if err := c.Ref.Validate(c.Dim); err != nil {
		return err
	}
	if c.Data == nil {
		return fmt.Errorf("data: no distribution")
	}
	if c.Prior == nil {
		return fmt.Errorf("prior: no distribution")
	}
	if d := c.Data.Dim(); d != c.Dim {
		return fmt.Errorf("data %s: dim %d, want %d", c.Data.Name(), d, c.Dim)
	}
	if d := c.Prior.Dim(); d != c.Dim {
		return fmt.Errorf("prior %s: dim %d, want %d", c.Prior.Name(), d, c.Dim)
	}
	if c.Shards <= 0 {
		return fmt.Errorf("shards: must be positive, got %d", c.Shards)
	}
	if c.CacheSize <= 0 || c.CacheSize%c.Shards != 0 {
		return fmt.Errorf("cache size: must be a positive multiple of shards (%d), got %d", c.Shards, c.CacheSize)
	}
	if c.Batch <= 0 || c.Batch%c.Shards != 0 {
		return fmt.Errorf("batch: must be a positive multiple of shards (%d), got %d", c.Shards, c.Batch)
	}
	if c.Refresh < 0 {
		return fmt.Errorf("refresh: must be >= 0 steps, got %d", c.Refresh)
	}
	return nil
}

// PerShard is the number of trajectories in one shard.
func (c *Chain) PerShard() int { return c.CacheSize / c.Shards }

// GenForStep is the cache generation that step s of a phase samples from.
func (c *Chain) GenForStep(step int) uint64 {
	if c.Refresh == 0 {
		return 0
	}
	return uint64(step / c.Refresh)
}

// Shard is one virtual shard of one cache generation: PerShard trajectories,
// each contributing N training pairs, one per transition k. Row r = j*N + k
// (j the trajectory within the shard) holds the net input and the net's
// regression target (already minus the input, so the net learns the
// residual). For a backward phase the input is X_{k+1} at time Time(k+1);
// for a forward phase it is X_k at time Time(k).
type Shard struct {
	Phase PhaseID
	Gen   uint64
	Index int
	// Trajectories, Steps (N) and Dim size the arrays.
	Trajectories, Steps, Dim int
	Inputs                   []float32 // Trajectories*Steps rows of Dim
	Targets                  []float32 // same shape
}

// Check verifies that a shard (for example one loaded from storage) is the
// one this chain would build for (phase, gen, index).
func (c *Chain) Check(s *Shard, phase PhaseID, gen uint64, index int) error {
	if s == nil {
		return fmt.Errorf("shard %d: missing", index)
	}
	if s.Phase != phase || s.Gen != gen || s.Index != index {
		return fmt.Errorf("shard: is (%v, gen %d, index %d), want (%v, gen %d, index %d)",
			s.Phase, s.Gen, s.Index, phase, gen, index)
	}
	n := c.PerShard() * c.Sched.N() * c.Dim
	if s.Trajectories != c.PerShard() || s.Steps != c.Sched.N() || s.Dim != c.Dim ||
		len(s.Inputs) != n || len(s.Targets) != n {
		return fmt.Errorf("shard %d: shape %dx%dx%d with %d inputs and %d targets, want %dx%dx%d (%d values)",
			index, s.Trajectories, s.Steps, s.Dim, len(s.Inputs), len(s.Targets), c.PerShard(), c.Sched.N(), c.Dim, n)
	}
	return nil
}

// SimulateShard builds shard `shard` of cache generation gen for a phase,
// simulating with the frozen mean of the other direction: a backward phase
// needs a Forward mean (F_{n-1}, or [ReferenceMean] for n = 1), a forward
// phase a Backward mean (B_n). Trajectory j (global index in the cache)
// starts from the draw keyed (seed, PurposeData, phase, gen, j) of the data
// (backward phase) or the prior (forward phase); its noise at transition k is
// keyed (seed, PurposeNoise, phase, gen, j, k). The result is therefore the
// same bytes in whichever process builds it, given the same frozen weights.
func (c *Chain) SimulateShard(frozen Mean, phase PhaseID, gen uint64, shard int) (*Shard, error) {
	if err := phase.validate(); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= c.Shards {
		return nil, fmt.Errorf("shard index %d outside 0..%d", shard, c.Shards-1)
	}
	if want := opposite(phase.Dir); frozen == nil || frozen.Direction() != want {
		return nil, fmt.Errorf("%v: simulating needs the frozen %s mean", phase, want)
	}
	per, n, dim := c.PerShard(), c.Sched.N(), c.Dim
	first := uint64(shard * per)
	start := c.Data
	if phase.Dir == Forward {
		start = c.Prior
	}
	x := make([]float32, per*dim)
	drawRows(start, x, dim, func(j int) rng.Stream {
		return rng.New(c.Seed, rng.PurposeData, phase.Key(), gen, first+uint64(j))
	})

	s := &Shard{Phase: phase, Gen: gen, Index: shard, Trajectories: per, Steps: n, Dim: dim,
		Inputs: make([]float32, per*n*dim), Targets: make([]float32, per*n*dim)}
	// Trajectory j's noise key up to the transition, hashed once rather than
	// at every step: the streams are those of rng.New(seed, PurposeNoise,
	// phase, gen, first+j, k).
	noise := make([]rng.Key, per)
	base := rng.NewKey(c.Seed, rng.PurposeNoise, phase.Key(), gen)
	for j := range noise {
		noise[j] = base.With(first + uint64(j))
	}
	var post *posterior
	if _, isRef := frozen.(ReferenceMean); isRef && c.PosteriorTarget && phase.Dir == Backward {
		post = newPosterior(c.Sched, c.Ref, x)
	}
	next := make([]float32, per*dim)
	mean := make([]float32, per*dim)  // frozen mean at the point the chain came from
	atNew := make([]float32, per*dim) // frozen mean at the point it went to
	for step := 0; step < n; step++ {
		// The frozen chain runs forward (k = 0..N-1) in a backward phase and
		// backward (k = N-1..0) in a forward phase.
		k := step
		if phase.Dir == Forward {
			k = n - 1 - step
		}
		if err := frozen.Eval(k, x, mean); err != nil {
			return nil, fmt.Errorf("simulate %v gen %d shard %d: %w", phase, gen, shard, err)
		}
		sd := c.Sched.noiseScale(k)
		for j, key := range noise {
			z := key.With(uint64(k)).Stream()
			for i := j * dim; i < (j+1)*dim; i++ {
				next[i] = float32(float64(mean[i]) + sd*z.Norm())
			}
		}
		if post != nil {
			for j := 0; j < per; j++ {
				row := (j*n + k) * dim
				copy(s.Inputs[row:row+dim], next[j*dim:(j+1)*dim])
				post.targets(k, j, next[j*dim:(j+1)*dim], s.Targets[row:row+dim])
			}
			x, next = next, x
			continue
		}
		if err := frozen.Eval(k, next, atNew); err != nil {
			return nil, fmt.Errorf("simulate %v gen %d shard %d: %w", phase, gen, shard, err)
		}
		// Mean matching: the trained mean at the new point must reproduce
		// new + frozen(old) - frozen(new), so its residual net learns
		// frozen(old) - frozen(new).
		for j := 0; j < per; j++ {
			row := (j*n + k) * dim
			copy(s.Inputs[row:row+dim], next[j*dim:(j+1)*dim])
			for i := 0; i < dim; i++ {
				s.Targets[row+i] = mean[j*dim+i] - atNew[j*dim+i]
			}
		}
		x, next = next, x
	}
	return s, nil
}

// posterior is the reference chain's law of X_k given X_0 and X_{k+1}.
// Centred on the OU mean, y = x - mu, every transition is y_{k+1} = c_k y_k
// + s_k Z with c_k = 1 - g_{k+1}/v (1 for Brownian) and s_k^2 = 2 g_{k+1}, so
// y_k | y_0 ~ N(m_k y_0, v_k I) with m_0 = 1, v_0 = 0, m_{k+1} = c_k m_k and
// v_{k+1} = c_k^2 v_k + s_k^2, and by Bayes
//
//	E[y_k | y_0, y_{k+1}] = (m_k s_k^2 y_0 + c_k v_k y_{k+1}) / (s_k^2 + c_k^2 v_k).
type posterior struct {
	ref     Reference
	c, m, v []float64 // per transition k
	s2      []float64
	starts  []float32 // X_0 of each trajectory, rows of dim
}

func newPosterior(sched Schedule, ref Reference, starts []float32) *posterior {
	n := sched.N()
	p := &posterior{ref: ref, c: make([]float64, n), m: make([]float64, n), v: make([]float64, n),
		s2: make([]float64, n), starts: slices.Clone(starts)}
	m, v := 1.0, 0.0
	for k, g := range sched.Gammas {
		c := 1.0
		if ref.Kind == OU {
			c = 1 - g/ref.variance()
		}
		p.c[k], p.m[k], p.v[k], p.s2[k] = c, m, v, 2*g
		m, v = c*m, c*c*v+2*g
	}
	return p
}

// targets writes trajectory j's regression target at transition k, F_k of
// the posterior mean of X_k minus F_k(X_{k+1}) = c_k (E[y_k | ...] -
// y_{k+1}), given its X_{k+1} = next.
func (p *posterior) targets(k, j int, next, out []float32) {
	c, m, v, s2 := p.c[k], p.m[k], p.v[k], p.s2[k]
	den := s2 + c*c*v
	start := p.starts[j*len(next) : (j+1)*len(next)]
	for i := range next {
		mu := 0.0
		if p.ref.Kind == OU && len(p.ref.Mu) > 0 {
			mu = p.ref.Mu[i]
		}
		y0, y1 := float64(start[i])-mu, float64(next[i])-mu
		yk := (m*s2*y0 + c*v*y1) / den
		out[i] = float32(c * (yk - y1))
	}
}

// drawRows fills dst (rows of dim) with one draw per row from d, row j using
// the stream key(j).
func drawRows(d Distribution, dst []float32, dim int, key func(j int) rng.Stream) {
	buf := make([]float64, dim)
	for j := 0; j < len(dst)/dim; j++ {
		s := key(j)
		d.Sample(&s, buf)
		for i, v := range buf {
			dst[j*dim+i] = float32(v)
		}
	}
}

// Batch is the part of a global minibatch drawn from some shards: one row per
// sample, in the layout nn's LossGrad takes.
type Batch struct {
	T      []float32 // net time per row
	X      []float32 // net input, rows of Dim
	Target []float32 // regression target for the net output
}

// Rows is the number of samples.
func (b Batch) Rows() int { return len(b.T) }

// Weight is the factor this partial batch's mean loss and gradient carry in
// the global step: Rows/B. nn's LossGrad averages over the rows passed, so
// the global mean gradient is the sum over workers of Weight*localGrad, and
// the same holds for the loss.
func (c *Chain) Weight(b Batch) float64 { return float64(b.Rows()) / float64(c.Batch) }

// MakeBatch gathers the rows of step `step` that come from the given shards.
// Each shard contributes B/S samples; sample i of shard s takes trajectory
// and transition from the stream (seed, PurposeBatch, phase, step, s, i), so a
// worker owning any subset of the shards gathers exactly its part of the
// single-process minibatch. Every shard must belong to the phase and to the
// generation GenForStep(step).
func (c *Chain) MakeBatch(phase PhaseID, step int, shards []*Shard) (Batch, error) {
	per, n, dim := c.PerShard(), c.Sched.N(), c.Dim
	each := c.Batch / c.Shards
	gen := c.GenForStep(step)
	rows := each * len(shards)
	b := Batch{T: make([]float32, rows), X: make([]float32, rows*dim), Target: make([]float32, rows*dim)}
	seen := make(map[int]bool, len(shards))
	for si, s := range shards {
		if s == nil {
			return Batch{}, fmt.Errorf("batch %v step %d: shard %d of %d is nil", phase, step, si, len(shards))
		}
		if err := c.Check(s, phase, gen, s.Index); err != nil {
			return Batch{}, fmt.Errorf("batch %v step %d: %w", phase, step, err)
		}
		if seen[s.Index] {
			return Batch{}, fmt.Errorf("batch %v step %d: shard %d given twice", phase, step, s.Index)
		}
		seen[s.Index] = true
		for i := 0; i < each; i++ {
			st := rng.New(c.Seed, rng.PurposeBatch, phase.Key(), uint64(step), uint64(s.Index), uint64(i))
			j, k := st.Intn(per), st.Intn(n)
			r := si*each + i
			src := (j*n + k) * dim
			b.T[r] = netTime(c.Sched, phase.Dir, k)
			copy(b.X[r*dim:(r+1)*dim], s.Inputs[src:src+dim])
			copy(b.Target[r*dim:(r+1)*dim], s.Targets[src:src+dim])
		}
	}
	return b, nil
}
