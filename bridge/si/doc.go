// Package si owns the stochastic-interpolant math (Albergo, Boffi and
// Vanden-Eijnden 2023): interpolation paths x_t = a(t) x0 + b(t) x1 + g(t) z,
// worker-count-invariant batch construction, the velocity (b) and denoiser
// (eta) losses with a step-level training API, ODE and SDE samplers, the
// likelihood along the probability-flow ODE, and Gaussian closed forms that
// the tests and the CLI compare learned fields against.
//
// Conventions:
//   - Networks are queried at the physical time t in [0, 1] (a float32
//     input next to x), in training, sampling and likelihood alike.
//   - Training times are U[TMin, 1-TMin] (DefaultTMin = 1e-3): with
//     g = sqrt(c t(1-t)) the target's g'(t) z term diverges at the ends.
//   - The SDE adds its score term -eps eta/g and its noise only on
//     [ScoreTMin, 1-ScoreTMin] (DefaultScoreTMin = 0.02), where g > 0; the
//     steps outside are Euler ODE steps, so eps = 0 is exactly the Euler ODE.
//   - Encoding-decoding is the paper's a = cos^2(pi t) 1_[0,1/2)(t),
//     b = cos^2(pi t) 1_(1/2,1](t), g = sin^2(pi t) (times the gamma scale).
//   - One-sided paths draw x0 from N(0, I) themselves and have g = 0.
//
// Sampling, the likelihood and the velocity error cut their rows into
// fixed chunks (DefaultChunk) that run on a bounded pool of goroutines, one
// per core by default, each with its own fork of the fields ([Forker]):
// chunks never depend on the worker count, so neither do the bytes.
//
// The package does no I/O: progress is reported through callbacks, and every
// random number comes from an rng stream keyed by (seed, purpose, ids...).
package si
