// Package dsbm owns Diffusion Schrödinger Bridge Matching (Shi, De Bortoli,
// Campbell and Doucet 2023): iterative Markovian fitting (IMF) with a
// Brownian reference of scale sigma on [0, 1], the coupling cache of endpoint
// pairs cut into virtual shards, the bridge-matching minibatch and gradient
// contract that a distributed trainer drives, a single-process training loop
// built on it, Euler-Maruyama sampling both ways, and the closed-form drifts
// of Gaussian couplings that the tests hold the sampler to.
//
// Conventions (DESIGN.md §3 "DSBM"):
//
//   - Time is physical, t in [0, 1]; data sits at t = 0, the prior at t = 1.
//     A network is queried at the float32 time next to x, in training,
//     cache simulation and sampling alike.
//   - Given a pair (x0, x1), the bridge point is x_t = (1-t) x0 + t x1 +
//     sigma sqrt(t(1-t)) z with t ~ U[Eps, 1-Eps] and z ~ N(0, I). The
//     forward drift v_f(t, x_t) regresses (x1 - x_t)/(1-t), the backward
//     drift v_b(t, x_t) regresses (x0 - x_t)/t ([BridgePoint]); the loss is
//     the batch mean of the squared norm summed over coordinates.
//   - Sampling runs N Euler-Maruyama steps of dt = 1/N: forward from t = 0
//     at times i/N, backward from t = 1 at times 1 - i/N, each
//     x <- x + v(t, x) dt + sigma sqrt(dt) Z ([Chain.Sample]).
//   - Phases are those of package dsb ([dsb.PhaseID]): iteration n is a
//     backward phase, then a forward phase, with random-stream key
//     2(n-1)+dir; under [Options.EndOnBackward] the last iteration has
//     no forward phase. Backward phase 1 trains on the first coupling, `ref`
//     (x1 = x0 + sigma Z) or `ind` (independent draws); backward phase n > 1
//     on (data x0, x1 simulated forward with v_f of phase n-1); forward
//     phase n on (x0 simulated backward with v_b of phase n, prior x1).
//     [Options.Phases], [Result.OpenPhase] and [Result.ClosePhase] are the
//     one place this sequencing (and warm starts) lives; [Train] and
//     package method's DSBM both go through them.
//
// Cache and minibatches: a cache generation of M endpoint pairs is cut into
// S virtual shards ([Chain.SimulateShard]); step s of a phase uses
// generation s/R and takes B/S samples from every shard ([Chain.MakeBatch]).
// A worker owning some shards computes Weight = localB/B times its mean
// loss gradient ([Phase.LocalGrad]); the sum over workers is the global
// minibatch gradient, which every replica applies with [Phase.Apply].
// [Train] is this loop with one worker owning every shard.
//
// Parallelism: the shards of a generation and the fixed row chunks of
// [Chain.Sample] run on a bounded pool of goroutines (internal/par), each
// with its own evaluator of the frozen network; a piece of work is a shard
// or a chunk, never a share of the workers, so the bytes do not depend on
// the worker count.
//
// Randomness is counter-based (package rng): a pair's start, its simulation
// noise and a minibatch sample's pair, time and z depend only on the run
// seed, the phase, the cache generation or step, and the global index. The
// package does no I/O: progress goes through callbacks.
package dsbm
