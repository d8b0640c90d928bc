// Package nn owns the networks: small dense networks (t, x) -> R^Dim and
// the image unet (conv 3x3/1x1, GroupNorm, nearest upsampling, skip
// concatenations, time-embedding biases), whose parameters and gradients
// live in flat []float32 arenas, plus Adam, EMA and gradient clipping over
// those arenas. It knows nothing of bridges, storage or peers.
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
// on one core with OpenBLAS's generic kernels, before the elementwise
// kernels below (BenchmarkDSB2DStep against BenchmarkGraphDSB2DStep,
// dsb2d, batch 512, gradient plus Adam step, median CPU time per step): the
// fused step was about 3.5 times faster with OpenBLAS (1.5 ms against 5.4
// ms) and 1.5 times faster with the pure-Go BLAS (7.1 ms against 10.6 ms);
// with the AVX-512 kernels the fused OpenBLAS step takes about 1.2 ms.
//
// The elementwise work between the matrix products runs through the
// package's float32 kernels (kernels.go): exp, sigmoid, SiLU and tanh with
// their gradients, ReLU and LeakyReLU, and the Adam update, as AVX-512 or
// AVX2+FMA assembly on amd64 CPUs that have it and as Go code elsewhere
// (or with the purego build tag). The AVX-512 and AVX2 kernels give the
// same bits, so a cluster may mix the two kinds of machine. Their accuracy
// bounds against float64 math are documented and tested there; the Adam
// kernels give exactly the bits of the scalar float64 update. Forward,
// which never runs backward, takes a SiLU that does not store the sigmoid.
//
// The unet (Arch "unet") has no graph form: its layers are proven one by
// one against gorgonia's Conv2d, GroupNorm, Upsample2D and Concat graphs
// and against float64 finite differences, and the whole network against a
// float64 NCHW reimplementation and finite differences of it. Its tensors
// carry torch's names and shapes in state_dict order, so a torch module of
// the same structure loads them. Inside, activations are channel-last
// (rows = image, y, x). A stride-1 3x3 convolution of images at least 14
// pixels wide gathers, per image, each pixel's three horizontal taps (a
// third of im2col's copying) and makes three GEMMs, one per kernel row,
// over shifted blocks of those rows; the others are an im2col and a GEMM,
// taken in blocks of rows small enough to stay in the core's cache
// between the two. The input gradient of a stride-1 convolution is a
// second convolution with the flipped kernel rather than a col2im
// scatter. Batches are cut into chunks of 8 images, and the non-GEMM work
// is split over goroutines by image, with the same bits at any GOMAXPROCS;
// so are the row-tap GEMMs, one image per product, with the BLAS held to
// one thread for the pass (a BLAS pool spinning between such small
// products cost a core).
// With the openblas tag the package makes OpenBLAS use its AVX-512 or AVX2
// kernels where its CPU detection fell back to the generic Prescott ones,
// whose matrix products are five to nine times slower, on CPU models it
// does not know.
//
// A Net is not safe for concurrent use, since it owns its workspace;
// Evaluator gives another Net that reads the same parameter arena with a
// workspace of its own, for one goroutine each. SetBLASThreads and
// BLASThreads set and read OpenBLAS's own thread count (always 1 with the
// pure-Go BLAS), which callers running their own goroutines turn down to 1.
package nn
