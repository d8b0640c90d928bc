package dsbm

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/nn"
)

// Trainable is what a phase needs of the network it trains; *nn.Net
// satisfies it. LossGrad returns (1/B) sum_b |net(t_b, x_b) - target_b|^2,
// the batch mean of the squared norm summed over coordinates, and leaves
// its gradient in Grads().
type Trainable = dsb.Trainable

// Hyper are the optimiser settings of a phase, as in package dsb.
type Hyper = dsb.Hyper

// Phase is one IMF phase driven step by step. A distributed trainer runs,
// on every replica, for each step s:
//
//  1. when s is the first step or s%Refresh == 0: make (or load) the shards
//     it owns of generation Chain.GenForStep(s) with [Phase.SimulateShards];
//  2. [Phase.LocalGrad](s, owned shards): the weighted local loss, and the
//     weighted local gradient in Net.Grads();
//  3. all-reduce (sum) Net.Grads() and the loss over workers;
//  4. [Phase.Apply] with the summed gradient: clip, Adam, EMA, identical on
//     every replica.
type Phase struct {
	ID    PhaseID
	Chain *Chain
	// Frozen is the drift the cache is simulated with ([Frozen] says of
	// which phase); nil for backward phase 1.
	Frozen Model
	Net    Trainable
	Adam   *nn.Adam
	// EMA is nil when Hyper.EMADecay is 0.
	EMA   *nn.EMA
	Hyper Hyper
}

// NewPhase sets up training net for phase id with a fresh Adam and an EMA
// whose shadow starts at ema (or at the net's weights when ema is nil).
func NewPhase(chain *Chain, id PhaseID, frozen Model, net Trainable, h Hyper, ema []float32) (*Phase, error) {
	if err := validPhase(id); err != nil {
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
	if _, needs := Frozen(id); needs != (frozen != nil) {
		if needs {
			return nil, fmt.Errorf("phase %v: simulating needs the frozen %s drift", id, opposite(id.Dir))
		}
		return nil, fmt.Errorf("phase %v: trains on the first coupling, not on a frozen drift", id)
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

// SimulateShard builds shard `shard` of generation gen.
func (p *Phase) SimulateShard(gen uint64, shard int) (*Shard, error) {
	return p.Chain.SimulateShard(p.Frozen, p.ID, gen, shard)
}

// SimulateShards builds the given shards of generation gen on up to
// par.Workers(workers) goroutines; see [Chain.SimulateShards].
func (p *Phase) SimulateShards(ctx context.Context, gen uint64, indices []int, workers int) ([]*Shard, error) {
	return p.Chain.SimulateShards(ctx, p.Frozen, p.ID, gen, indices, workers)
}

// LocalGrad computes this worker's part of step `step`: the rows of the
// global minibatch that come from the given shards. It leaves Weight *
// (gradient of the mean loss over those rows) in Net.Grads() and returns
// Weight * that mean loss, with Weight = rows/B. Summing both over workers
// that together own every shard gives the global minibatch's mean loss and
// gradient, whatever the split. With no shards the gradient is 0.
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
		// The warmed-up decay of package dsb, so a phase trained from
		// scratch forgets its random initialisation within tens of steps.
		p.EMA.Decay = min(p.Hyper.EMADecay, float64(1+p.Adam.T)/float64(10+p.Adam.T))
		p.EMA.Update(params)
	}
	return norm, nil
}

// Weights returns the weights the trained drift uses once the phase is
// over: the EMA shadow when useEMA and an EMA is kept, else the live
// parameters. The slice is the phase's own; copy it before training on.
func (p *Phase) Weights(useEMA bool) []float32 {
	if useEMA && p.EMA != nil {
		return p.EMA.Shadow
	}
	return p.Net.Params()
}
