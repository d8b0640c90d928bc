package config

import (
	"slices"
	"testing"
)

func TestDiffFieldsNamesWhatDiffers(t *testing.T) {
	base, err := Parse([]byte(minimalDSB), "a")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"equal", func(*Config) {}, nil},
		{"seed", func(c *Config) { c.Seed++ }, []string{"seed"}},
		{"nested", func(c *Config) { c.Train.LR *= 2 }, []string{"train.lr"}},
		{"two", func(c *Config) { c.Seed++; c.Train.Steps++ }, []string{"seed", "train.steps"}},
		{"optional field set", func(c *Config) { c.Data.Jitter = 0.5 }, []string{"data.jitter"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := Parse([]byte(minimalDSB), "b")
			tc.change(b)
			got := DiffFields(base.FieldDigests(), b.FieldDigests())
			if !slices.Equal(got, tc.want) {
				t.Fatalf("differing fields %v, want %v", got, tc.want)
			}
			if (len(got) == 0) != (base.Hash() == b.Hash()) {
				t.Fatalf("digests and Hash disagree: fields %v, hashes %s %s", got, base.Hash(), b.Hash())
			}
		})
	}
}
