package experiment

import (
	"os"
	"testing"

	"github.com/sbtrain/sbtrain/dataset"
)

// FullClassifiersEnv turns on TestFullClassifiers, which trains (or loads
// from the cache) the MNIST and Fashion-MNIST classifiers at 28x28: a few
// CPU minutes each the first time.
const fullClassifiersEnv = "SBTRAIN_FULL_CLASSIFIERS"

func TestFullClassifiers(t *testing.T) {
	if os.Getenv(fullClassifiersEnv) == "" {
		t.Skipf("set %s=1 to train the full classifiers", fullClassifiersEnv)
	}
	for _, c := range []struct {
		name string
		want float64
	}{{"mnist", 0.98}, {"fashion-mnist", 0.88}} {
		d, err := dataset.New(dataset.Spec{Name: c.name})
		if err != nil {
			t.Fatal(err)
		}
		_, acc, err := Classifier(d.(*dataset.Images))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s classifier: test accuracy %.4f (want >= %.2f)", c.name, acc, c.want)
		if acc < c.want {
			t.Errorf("%s classifier: test accuracy %.4f, want >= %.2f", c.name, acc, c.want)
		}
	}
}
