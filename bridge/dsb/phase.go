package dsb

import (
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/nn"
)

// Trainable is what a phase needs of the network it trains; *nn.Net
// satisfies it. LossGrad returns (1/B) sum_b |net(t_b, x_b) - target_b|^2 over
// the B rows passed and leaves its gradient in Grads(); LossGradTo returns
// weight times it and writes its gradient into a buffer of the caller's.
type Trainable interface {
	Model
	LossGrad(t, x, target []float32) (float64, error)
	LossGradTo(t, x, target []float32, weight float64, grads []float32) (float64, error)
	Params() []float32
	Grads() []float32
}

// Hyper are the optimiser settings of a phase.
type Hyper struct {
	LR float64
	// EMADecay > 0 keeps an exponential moving average of the weights;
	// 0 keeps none. The decay used at optimiser step t (1-based) is
	// min(EMADecay, (1+t)/(10+t)), so that a phase trained from scratch
	// forgets its random initialisation within tens of steps instead of
	// keeping EMADecay^steps of it (13% after 2000 steps at 0.999); the
	// step count comes from Adam.T, which a checkpoint restores.
	EMADecay float64
	// GradClip > 0 clips the global gradient norm before the Adam step.
	GradClip float64
	// CosineSteps > 0 decays the rate from LR to 0 by a half cosine over
	// that many optimiser steps (a phase's length), so that a short phase
	// ends on small steps, as a long one with a constant rate ends on an
	// average; 0 keeps LR throughout. Each phase restarts the decay (its
	// Adam starts afresh), and the rate is a function of Adam.T alone, so
	// a resumed phase needs no schedule state.
	CosineSteps int
}

// RateAt is the learning rate of the optimiser step taken after t steps.
func (h Hyper) RateAt(t int64) float64 {
	return nn.CosineRate(h.LR, t, int64(h.CosineSteps))
}

// Validate names the bad field.
func (h Hyper) Validate() error {
	if !(h.LR > 0) || math.IsInf(h.LR, 0) {
		return fmt.Errorf("lr: must be positive and finite, got %v", h.LR)
	}
	if !(h.EMADecay >= 0 && h.EMADecay < 1) {
		return fmt.Errorf("ema decay: must be in [0, 1), got %v", h.EMADecay)
	}
	if !(h.GradClip >= 0) || math.IsInf(h.GradClip, 0) {
		return fmt.Errorf("grad clip: must be >= 0 and finite (0 = off), got %v", h.GradClip)
	}
	if h.CosineSteps < 0 {
		return fmt.Errorf("cosine steps: must be >= 0 (0 = constant rate), got %d", h.CosineSteps)
	}
	return nil
}

// Phase is one IPF phase driven step by step. A distributed trainer runs, on
// every replica, for each step s:
//
//  1. when s is the first step or s%Refresh == 0: make (or load) the shards
//     it owns of generation Chain.GenForStep(s) with [Phase.SimulateShard];
//  2. [Phase.LocalGrad](s, owned shards): the weighted local loss, and the
//     weighted local gradient in Net.Grads();
//  3. all-reduce (sum) Net.Grads() and the loss over workers;
//  4. [Phase.Apply] with the summed gradient: clip, Adam, EMA, identical on
//     every replica.
//
// The single-process [Train] does the same with one worker owning every
// shard.
type Phase struct {
	ID    PhaseID
	Chain *Chain
	// Frozen is the mean of the other direction that the cache is simulated
	// with: F_{n-1} (or the reference) for a backward phase, B_n for a
	// forward phase.
	Frozen Mean
	Net    Trainable
	Adam   *nn.Adam
	// EMA is nil when Hyper.EMADecay is 0.
	EMA   *nn.EMA
	Hyper Hyper
}

// NewPhase sets up training net for phase id with a fresh Adam and an EMA
// whose shadow starts at ema (or at the net's weights when ema is nil).
func NewPhase(chain *Chain, id PhaseID, frozen Mean, net Trainable, h Hyper, ema []float32) (*Phase, error) {
	if err := id.validate(); err != nil {
		return nil, err
	}
	if err := chain.Validate(); err != nil {
		return nil, fmt.Errorf("phase %v: %w", id, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("phase %v: %w", id, err)
	}
	if net == nil {
		return nil, fmt.Errorf("phase %v: no network", id)
	}
	if want := opposite(id.Dir); frozen == nil || frozen.Direction() != want {
		return nil, fmt.Errorf("phase %v: simulating needs the frozen %s mean", id, want)
	}
	p := &Phase{ID: id, Chain: chain, Frozen: frozen, Net: net, Hyper: h,
		Adam: nn.NewAdam(len(net.Params()), h.LR)}
	if h.EMADecay > 0 {
		if ema == nil {
			ema = net.Params()
		}
		if len(ema) != len(net.Params()) {
			return nil, fmt.Errorf("phase %v: EMA has %d values, net %d", id, len(ema), len(net.Params()))
		}
		p.EMA = nn.NewEMA(ema, h.EMADecay)
	}
	return p, nil
}

// SimulateShard builds shard `shard` of generation gen with the frozen mean.
func (p *Phase) SimulateShard(gen uint64, shard int) (*Shard, error) {
	return p.Chain.SimulateShard(p.Frozen, p.ID, gen, shard)
}

// LocalGrad computes this worker's part of step `step`: the rows of the
// global minibatch that come from the given shards. It leaves
// Weight * (gradient of the mean loss over those rows) in Net.Grads() and
// returns Weight * that mean loss, with Weight = rows/B. Summing both over
// workers that together own every shard gives the global minibatch's mean
// loss and gradient, whatever the split. With no shards the gradient is 0.
func (p *Phase) LocalGrad(step int, shards []*Shard) (loss float64, err error) {
	return p.LocalGradTo(step, shards, p.Net.Grads())
}

// LocalGradTo is LocalGrad with the gradient written into grads
// (len(Net.Params()) values, overwritten) instead of Net.Grads().
func (p *Phase) LocalGradTo(step int, shards []*Shard, grads []float32) (loss float64, err error) {
	if len(shards) == 0 {
		clear(grads)
		return 0, nil
	}
	b, err := p.Chain.MakeBatch(p.ID, step, shards)
	if err != nil {
		return 0, err
	}
	l, err := p.Net.LossGradTo(b.T, b.X, b.Target, p.Chain.Weight(b), grads)
	if err != nil {
		return 0, fmt.Errorf("%v step %d: loss: %w", p.ID, step, err)
	}
	return l, nil
}

// Apply takes one optimiser step with the global (summed) gradient grads:
// clip, Adam, EMA. grads may be Net.Grads() itself; it is clipped in place.
// It returns the gradient norm before clipping.
func (p *Phase) Apply(grads []float32) (gradNorm float64, err error) {
	params := p.Net.Params()
	if len(grads) != len(params) {
		return 0, fmt.Errorf("%v: gradient has %d values, net %d", p.ID, len(grads), len(params))
	}
	norm := nn.ClipGradNorm(grads, p.Hyper.GradClip)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, fmt.Errorf("%v: gradient norm is %v", p.ID, norm)
	}
	p.Adam.LR = p.Hyper.RateAt(p.Adam.T)
	p.Adam.Step(params, grads)
	if p.EMA != nil {
		p.EMA.Decay = emaDecay(p.Hyper.EMADecay, p.Adam.T)
		p.EMA.Update(params)
	}
	return norm, nil
}

// Weights returns the weights that the trained mean should use once the
// phase is over: the EMA shadow when useEMA and an EMA is kept, else the live
// parameters. The slice is the phase's own; copy it before training on.
func (p *Phase) Weights(useEMA bool) []float32 {
	if useEMA && p.EMA != nil {
		return p.EMA.Shadow
	}
	return p.Net.Params()
}

// emaDecay is the warmed-up decay at 1-based step t.
func emaDecay(decay float64, t int64) float64 {
	return min(decay, float64(1+t)/float64(10+t))
}
