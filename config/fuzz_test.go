package config

import (
	"strings"
	"testing"
)

// FuzzParse: any bytes give a config or an error, never a panic; a config
// that parses can be hashed and encoded, and its encoding parses back to
// the same config.
func FuzzParse(f *testing.F) {
	f.Add(defaultYAML)
	f.Add([]byte(minimalDSB))
	f.Add([]byte(minimalSI + "si: {path: trig, gamma: quad, sampler: sde, train_denoiser: true, epsilon: 0.3}\n"))
	f.Add([]byte(minimalDSB + "dsb: {ou_mean: .nan}\n"))
	f.Add([]byte("method: dsb\ndata: {name: points, path: x.csv}\nprior: {name: gaussian, dim: 3, mean: [1, 2, 3], cov: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz")
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		h := c.Hash()
		again, err := Parse(c.YAML(), "encoded")
		if err != nil {
			t.Fatalf("own encoding does not parse: %v\n%s", err, c.YAML())
		}
		if again.Hash() != h {
			t.Fatalf("encoding changed the config:\n%s", c.YAML())
		}
	})
}
