package config

import (
	"encoding/json"
	"strings"
	"testing"
)

const minimalDSBM = `
method: dsbm
data: {name: gaussian, dim: 5, mean: [-0.1]}
prior: {name: gaussian, dim: 5, mean: [0.1]}
`

func TestDSBMDefaults(t *testing.T) {
	c, err := Parse([]byte(minimalDSBM), "test")
	if err != nil {
		t.Fatal(err)
	}
	want := DSBM{Sigma: 1, FirstCoupling: "ref", Steps: 20, Eps: 1e-3, Iterations: 5,
		CacheSize: 10000, CacheShards: 8, CacheRefresh: 78}
	if c.DSBM != want {
		t.Fatalf("dsbm defaults %+v, want %+v", c.DSBM, want)
	}
	b, err := Parse(c.YAML(), "encoded")
	if err != nil {
		t.Fatalf("re-decode own encoding: %v", err)
	}
	if b.Hash() != c.Hash() {
		t.Fatal("YAML round trip changed the dsbm config")
	}
	b.DSBM.Sigma = 0.5
	if b.Hash() == c.Hash() {
		t.Fatal("changing dsbm.sigma did not change the hash")
	}
}

// The dsbm section stays out of other methods' encodings, so their hashes
// (which checkpoints record) are what they were before DSBM existed.
func TestOtherMethodsDoNotCarryTheDSBMSection(t *testing.T) {
	c, err := Parse([]byte(minimalDSB), "test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(js), "dsbm") || strings.Contains(string(c.YAML()), "dsbm") {
		t.Fatalf("a dsb config encodes a dsbm section:\n%s", js)
	}
}

func TestBadDSBMInputNamesTheField(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"coupling", minimalDSBM + "dsbm: {first_coupling: ot}\n", `dsbm.first_coupling: "ot"`},
		{"zero sigma", minimalDSBM + "dsbm: {sigma: 0}\n", "dsbm.sigma: 0, want > 0"},
		{"negative sigma", minimalDSBM + "dsbm: {sigma: -1}\n", "dsbm.sigma: -1"},
		{"eps", minimalDSBM + "dsbm: {eps: 0.5}\n", "dsbm.eps: 0.5"},
		{"steps", minimalDSBM + "dsbm: {steps: -3}\n", "dsbm.steps: -3"},
		{"iterations", minimalDSBM + "dsbm: {iterations: 5000}\n", "dsbm.iterations: 5000"},
		{"sample steps", minimalDSBM + "dsbm: {sample_steps: -1}\n", "dsbm.sample_steps: -1, want 0.."},
		{"last phase", minimalDSBM + "dsbm: {last_phase: both}\n", `dsbm.last_phase: "both", want forward or backward`},
		{"last phase backward of one iteration", minimalDSBM + "dsbm: {last_phase: backward, iterations: 1}\n", "dsbm.last_phase: backward needs dsbm.iterations >= 2"},
		{"negative warm lr", minimalDSBM + "dsbm: {warm_lr: -0.001}\n", "dsbm.warm_lr: -0.001, want >= 0"},
		{"warm lr without warm start", minimalDSBM + "dsbm: {warm_lr: 0.001, warm_start: false}\n", "dsbm.warm_lr: 0.001 needs dsbm.warm_start: true"},
		{"cache vs shards", minimalDSBM + "dsbm: {cache_size: 1001}\n", "dsbm.cache_size: 1001 is not a multiple"},
		{"batch vs shards", minimalDSBM + "train: {batch: 100}\n", "train.batch: 100 is not a multiple of dsbm.cache_shards"},
		{"unknown field", minimalDSBM + "dsbm: {gamma: 1}\n", "field gamma not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "run.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
