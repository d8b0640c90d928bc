package dsb

import (
	"context"
	"fmt"
	"time"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// Options configure a single-process IPF run.
type Options struct {
	// Data is the law at k = 0, Prior the law at k = N (any distribution:
	// transfer between two datasets works the same as generation).
	Data, Prior Distribution
	Dim         int
	// N steps with gammas from [Gammas](N, GammaMin, GammaMax).
	N                  int
	GammaMin, GammaMax float64
	Reference          Reference
	// Net is the architecture of both the forward and the backward network.
	Net nn.Spec
	// Iterations K of IPF, each a backward then a forward phase, of
	// StepsPerPhase optimiser steps.
	Iterations    int
	StepsPerPhase int
	Batch         int
	// Hyper sets lr, EMA and clipping. When EMADecay > 0 (the official
	// code's setting), a finished phase is frozen with its EMA weights: they
	// simulate the next phase's cache and are what Result's means use.
	// EMADecay = 0 freezes the live weights.
	Hyper Hyper
	// CacheSize trajectories per cache generation, in Shards virtual
	// shards, regenerated every Refresh steps (0: once per phase).
	CacheSize, Shards, Refresh int
	// WarmStart starts each phase's net (and EMA) from the previous net of
	// the same direction, as the official 2D code does; otherwise every
	// phase starts from a fresh initialisation, as the public Gaussian
	// benchmark does.
	WarmStart bool
	// Denoise makes the trained model's samples end on the mean of the last
	// transition (SampleOptions.Denoise); training does not read it.
	Denoise bool
	// PosteriorTarget: backward phase 1 regresses on the reference's
	// posterior mean (Chain.PosteriorTarget).
	PosteriorTarget bool
	Seed            uint64
	// Workers bounds the goroutines that simulate cache shards; 0 means one
	// per core (GOMAXPROCS). The cache is the same bytes for any value.
	Workers int
	// AfterIteration, if set, is called after each IPF iteration with the
	// result so far (e.g. to evaluate iteration 1 and the last); an error
	// stops the run.
	AfterIteration func(ctx context.Context, iteration int, r *Result) error
}

// Chain builds and validates the chain these options describe.
func (o *Options) Chain() (*Chain, error) {
	sched, err := NewSchedule(o.N, o.GammaMin, o.GammaMax)
	if err != nil {
		return nil, err
	}
	c := &Chain{Sched: sched, Dim: o.Dim, Ref: o.Reference, Data: o.Data, Prior: o.Prior, Seed: o.Seed,
		CacheSize: o.CacheSize, Shards: o.Shards, Batch: o.Batch, Refresh: o.Refresh,
		PosteriorTarget: o.PosteriorTarget}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every field, naming the first bad one.
func (o *Options) Validate() error {
	if _, err := o.Chain(); err != nil {
		return err
	}
	if o.Net.Dim != o.Dim {
		return fmt.Errorf("net dim: %d, want the data dim %d", o.Net.Dim, o.Dim)
	}
	if err := o.Net.Validate(); err != nil {
		return err
	}
	if o.Iterations < 1 {
		return fmt.Errorf("iterations: must be >= 1, got %d", o.Iterations)
	}
	if o.Workers < 0 {
		return fmt.Errorf("workers: must be >= 0 (0 = one per core), got %d", o.Workers)
	}
	if o.StepsPerPhase < 1 {
		return fmt.Errorf("steps per phase: must be >= 1, got %d", o.StepsPerPhase)
	}
	return o.Hyper.Validate()
}

// Progress reports one optimiser step.
type Progress struct {
	Phase      PhaseID
	Iterations int // K
	Step       int // 0-based within the phase
	Steps      int // per phase
	Loss       float64
	// SamplesPerSec counts minibatch rows per second of wall time since the
	// phase began, cache simulation included.
	SamplesPerSec float64
}

// PhaseLoss is one phase's loss per step.
type PhaseLoss struct {
	Phase PhaseID
	Loss  []float64
}

// Result is the state of a run after some IPF iterations.
type Result struct {
	Chain *Chain
	Spec  nn.Spec
	// Iterations completed.
	Iterations int
	// B and F are the last backward and forward nets with their live
	// weights; BEMA and FEMA their EMA shadows (nil without EMA).
	B, F       *nn.Net
	BEMA, FEMA []float32
	Losses     []PhaseLoss
}

// Backward returns the learned backward mean B(k+1, x) with the frozen
// weights (the EMA when one is kept), for [Sample].
func (r *Result) Backward() (Mean, error) { return r.mean(Backward) }

// Forward returns the learned forward mean F(k, x) with the frozen weights.
func (r *Result) Forward() (Mean, error) { return r.mean(Forward) }

func (r *Result) mean(d Direction) (Mean, error) {
	net, ema := r.B, r.BEMA
	if d == Forward {
		net, ema = r.F, r.FEMA
	}
	if net == nil {
		return nil, fmt.Errorf("no %s network trained yet", d)
	}
	return frozenMean(net, ema, d, r.Chain)
}

// frozenMean wraps a copy of net carrying weights ema (or its own weights)
// so that training on the original does not change it.
func frozenMean(net *nn.Net, ema []float32, d Direction, c *Chain) (Mean, error) {
	cp, err := net.Clone()
	if err != nil {
		return nil, fmt.Errorf("freeze %s net: %w", d, err)
	}
	if ema != nil {
		copy(cp.Params(), ema)
	}
	return &NetMean{Net: cp, Dir: d, Sched: c.Sched, Dim: c.Dim}, nil
}

// OpenPhase sets up phase id as IPF runs it after the phases r holds, the
// one place where the sequencing lives (the single-process run and every
// distributed replica call it): the frozen mean is F_{n-1} (the reference
// for n = 1) in a backward phase and B_n in a forward one; the network is
// net with EMA shadow ema when given (a phase restored mid-way), else with
// warm start a copy of the last network of id's direction (and its EMA),
// else a fresh initialisation keyed by the phase.
func (r *Result) OpenPhase(o *Options, id PhaseID, net *nn.Net, ema []float32) (*Phase, error) {
	var frozen Mean
	var err error
	switch {
	case id.Dir == Forward:
		frozen, err = r.Backward()
	case id.Iteration == 1:
		frozen = r.Chain.ReferenceMean()
	default:
		frozen, err = r.Forward()
	}
	if err != nil {
		return nil, fmt.Errorf("%v: frozen mean: %w", id, err)
	}
	if net == nil {
		prev, prevEMA := r.B, r.BEMA
		if id.Dir == Forward {
			prev, prevEMA = r.F, r.FEMA
		}
		if prev != nil && o.WarmStart {
			if net, err = prev.Clone(); err != nil {
				return nil, fmt.Errorf("%v: warm start: %w", id, err)
			}
			if prevEMA != nil {
				ema = append([]float32(nil), prevEMA...)
			}
		} else {
			seed := rng.New(o.Seed, rng.PurposeInit, id.Key())
			if net, err = nn.New(o.Net, seed.Uint64()); err != nil {
				return nil, fmt.Errorf("%v: new net: %w", id, err)
			}
		}
	}
	return NewPhase(r.Chain, id, frozen, net, o.Hyper, ema)
}

// ClosePhase keeps p's network (live weights and EMA shadow) as the last
// of its direction; a forward phase completes its IPF iteration.
func (r *Result) ClosePhase(p *Phase) error {
	net, ok := p.Net.(*nn.Net)
	if !ok {
		return fmt.Errorf("%v: close: the trained network is a %T, want *nn.Net", p.ID, p.Net)
	}
	var shadow []float32
	if p.EMA != nil {
		shadow = p.EMA.Shadow
	}
	if p.ID.Dir == Backward {
		r.B, r.BEMA = net, shadow
	} else {
		r.F, r.FEMA = net, shadow
		r.Iterations = p.ID.Iteration
	}
	return nil
}

// Train runs IPF iterations 1..K in this process, each a backward phase then
// a forward phase, on top of the [Phase] API that a distributed trainer
// drives. progress (optional) is called after every step; ctx is checked
// between steps and stops a cache build.
func Train(ctx context.Context, opts Options, progress func(Progress)) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("dsb options: %w", err)
	}
	chain, err := opts.Chain()
	if err != nil {
		return nil, err
	}
	res := &Result{Chain: chain, Spec: opts.Net}
	for n := 1; n <= opts.Iterations; n++ {
		for _, dir := range []Direction{Backward, Forward} {
			id := PhaseID{Iteration: n, Dir: dir}
			p, err := res.OpenPhase(&opts, id, nil, nil)
			if err != nil {
				return nil, err
			}
			losses, err := runPhase(ctx, &opts, p, progress)
			if err != nil {
				return nil, err
			}
			res.Losses = append(res.Losses, PhaseLoss{Phase: id, Loss: losses})
			if err := res.ClosePhase(p); err != nil {
				return nil, err
			}
		}
		if opts.AfterIteration != nil {
			if err := opts.AfterIteration(ctx, n, res); err != nil {
				return nil, fmt.Errorf("after ipf iteration %d: %w", n, err)
			}
		}
	}
	return res, nil
}

// runPhase trains phase p and returns the loss per step. With more than
// one worker the next cache generation is simulated while steps train on
// the current one (par.Ahead): the frozen mean does not change within a
// phase, so a generation's bytes are the same whenever it is built.
func runPhase(ctx context.Context, o *Options, p *Phase, progress func(Progress)) ([]float64, error) {
	chain, id := p.Chain, p.ID
	losses := make([]float64, 0, o.StepsPerPhase)
	var shards []*Shard
	all := make([]int, chain.Shards)
	for i := range all {
		all[i] = i
	}
	last := chain.GenForStep(o.StepsPerPhase - 1)
	cache := par.NewAhead(ctx, func(ctx context.Context, g uint64) ([]*Shard, error) {
		return p.SimulateShards(ctx, g, all, o.Workers)
	}, last, par.Workers(o.Workers) > 1)
	defer cache.Stop()
	haveGen := false
	var gen uint64
	var err error
	start := time.Now()
	for step := 0; step < o.StepsPerPhase; step++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%v step %d: %w", id, step, err)
		}
		if g := chain.GenForStep(step); !haveGen || g != gen {
			if shards, err = cache.Get(g); err != nil {
				return nil, err
			}
			gen, haveGen = g, true
		}
		loss, err := p.LocalGrad(step, shards)
		if err != nil {
			return nil, err
		}
		if _, err := p.Apply(p.Net.Grads()); err != nil {
			return nil, fmt.Errorf("step %d: %w", step, err)
		}
		losses = append(losses, loss)
		if progress != nil {
			el := time.Since(start).Seconds()
			rate := 0.0
			if el > 0 {
				rate = float64((step+1)*chain.Batch) / el
			}
			progress(Progress{Phase: id, Iterations: o.Iterations, Step: step, Steps: o.StepsPerPhase,
				Loss: loss, SamplesPerSec: rate})
		}
	}
	return losses, nil
}
