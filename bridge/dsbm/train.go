package dsbm

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// Options configure a single-process IMF run.
type Options struct {
	// Data is the law at t = 0, Prior at t = 1 (any distribution: transfer
	// between two datasets works the same as generation).
	Data, Prior Distribution
	Dim         int
	Sigma, Eps  float64
	// Steps N of Euler-Maruyama for the cache.
	Steps int
	First Coupling
	// Net is the architecture of both drifts.
	Net nn.Spec
	// Iterations K of IMF, each a backward then a forward phase of
	// StepsPerPhase optimiser steps.
	Iterations int
	// EndOnBackward drops the last iteration's forward phase. Samples from
	// the prior (generation, transfer) use only the backward drift, so a
	// run that wants those need not spend a phase on a forward drift it
	// never uses; the forward drift the run ends with is iteration K-1's.
	EndOnBackward bool
	StepsPerPhase int
	Batch         int
	// Hyper sets lr, EMA and clipping. With EMADecay > 0 a finished phase
	// is frozen with its EMA weights.
	Hyper Hyper
	// CacheSize pairs per cache generation in Shards virtual shards,
	// regenerated every Refresh steps (0: once per phase).
	CacheSize, Shards, Refresh int
	// WarmStart starts each phase's net (and EMA) from the last net of the
	// same direction, as the public DSBM code does (it keeps one network
	// per direction); otherwise every phase starts from a fresh
	// initialisation.
	WarmStart bool
	// WarmLR > 0 is the peak learning rate of the warm-started phases
	// (iteration 2 on) in place of Hyper.LR. Such a phase starts from a
	// drift that already solves a nearby problem, and a restart at the
	// rate that trained it from scratch can throw that solution away
	// before the new coupling is learnt. 0 keeps Hyper.LR.
	WarmLR float64
	// ScaledDrift: the nets learn a time-scaled drift (Chain.ScaledDrift).
	ScaledDrift bool
	// Denoise makes the trained model's samples drop their last step's
	// noise (SampleOptions.Denoise); training does not read it.
	Denoise bool
	// DenoiseCache drops the last step's noise of the cache simulations
	// (Chain.DenoiseCache).
	DenoiseCache bool
	// SampleSteps are the Euler-Maruyama steps of the trained model's
	// samples (SampleOptions.Steps); 0 means Steps. Training does not read
	// it either: the drifts are trained in continuous time.
	SampleSteps int
	Seed        uint64
	// Workers bounds the goroutines that simulate cache shards; 0 means one
	// per core. The cache is the same bytes for any value.
	Workers int
	// AfterIteration, if set, is called after each IMF iteration with the
	// result so far; an error stops the run.
	AfterIteration func(ctx context.Context, iteration int, r *Result) error
}

// Chain builds and validates the chain these options describe.
func (o *Options) Chain() (*Chain, error) {
	c := &Chain{Dim: o.Dim, Sigma: o.Sigma, Eps: o.Eps, Steps: o.Steps, First: o.First,
		Data: o.Data, Prior: o.Prior, Seed: o.Seed,
		CacheSize: o.CacheSize, Shards: o.Shards, Batch: o.Batch, Refresh: o.Refresh,
		ScaledDrift: o.ScaledDrift, DenoiseCache: o.DenoiseCache}
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
	if o.EndOnBackward && o.Iterations < 2 {
		return fmt.Errorf("end on backward: needs iterations >= 2 (the forward drift is iteration K-1's), got %d", o.Iterations)
	}
	if o.StepsPerPhase < 1 {
		return fmt.Errorf("steps per phase: must be >= 1, got %d", o.StepsPerPhase)
	}
	if o.Workers < 0 {
		return fmt.Errorf("workers: must be >= 0 (0 = one per core), got %d", o.Workers)
	}
	if o.SampleSteps < 0 {
		return fmt.Errorf("sample steps: must be >= 0 (0 = steps), got %d", o.SampleSteps)
	}
	if !(o.WarmLR >= 0 && o.WarmLR < math.Inf(1)) {
		return fmt.Errorf("warm lr: must be finite and >= 0 (0 = the phase rate), got %v", o.WarmLR)
	}
	if o.WarmLR > 0 && !o.WarmStart {
		return fmt.Errorf("warm lr: %v set without warm start, so no phase would use it", o.WarmLR)
	}
	return o.Hyper.Validate()
}

// HyperFor is the optimiser setting of phase id: Hyper, with WarmLR as
// the rate of a warm-started phase. Whether a phase is warm-started
// follows from id alone (iteration 2 on has a previous net of its
// direction), so a phase restored mid-way gets the rate it started with.
func (o *Options) HyperFor(id PhaseID) Hyper {
	h := o.Hyper
	if o.WarmStart && o.WarmLR > 0 && id.Iteration > 1 {
		h.LR = o.WarmLR
	}
	return h
}

// Phases is the run's phase sequence: backward then forward for each
// iteration, without the last forward phase under EndOnBackward.
func (o *Options) Phases() []PhaseID {
	out := make([]PhaseID, 0, 2*o.Iterations)
	for n := 1; n <= o.Iterations; n++ {
		out = append(out, PhaseID{Iteration: n, Dir: Backward})
		if n < o.Iterations || !o.EndOnBackward {
			out = append(out, PhaseID{Iteration: n, Dir: Forward})
		}
	}
	return out
}

// EndsIteration reports whether closing phase id completes its IMF
// iteration: a forward phase does, and so does the last backward phase of
// a run that ends on it.
func (o *Options) EndsIteration(id PhaseID) bool {
	return id.Dir == Forward || (o.EndOnBackward && id.Iteration == o.Iterations)
}

// Progress reports one optimiser step.
type Progress = dsb.Progress

// PhaseLoss is one phase's loss per step.
type PhaseLoss = dsb.PhaseLoss

// Result is the state of a run after some IMF iterations.
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

// Drift returns a copy of the last net of direction d carrying its frozen
// weights (the EMA when one is kept), so that training on does not change
// it.
func (r *Result) Drift(d Direction) (*nn.Net, error) {
	net, ema := r.B, r.BEMA
	if d == Forward {
		net, ema = r.F, r.FEMA
	}
	if net == nil {
		return nil, fmt.Errorf("no %s network trained yet", d)
	}
	cp, err := net.Clone()
	if err != nil {
		return nil, fmt.Errorf("freeze %s net: %w", d, err)
	}
	if ema != nil {
		copy(cp.Params(), ema)
	}
	return cp, nil
}

// OpenPhase sets up phase id as IMF runs it after the phases r holds, the
// one place where the sequencing lives (the single-process run and every
// distributed replica call it): no frozen drift for backward phase 1 (the
// first coupling), the forward drift of iteration n-1 for backward phase n,
// the backward drift of iteration n for forward phase n; the network is net
// with EMA shadow ema when given (a phase restored mid-way), else with warm
// start a copy of the last network of id's direction (and its EMA), else a
// fresh initialisation keyed by the phase.
func (r *Result) OpenPhase(o *Options, id PhaseID, net *nn.Net, ema []float32) (*Phase, error) {
	if err := validPhase(id); err != nil {
		return nil, err
	}
	var frozen Model
	if _, needs := Frozen(id); needs {
		f, err := r.Drift(opposite(id.Dir))
		if err != nil {
			return nil, fmt.Errorf("%v: frozen drift: %w", id, err)
		}
		frozen = f
	}
	if net == nil {
		prev, prevEMA := r.B, r.BEMA
		if id.Dir == Forward {
			prev, prevEMA = r.F, r.FEMA
		}
		var err error
		if prev != nil && o.WarmStart {
			if net, err = prev.Clone(); err != nil {
				return nil, fmt.Errorf("%v: warm start: %w", id, err)
			}
			if prevEMA != nil {
				ema = append([]float32(nil), prevEMA...)
			}
		} else if net, err = NewNet(o.Net, o.Seed, id); err != nil {
			return nil, err
		}
	}
	return NewPhase(r.Chain, id, frozen, net, o.HyperFor(id), ema)
}

// ClosePhase keeps p's network (live weights and EMA shadow) as the last
// of its direction and, when o.EndsIteration(p.ID), counts its IMF
// iteration completed.
func (r *Result) ClosePhase(o *Options, p *Phase) error {
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
	}
	if o.EndsIteration(p.ID) {
		r.Iterations = p.ID.Iteration
	}
	return nil
}

// Train runs IMF iterations 1..K in this process, each a backward phase then
// a forward phase (the last without it under EndOnBackward), on top of the
// [Phase] API that a distributed trainer drives. progress (optional) is called after every step; ctx is checked
// between steps and stops a cache build.
func Train(ctx context.Context, opts Options, progress func(Progress)) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("dsbm options: %w", err)
	}
	chain, err := opts.Chain()
	if err != nil {
		return nil, err
	}
	res := &Result{Chain: chain, Spec: opts.Net}
	for _, id := range opts.Phases() {
		p, err := res.OpenPhase(&opts, id, nil, nil)
		if err != nil {
			return nil, err
		}
		losses, err := runPhase(ctx, &opts, p, progress)
		if err != nil {
			return nil, err
		}
		res.Losses = append(res.Losses, PhaseLoss{Phase: id, Loss: losses})
		if err := res.ClosePhase(&opts, p); err != nil {
			return nil, err
		}
		if opts.AfterIteration != nil && opts.EndsIteration(id) {
			if err := opts.AfterIteration(ctx, id.Iteration, res); err != nil {
				return nil, fmt.Errorf("after imf iteration %d: %w", id.Iteration, err)
			}
		}
	}
	return res, nil
}

// NewNet is the network a phase starts from without a warm start: its
// initialisation is keyed by (seed, PurposeInit, phase), so every replica
// builds the same one.
func NewNet(spec nn.Spec, seed uint64, id PhaseID) (*nn.Net, error) {
	s := rng.New(seed, rng.PurposeInit, id.Key())
	net, err := nn.New(spec, s.Uint64())
	if err != nil {
		return nil, fmt.Errorf("%v: new net: %w", id, err)
	}
	return net, nil
}

// runPhase trains phase p and returns the loss per step. With more than
// one worker the next cache generation is simulated while steps train on
// the current one (par.Ahead, which also holds the BLAS at one thread): the
// frozen drift does not change within a phase, so a generation's bytes are
// the same whenever it is built.
func runPhase(ctx context.Context, o *Options, p *Phase, progress func(Progress)) ([]float64, error) {
	chain, id := p.Chain, p.ID
	all := make([]int, chain.Shards)
	for i := range all {
		all[i] = i
	}
	cache := par.NewAhead(ctx, func(ctx context.Context, g uint64) ([]*Shard, error) {
		return p.SimulateShards(ctx, g, all, o.Workers)
	}, chain.GenForStep(o.StepsPerPhase-1), par.Workers(o.Workers) > 1)
	defer cache.Stop()
	losses := make([]float64, 0, o.StepsPerPhase)
	var shards []*Shard
	var gen uint64
	var err error
	start := time.Now()
	for step := 0; step < o.StepsPerPhase; step++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%v step %d: %w", id, step, err)
		}
		if g := chain.GenForStep(step); shards == nil || g != gen {
			if shards, err = cache.Get(g); err != nil {
				return nil, err
			}
			gen = g
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
			rate := 0.0
			if el := time.Since(start).Seconds(); el > 0 {
				rate = float64((step+1)*chain.Batch) / el
			}
			progress(Progress{Phase: id, Iterations: o.Iterations, Step: step, Steps: o.StepsPerPhase,
				Loss: loss, SamplesPerSec: rate})
		}
	}
	return losses, nil
}
