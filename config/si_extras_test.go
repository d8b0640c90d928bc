package config

import (
	"strings"
	"testing"
)

const siBase = "method: si\ndata: {name: moons}\nprior: {name: gaussian}\n"

func TestSIExtrasNameTheField(t *testing.T) {
	cases := []struct {
		name, si, want string
	}{
		{"negative eps", "{epsilon: -0.5}", "si.epsilon: -0.5"},
		{"nan eps", "{epsilon: .nan}", "si.epsilon: NaN"},
		{"eps schedule", "{eps_schedule: cubic}", `si.eps_schedule: "cubic"`},
		{"field", "{field: grad}", `si.field: "grad"`},
		{"score without network", "{field: score}", "si.field: score is the second network"},
		{"v without score", "{velocity: v, train_denoiser: true}", "si.velocity: v forms b"},
		{"likelihood estimator", "{likelihood_estimator: mcmc}", `si.likelihood_estimator: "mcmc"`},
		{"sde likelihood without score", "{likelihood_estimator: sde}", "si.likelihood_estimator: sde needs the score"},
		{"likelihood paths", "{likelihood_paths: 1}", "si.likelihood_paths: 1"},
		{"rtol", "{rtol: -1}", "si.rtol: -1"},
		{"mirror without noise", "{path: mirror, gamma: none}", "si.gamma: none: the mirror"},
		{"sde-heun without score", "{sampler: sde-heun}", "si.sampler: sde-heun needs the score"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(siBase+"si: "+c.si+"\n"), "run.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := Parse([]byte(siBase+"train: {batch: 511}\nsi: {antithetic: true}\n"), "run.yaml"); err == nil || !strings.Contains(err.Error(), "si.antithetic") {
		t.Errorf("antithetic with an odd batch: %v", err)
	}
	ok := siBase + "si: {train_denoiser: true, field: score, velocity: v, sampler: sde-heun, eps_schedule: gamma2, epsilon: 1, likelihood_estimator: sde, likelihood_paths: 32, antithetic: false, rtol: 1e-6}\n"
	if _, err := Parse([]byte(ok), "run.yaml"); err != nil {
		t.Errorf("a config using every new si field: %v", err)
	}
}

// Configs that leave the new fields out hash as they did before them.
func TestSIExtrasLeaveOldEncodingsAlone(t *testing.T) {
	c, err := Parse([]byte(siBase), "run.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"field", "velocity", "antithetic", "eps_schedule", "rtol", "likelihood_estimator"} {
		if strings.Contains(string(c.YAML()), key+":") {
			t.Errorf("the encoding of a config without si.%s carries it", key)
		}
	}
}
