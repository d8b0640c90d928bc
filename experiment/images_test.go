package experiment

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/config"
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
		_, acc, err := Classifier(context.Background(), d.(*dataset.Images))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s classifier: test accuracy %.4f (want >= %.2f)", c.name, acc, c.want)
		if acc < c.want {
			t.Errorf("%s classifier: test accuracy %.4f, want >= %.2f", c.name, acc, c.want)
		}
	}
}

// writeStripes writes an IDX pair of n 8x8 images, two classes: class 0 a
// bright left half, class 1 a bright right half, with per-image grain.
func writeStripes(t *testing.T, dir, prefix string, n int, seed byte) (string, string) {
	t.Helper()
	var pix, labels []byte
	for i := range n {
		l := i % 2
		for y := range 8 {
			for x := range 8 {
				v := byte(30 + (int(seed)+i*13+y*7+x*3)%40)
				if (x < 4) == (l == 0) {
					v += 150
				}
				pix = append(pix, v)
			}
		}
		labels = append(labels, byte(l))
	}
	ip, lp := filepath.Join(dir, prefix+"-images.idx"), filepath.Join(dir, prefix+"-labels.idx")
	idx := func(dims []int, data []byte) []byte {
		b := []byte{0, 0, 8, byte(len(dims))}
		for _, d := range dims {
			b = binary.BigEndian.AppendUint32(b, uint32(d))
		}
		return append(b, data...)
	}
	if err := os.WriteFile(ip, idx([]int{n, 8, 8}, pix), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lp, idx([]int{n}, labels), 0o644); err != nil {
		t.Fatal(err)
	}
	return ip, lp
}

// Image data end to end on tiny budgets: image figures beside the point
// figures, pictures instead of scatter plots, a classifier cached once,
// and transfer's pairs grid.
func TestImageRunsScoreAndDraw(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(CacheDirEnv, cache)
	dir := t.TempDir()
	ip, lp := writeStripes(t, dir, "a", 400, 0)
	bp, bl := writeStripes(t, dir, "b", 400, 17)
	runs := []struct {
		name, yaml string
		pictures   []string
	}{
		{"si", fmt.Sprintf(`
name: tiny-image-si
method: si
data: {name: idx, path: %q, labels: %q}
prior: {name: gaussian, dim: 64}
model: {arch: mlp, hidden: [32]}
train: {batch: 32, lr: 0.002, steps: 30}
si: {path: linear, sampler_steps: 6}
eval: {samples: 64, trajectories: 4}
`, ip, lp), []string{SamplesPlot, TrajectoriesPlot, ChainGIF}},
		{"dsb transfer", fmt.Sprintf(`
name: tiny-image-dsb
method: dsb
data: {name: idx, path: %q, labels: %q, classes: [1]}
prior: {name: idx, path: %q, labels: %q, classes: [0]}
model: {arch: mlp, hidden: [32]}
train: {batch: 32, lr: 0.002, steps: 10}
dsb: {steps: 4, gamma_min: 0.05, reference: brownian, iterations: 1, cache_size: 64, cache_shards: 2, cache_refresh: 10}
eval: {samples: 40, trajectories: 4}
`, ip, lp, bp, bl), []string{SamplesPlot, TrajectoriesPlot, ChainGIF, PairsPlot}},
	}
	for _, run := range runs {
		t.Run(run.name, func(t *testing.T) {
			setup, out := trainYAML(t, run.name, run.yaml, nil)
			f := out.Metrics.Final.Image
			if f == nil {
				t.Fatal("no image figures")
			}
			if !(f.FrechetFloor > 0) || !(f.Frechet > 0) || f.FrechetRatio != f.Frechet/f.FrechetFloor || f.Samples != setup.Config.Eval.Samples {
				t.Fatalf("frechet figures %+v", f)
			}
			if f.ClassifierAccuracy < 0.95 {
				t.Fatalf("classifier accuracy %v on two plain classes", f.ClassifierAccuracy)
			}
			var sum float64
			for _, s := range f.ClassShares {
				sum += s
			}
			if len(f.Classes) != len(f.ClassShares) || sum > 1+1e-9 || f.MinClassShare > 1 || f.ClassEntropy < 0 || f.ClassEntropy > 1+1e-9 {
				t.Fatalf("class histogram %+v", f)
			}
			outDir := t.TempDir()
			if err := out.Write(outDir); err != nil {
				t.Fatal(err)
			}
			for _, p := range run.pictures {
				if st, err := os.Stat(filepath.Join(outDir, p)); err != nil || st.Size() == 0 {
					t.Errorf("picture %s missing: %v", p, err)
				}
			}
		})
	}
	files, err := filepath.Glob(filepath.Join(cache, "classifier-idx-*.safetensors"))
	if err != nil || len(files) != 2 {
		t.Fatalf("cached classifiers %v (%v), want one for each of the two class filters", files, err)
	}
	// A cached file is loaded, not trained again: a fresh process (the
	// in-memory table cleared) gives the same weights.
	d, err := dataset.New(dataset.Spec{Name: "idx", Path: ip, Labels: lp})
	if err != nil {
		t.Fatal(err)
	}
	a, acc, err := Classifier(context.Background(), d.(*dataset.Images))
	if err != nil {
		t.Fatal(err)
	}
	classifiersMu.Lock()
	clear(classifiers)
	classifiersMu.Unlock()
	b, acc2, err := Classifier(context.Background(), d.(*dataset.Images))
	if err != nil || a == b || acc != acc2 || !slices.Equal(a.Params(), b.Params()) {
		t.Fatalf("reloaded classifier differs (err %v, accuracy %v vs %v)", err, acc, acc2)
	}
}

func TestImagePriorOfAnotherShape(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeStripes(t, dir, "a", 100, 0)
	for _, c := range []struct{ prior, want string }{
		{fmt.Sprintf("{name: idx, path: %q, labels: %q, downscale: 2}", ip, lp), "prior: idx images are [1 4 4]"},
		{"{name: gaussian, dim: 49}", "set prior.dim to 64"},
	} {
		cfg, err := config.Parse([]byte(fmt.Sprintf(`
name: bad-prior
method: si
data: {name: idx, path: %q, labels: %q}
prior: %s
model: {arch: mlp, hidden: [8]}
train: {batch: 8, lr: 0.001, steps: 1}
si: {path: linear}
eval: {samples: 8}
`, ip, lp, c.prior)), "bad prior")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Prepare(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("prior %s: %v, want an error saying %q", c.prior, err, c.want)
		}
	}
}
