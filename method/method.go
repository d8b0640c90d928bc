// Package method owns what a training method is to the programs that drive
// it: the list of phases, and a step-by-step state (open a phase, build
// its cache shards, compute the weighted local gradient on owned shards,
// apply the summed gradient, close the phase, encode and decode, sample).
// The single-process run (experiment.Train) and every replica of a
// distributed run (job.State, driven by trainer) go through this one
// interface, so the sequencing of a method (warm start, fresh seeding,
// which frozen network a phase simulates with) is written once, in the
// method's implementation. It also owns the sampling models the methods
// make (Model, DSBModel, SIModel, DSBMModel).
//
// # Implementing a method
//
// A method is a [Method] (what the config fixes: phases, steps, batch,
// virtual shards, how a cache shard is stored) whose Start returns a
// [State]. Drivers call, for phase p = 0, 1, ... in order:
//
//  1. State.Open(p) before the phase's first step (never after Decode
//     restored a position inside p: Decode opens the phase itself).
//  2. For each step s: when State.Cache() is not nil, the shards of
//     generation Cache.Gen(s) that the replica owns, built with
//     Cache.Builders (through a [ShardSource], so a stored shard is loaded
//     rather than simulated again); then the step's sum over replicas,
//     [ShardSum.Step], which calls State.Gradient(s, owned, shards, buf)
//     once per owned shard and sums the shares in fixed point, so the sum
//     has the same bits however the shards are split; then
//     State.Apply(s, sum).
//  3. State.Close() after the last step; when Phases()[p].Evaluate is set,
//     the driver evaluates State.Model(p+1), the model of the networks
//     finished so far, as the figures of iteration Phases()[p].Iteration.
//
// The contract that makes runs reproducible:
//
//   - Everything a state computes is a pure function of the config, the
//     position and the owned shards: the random streams are counters keyed
//     by (seed, phase, step or generation, global sample), never by rank.
//   - Gradient overwrites buf[:GradLen()] with the weighted gradient of
//     its rows and the LossSlots after it with the weighted losses,
//     each scaled by rows/Batch, so the sum of the shares of every shard
//     is the global batch's gradient and loss. A share of one shard has a
//     fixed shape and is computed the same way wherever it is.
//   - A shard built by a Builder has the same bytes whoever builds it and
//     whenever; builders may run on several goroutines at once, one per
//     builder, while the state trains (the single-process driver builds the
//     next generation in the background).
//   - Encode writes every tensor the state needs under names that stay
//     stable across versions (a checkpoint must keep loading), and
//     Decode(Encode(s)) continues exactly as s would have.
//
// A new method adds an implementation here, a case in
// experiment.Setup.Method that builds it from the config, and whatever
// figures experiment.Evaluator computes for its Model; no driver changes.
package method

import (
	"context"

	"github.com/sbtrain/sbtrain/storage"
)

// Phase describes one phase of a run.
type Phase struct {
	// Name is for people: "ipf 2 backward", "interpolant".
	Name string
	// Direction is what storage records: storage.DirectionBackward,
	// DirectionForward or DirectionSI.
	Direction string
	// Iteration is the 1-based IPF (or IMF) iteration the phase belongs
	// to; 0 for a method without iterations.
	Iteration int
	// Evaluate marks the phase that ends an iteration: the run's
	// per-iteration figures are taken after it.
	Evaluate bool
}

// Method is a run's training method with everything its config fixes.
type Method interface {
	// Name is the config's method: "dsb", "si", "dsbm".
	Name() string
	// Phases is the run's phases in training order.
	Phases() []Phase
	// StepsPerPhase is the number of optimiser steps of every phase.
	StepsPerPhase() int64
	// Batch is the global batch size.
	Batch() int
	// Shards is the number of virtual shards a global batch is cut into.
	Shards() int
	// Start is the state at the beginning of the run, networks from the
	// run seed.
	Start() (State, error)
	// EncodeShard turns a cache shard into the tensors and metadata that
	// storage.PutShard writes; DecodeShard is its inverse, and checks the
	// shard is the one this run would build under key.
	EncodeShard(sh Shard) ([]storage.Tensor, map[string]string, error)
	DecodeShard(key ShardKey, ts []storage.Tensor, meta map[string]string) (Shard, error)
}

// LossSlots trail the gradient in the buffer a replica all-reduces, so one
// collective sums both: a method uses one or both (DSB the first; SI the
// velocity and denoiser losses). The step's loss is their sum.
const LossSlots = 2

// State is one replica's training state of a method, driven as the
// package comment says. Positions are (phase, step): step optimiser steps
// of phase are applied.
type State interface {
	// Open prepares phase p (its networks, frozen and trained) from the
	// phases closed before it.
	Open(p int) error
	// Cache is the open phase's cache, nil when the method trains on fresh
	// batches.
	Cache() Cache
	// GradLen is the length of the gradient, without the loss slots.
	GradLen() int
	// Gradient writes this replica's share of step s, from the owned
	// virtual shards (shards[i] is shard owned[i] of generation
	// Cache().Gen(s), or nil without a cache), into buf, of length
	// GradLen()+LossSlots: every value of it, whatever buf held (the
	// shard-by-shard sum hands it reused buffers and clearing them cost a
	// pass over the gradient per shard). Owning nothing gives zeros.
	Gradient(s int64, owned []int, shards []Shard, buf []float32) error
	// Apply takes step s with the summed gradient (identical on every
	// replica; it may be clipped in place).
	Apply(s int64, grad []float32) error
	// Close ends the open phase after its last step.
	Close() error
	// Encode writes the state at position (p, s) into w; Decode restores
	// it into a state fresh from Start. At s > 0 Decode opens phase p.
	Encode(p int, s int64, w *Writer) error
	Decode(p int, s int64, r *Snapshot) error
	// Model is what the networks of the phases before p make, with their
	// sampling weights; an error when none has finished.
	Model(p int) (Model, error)
}

// Shard is one virtual cache shard of a method, of the method's own type
// (*dsb.Shard for DSB); drivers only pass it along.
type Shard any

// ShardKey names one virtual cache shard of one phase.
type ShardKey struct {
	Phase int
	Gen   uint64
	Index int
}

// Cache is the cache of one phase.
type Cache interface {
	// Gen is the cache generation that step s samples from.
	Gen(s int64) uint64
	// Builders returns up to n (at least one) builders of the phase's
	// shards, each for its own goroutine: two builders may run at once,
	// one builder never runs twice at once.
	Builders(n int) []Builder
}

// Builder simulates shard index of generation gen.
type Builder func(gen uint64, index int) (Shard, error)

// ShardSource hands out cache shards. A trainer keeps the ones it uses in
// memory, loads the ones another replica stored, and otherwise calls build
// and stores the result. Calls for the shards of one step come from
// several goroutines but never overlap, except that while one call's build
// runs another call may proceed: a source must not hold state across its
// own build call that another call changes.
type ShardSource interface {
	Shard(ctx context.Context, key ShardKey, build func() (Shard, error)) (Shard, error)
}
