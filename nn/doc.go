// Package nn owns the networks: small dense networks (t, x) -> R^Dim whose
// parameters and gradients live in flat []float32 arenas, plus Adam, EMA and
// gradient clipping over those arenas. It knows nothing of bridges, storage
// or peers.
//
// The arenas are the single source of truth: every weight and bias is a
// sub-slice of Params(), LossGrad writes Grads() in place, and neither is
// ever reallocated, so an all-reduce, an optimiser or a checkpoint loader
// can work on them directly.
//
// Networks are defined twice. Graph writes each one as a gorgonia
// expression graph, differentiated symbolically by gorgonia.Grad and run by
// its tape machine, with weight tensors backed by the same arena: that is
// the reference definition. Net's fused passes, written out layer by layer
// over the arenas and a per-network workspace with matrix products through
// the BLAS that gorgonia is configured with (gonum's pure-Go kernels by
// default, OpenBLAS with the openblas build tag, see BLAS), are what
// training uses. Tests prove the two equal within float32 tolerance:
// outputs, loss, every gradient coordinate and the VJP, for both
// architectures and every activation. The fused passes allocate nothing in
// steady state and take any batch size, cutting large batches into chunks;
// the tape machine re-allocates every intermediate on each run (7 MB per
// dsb2d step at batch 512) and a graph has one fixed batch size. Measured
// on one core (BenchmarkDSB2DStep against BenchmarkGraphDSB2DStep, dsb2d,
// batch 512, gradient plus Adam step, median CPU time per step): the fused
// step is about 3.5 times faster with OpenBLAS (1.5 ms against 5.4 ms) and
// 1.5 times faster with the pure-Go BLAS (7.1 ms against 10.6 ms).
//
// A Net is not safe for concurrent use, since it owns its workspace;
// Evaluator gives another Net that reads the same parameter arena with a
// workspace of its own, for one goroutine each. SetBLASThreads and
// BLASThreads set and read OpenBLAS's own thread count (always 1 with the
// pure-Go BLAS), which callers running their own goroutines turn down to 1.
package nn
