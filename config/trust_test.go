package config

import (
	"strings"
	"testing"
)

const minimalSI = `
method: si
data: {name: moons}
prior: {name: gaussian, dim: 2}
`

// Inputs that once passed validation and then panicked (NaN/Inf while the
// config was hashed) or ran the process out of memory (huge sizes), and
// names that the store, and so `sbtrain local`, refused. Each must be a
// one-line error naming the field.
func TestTrustBadInputNamesTheField(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"NaN ou_mean", minimalDSB + "dsb: {ou_mean: .nan}\n", "dsb.ou_mean: NaN, want a finite number"},
		{"Inf ou_mean", minimalDSB + "dsb: {ou_mean: .inf}\n", "dsb.ou_mean: +Inf"},
		{"NaN ou_var of a brownian reference", minimalDSB + "dsb: {reference: brownian, ou_var: .nan}\n", "dsb.ou_var: NaN"},
		{"Inf epsilon", minimalSI + "si: {epsilon: .inf}\n", "si.epsilon: +Inf"},
		{"NaN epsilon", minimalSI + "si: {epsilon: .nan}\n", "si.epsilon: NaN"},
		{"NaN in a mean", "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, dim: 2, mean: [0, .nan]}\n", "prior.mean[1]: NaN"},
		{"Inf in a covariance", "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, dim: 2, cov: [[1, 0], [0, -.inf]]}\n", "prior.cov[1][1]: -Inf"},
		{"NaN jitter", "method: dsb\ndata: {name: moons, noise: .nan}\nprior: {name: gaussian, dim: 2}\n", "data.noise: NaN"},
		{"huge eval.samples", minimalDSB + "eval: {samples: 1000000000000}\n", "eval.samples: 1000000000000, want 1..16777216"},
		{"huge cache_size", minimalDSB + "dsb: {cache_size: 400000000000}\n", "dsb.cache_size: 400000000000, want 1..67108864"},
		{"cache of too many pairs", minimalDSB + "dsb: {cache_size: 67108864, steps: 10000}\n", "dsb.cache_size: 67108864 trajectories of dsb.steps 10000"},
		{"huge batch", minimalDSB + "train: {batch: 8000000000}\n", "train.batch: 8000000000"},
		{"huge dsb.steps", minimalDSB + "dsb: {steps: 2000000}\n", "dsb.steps: 2000000"},
		{"huge iterations", minimalDSB + "dsb: {iterations: 1000000}\n", "dsb.iterations: 1000000"},
		{"huge shards", minimalDSB + "dsb: {cache_shards: 1000000000, cache_size: 1000000000}\n", "dsb.cache_shards: 1000000000"},
		{"huge hidden", minimalDSB + "model: {hidden: [100000000]}\n", "model.hidden[0]: 100000000"},
		{"huge dim", "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, dim: 100000000}\n", "prior.dim: 100000000"},
		{"huge trajectories", minimalDSB + "eval: {trajectories: 100000000}\n", "eval.trajectories: 100000000"},
		{"huge likelihood points", minimalSI + "eval: {likelihood_points: 100000000}\n", "eval.likelihood_points: 100000000"},
		{"huge sampler steps", minimalSI + "si: {sampler_steps: 100000000}\n", "si.sampler_steps: 100000000"},
		{"huge probes", minimalSI + "si: {probes: 100000000}\n", "si.probes: 100000000"},
		{"name with a colon", minimalDSB + "name: a:b\n", `name: "a:b": want 1-128 characters`},
		{"name of dots", minimalDSB + "name: ..\n", `name: ".."`},
		{"name with a star", minimalDSB + "name: x*y\n", `name: "x*y"`},
		{"name starting with a dash", minimalDSB + "name: -a\n", `name: "-a"`},
		{"name too long", minimalDSB + "name: " + strings.Repeat("a", 129) + "\n", "name: \"aaaa"},
		{"si path onesided", minimalSI + "si: {path: onesided}\n", `si.path: "onesided", want one of linear, trig, encdec`},
		{"si gamma zero", minimalSI + "si: {gamma: zero}\n", `si.gamma: "zero", want one of sqrt, quad, sin2, none`},
		{"si gamma quadratic", minimalSI + "si: {gamma: quadratic}\n", `si.gamma: "quadratic"`},
		{"one-sided path with noise", minimalSI + "si: {path: one-sided-linear, gamma: sqrt}\n", "si.gamma: \"sqrt\": a one-sided path"},
		{"encdec without noise", minimalSI + "si: {path: encdec, gamma: none}\n", "si.gamma: none: the encdec path"},
		{"sde on a one-sided path", minimalSI + "si: {path: one-sided-trig, sampler: sde, train_denoiser: true}\n", "si.sampler: sde needs a noisy interpolant"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml), "run.yaml")
			if err == nil {
				t.Fatalf("accepted (hash %s), want error containing %q", cfg.Hash(), c.want)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q does not name %q on one line", err, c.want)
			}
		})
	}
}

// The names that bridge/si builds, and the longest run id the store
// takes, stay accepted.
func TestTrustGoodInputStaysAccepted(t *testing.T) {
	cases := []string{
		minimalDSB + "name: A.b_c-9\n",
		minimalDSB + "name: " + strings.Repeat("a", 128) + "\n",
		minimalSI + "si: {path: one-sided-linear}\n",
		minimalSI + "si: {path: one-sided-trig, gamma: none}\n",
		minimalSI + "si: {path: encoding-decoding, gamma: sin2}\n",
		minimalSI + "si: {path: trig, gamma: quad, gamma_scale: 0.5}\n",
		minimalSI + "si: {epsilon: 0.5}\n",
		minimalDSB + "eval: {samples: 16777216}\ndsb: {cache_size: 67108864, steps: 20}\n",
	}
	for _, y := range cases {
		c, err := Parse([]byte(y), "run.yaml")
		if err != nil {
			t.Errorf("%s: %v", y, err)
			continue
		}
		_ = c.Hash()
	}
}
