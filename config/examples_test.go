package config

import (
	"path/filepath"
	"testing"
)

// Every published example must load, so that `make results` cannot fail
// on a config typo after minutes of training the ones before it.
func TestExamplesLoad(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no examples found")
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
