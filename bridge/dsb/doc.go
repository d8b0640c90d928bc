// Package dsb owns the Diffusion Schrödinger Bridge of De Bortoli et al.
// (2021): iterative proportional fitting (IPF) with mean matching on a
// discrete N-step chain, its trajectory cache cut into virtual shards, the
// per-step minibatch and gradient contract that a distributed trainer drives,
// a single-process training loop built on that contract, and the sampler.
//
// Conventions (DESIGN.md §3 "DSB"):
//
//   - Grid: gammas g_1..g_N (N even, symmetric), T = g_1 + ... + g_N.
//   - Time: a network is always queried at the float time t = k/N of an
//     integer step index k. The forward mean F(k, x) = x + netF(k/N, x) is the
//     mean of X_{k+1} given X_k = x; the backward mean B(k+1, x) =
//     x + netB((k+1)/N, x) is the mean of X_k given X_{k+1} = x. Training,
//     cache simulation and sampling all go through [Schedule.Time], so a net
//     is evaluated at exactly the times it was trained on.
//   - F_0 is the reference chain's mean x + g_{k+1} f(x), with f = 0
//     (Brownian) or f(x) = -(x - mu)/v (Ornstein-Uhlenbeck toward N(mu, v I)).
//   - Backward phase n trains netB on (k+1, X_{k+1}) with target
//     F(k, X_k) - F(k, X_{k+1}), trajectories X_0 ~ data run forward with
//     F_{n-1}. Forward phase n trains netF on (k, X_k) with target
//     B(k+1, X_{k+1}) - B(k+1, X_k), trajectories X_N ~ prior run backward
//     with B_n. The targets are computed once when a cache shard is built.
//
// Cache and minibatches: a cache generation of M trajectories is cut into S
// virtual shards ([Chain.SimulateShard]); step s of a phase uses generation
// s/R and takes B/S samples from every shard ([Chain.MakeBatch]). A worker
// owning some shards computes Weight = localB/B times its mean loss gradient
// ([Phase.LocalGrad]); the sum over workers is the global minibatch gradient,
// which every replica applies with [Phase.Apply]. [Result.OpenPhase] and
// [Result.ClosePhase] sequence the phases (warm start or fresh seeding, the
// frozen mean of each phase) for every driver; [Train] is the loop over
// them with one worker owning all shards.
//
// Parallelism: the shards of a generation ([Chain.SimulateShards]) and the
// fixed row chunks of [SampleContext] run on a bounded pool of goroutines,
// one per core by default, each with its own fork of the frozen mean
// ([Forker]; a network mean forks into an nn evaluator sharing the weights).
// A piece of work is a shard or a chunk, never a share of the workers, so
// the bytes do not depend on the worker count.
//
// Defaults: a finished phase is frozen with its EMA weights whenever an EMA
// is kept (Hyper.EMADecay > 0, as in the official code), else with its live
// weights; the EMA decay warms up as min(decay, (1+t)/(10+t)). [Sample] keeps
// the noise of the last transition unless SampleOptions.Denoise is set.
//
// Randomness is counter-based (package rng), keyed so that a number depends
// only on the run seed, the phase, the cache generation or step, and the
// global item index; never on which process computes it. The package does no
// I/O: progress goes through callbacks.
package dsb
