package eval

import (
	"context"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/rng"
)

// The backward pass against central differences of the loss in float64
// terms: every tensor, a handful of coordinates each.
func TestClassifierGradient(t *testing.T) {
	m, err := NewClassifier([3]int{2, 8, 4}, 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	nb := 3
	s := rng.New(1, rng.PurposeBench)
	images := make([]float32, nb*m.shape[0]*m.shape[1]*m.shape[2])
	for i := range images {
		images[i] = float32(s.Norm())
	}
	labels := []uint8{0, 2, 1}
	wk := m.work(nb, true)
	m.lossGrad(wk, images, labels)
	grads := slices.Clone(wk.grads)
	loss := func() float64 { return m.lossGrad(m.work(nb, true), images, labels) }
	for _, p := range m.info {
		for _, j := range []int{0, p.Count / 2, p.Count - 1} {
			i := p.Offset + j
			saved := m.params[i]
			const h = 1e-3
			m.params[i] = saved + h
			up := loss()
			m.params[i] = saved - h
			down := loss()
			m.params[i] = saved
			fd := (up - down) / (2 * h)
			if g := float64(grads[i]); math.Abs(g-fd) > 2e-3+0.05*math.Abs(fd) {
				t.Errorf("%s[%d]: backward %v, central difference %v", p.Name, j, g, fd)
			}
		}
	}
}

func TestClassifierBadInput(t *testing.T) {
	if _, err := NewClassifier([3]int{1, 3, 14}, 10, 1); err == nil {
		t.Error("accepted images 3 pixels high")
	}
	m, err := NewClassifier([3]int{1, 4, 4}, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Train(context.Background(), make([]float32, 16*4), []uint8{0, 1, 2, 0}, ClassifierTraining{Epochs: 1, Batch: 2, LR: 1e-3}); err == nil {
		t.Error("accepted label 2 for 2 outputs")
	}
	if _, _, err := m.Score(make([]float32, 17)); err == nil {
		t.Error("scored 17 values as 4x4 images")
	}
}

// mnistSubset is the first n training and test images of MNIST's classes,
// downscaled to 14x14; the test is skipped where MNIST is not fetched.
func mnistSubset(t *testing.T, name string, classes []int) *dataset.Images {
	t.Helper()
	d, err := dataset.New(dataset.Spec{Name: name, Classes: classes, Downscale: 2})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return d.(*dataset.Images)
}

func imagesOf(m *dataset.Images, n int) ([]float32, []uint8) {
	n = min(n, m.Len())
	labels := make([]uint8, n)
	for i := range labels {
		labels[i] = uint8(m.Label(i))
	}
	return m.Pixels()[:n*m.Dim()], labels
}

// A few hundred steps on 14x14 digits already separate four classes, and
// the same seed gives the same weights.
func TestClassifierLearnsDigits(t *testing.T) {
	m := mnistSubset(t, "mnist", []int{0, 1, 2, 3})
	x, y := imagesOf(m, 3000)
	tx, ty := imagesOf(m.Test(), 1000)
	train := func() *Classifier {
		c, err := NewClassifier(m.Shape(), 4, 5)
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := c.Train(context.Background(), x, y, ClassifierTraining{Seed: 3, Epochs: 1, Batch: 32, LR: 2e-3}); err != nil {
			t.Fatal(err)
		}
		t.Logf("trained on %d images in %v", len(y), time.Since(began))
		return c
	}
	a := train()
	acc, err := a.Accuracy(tx, ty)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy %.4f on %d images", acc, len(ty))
	if acc < 0.95 {
		t.Fatalf("test accuracy %.4f, want >= 0.95", acc)
	}
	if b := train(); !slices.Equal(a.Params(), b.Params()) {
		t.Fatal("two trainings from one seed differ")
	}
}

func TestClassifierTrainStops(t *testing.T) {
	m, err := NewClassifier([3]int{1, 4, 4}, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = m.Train(ctx, make([]float32, 16*8), make([]uint8, 8), ClassifierTraining{Epochs: 1, Batch: 2, LR: 1e-3})
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("Train on a cancelled context: %v", err)
	}
}
