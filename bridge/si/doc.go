// Package si owns the stochastic-interpolant math (Albergo, Boffi and
// Vanden-Eijnden 2023): interpolation paths x_t = a(t) x0 + b(t) x1 + g(t) z
// (and the mirror x + g z), worker-count-invariant batch construction, the
// velocity (b or v) and denoiser (eta) or score (s) losses with a
// step-level training API, fixed-step and adaptive (Dormand-Prince 5(4))
// ODE samplers, forward and reverse SDEs with a diffusion schedule eps(t)
// (Euler-Maruyama and Heun), the likelihood along the probability-flow ODE
// and the SDE model's Feynman-Kac likelihood, the optimised interpolant of
// the max-min objective, and Gaussian closed forms (velocity, score, W2^2,
// transport cost) that the tests and the CLI compare learned fields against.
//
// Conventions:
//   - Networks are queried at the physical time t in [0, 1] (a float32
//     input next to x), in training, sampling and likelihood alike.
//   - Training times are U[TMin, 1-TMin] (DefaultTMin = 1e-3): with
//     g = sqrt(c t(1-t)) the target's g'(t) z term diverges at the ends.
//   - The SDEs add their score term +-eps(t) s (s = -eta/g, or a score
//     network) and their noise only on [ScoreTMin, 1-ScoreTMin]
//     (DefaultScoreTMin = 0.02), where g > 0: eps(t) is 0 outside, so the
//     steps there are ODE steps (Euler for sde, Heun for sde-heun), the
//     sampler ends on plain drift steps instead of a diverging score, and
//     eps = 0 is exactly the ODE. The gamma and gamma2 schedules
//     (eps proportional to g or g^2) also keep eps s finite inside.
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
