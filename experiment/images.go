package experiment

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/storage"
)

// ImageFigures score generated images with a classifier of the data's
// domain (for transfer, the target's): a Fréchet distance in its
// penultimate features against the test split, beside the same distance
// between two disjoint halves of the test split (the floor), and the
// histogram of the labels it gives.
type ImageFigures struct {
	Samples int `json:"samples"`
	// ClassifierAccuracy is the classifier's accuracy on the whole test split.
	ClassifierAccuracy float64 `json:"classifier_test_accuracy"`
	Frechet            float64 `json:"frechet"`
	FrechetFloor       float64 `json:"frechet_floor"`
	FrechetRatio       float64 `json:"frechet_ratio"`
	// Classes are the data's labels, ClassShares the share of samples the
	// classifier puts in each.
	Classes       []int     `json:"classes"`
	ClassShares   []float64 `json:"class_shares"`
	MinClassShare float64   `json:"min_class_share"`
	ClassEntropy  float64   `json:"class_entropy"` // over log(number of classes)
}

// classifierTraining is how every image classifier is trained: a property
// of the dataset, not of a run, so runs share one cached file.
var classifierTraining = eval.ClassifierTraining{Seed: 1, Epochs: 2, Batch: 64, LR: 2e-3}

// classifierVersion changes whenever the network or its training changes,
// so that an old cached file is not taken for a new one.
const classifierVersion = "lenet-16-32-128/v1"

// CacheDirEnv names the folder classifiers are cached in; the user cache
// folder's sbtrain/ when unset.
const CacheDirEnv = "SBTRAIN_CACHE"

func cacheDir() (string, error) {
	if d := os.Getenv(CacheDirEnv); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("classifier cache: no user cache folder (set %s): %w", CacheDirEnv, err)
	}
	return filepath.Join(d, "sbtrain"), nil
}

// imageEval is what scoring images against a dataset needs, computed once.
type imageEval struct {
	data       *dataset.Images
	classifier *eval.Classifier
	accuracy   float64
	reference  eval.Cloud // features of test images 0, 2, 4, ...
	floor      float64
	n          int // samples the floor was measured with
}

// classifiers holds the trained classifiers of this process by file name,
// so that each is loaded or trained once.
var (
	classifiersMu sync.Mutex
	classifiers   = map[string]*classifierEntry{}
)

type classifierEntry struct {
	once sync.Once
	c    *eval.Classifier
	acc  float64
	err  error
}

// Classifier returns the classifier of an image dataset: loaded from the
// cache, or trained on the training split (and cached) the first time.
// The accuracy is on the whole test split.
func Classifier(ctx context.Context, m *dataset.Images) (*eval.Classifier, float64, error) {
	if !m.Labeled() {
		return nil, 0, fmt.Errorf("classifier: %s has no labels", m.Source())
	}
	dir, err := cacheDir()
	if err != nil {
		return nil, 0, err
	}
	path := filepath.Join(dir, "classifier-"+m.Name()+"-"+datasetDigest(m)+".safetensors")
	classifiersMu.Lock()
	e, ok := classifiers[path]
	if !ok {
		e = &classifierEntry{}
		classifiers[path] = e
	}
	classifiersMu.Unlock()
	e.once.Do(func() { e.c, e.acc, e.err = loadOrTrainClassifier(ctx, m, path) })
	if e.err != nil {
		classifiersMu.Lock()
		delete(classifiers, path)
		classifiersMu.Unlock()
	}
	return e.c, e.acc, e.err
}

// datasetDigest identifies a dataset's images and labels (both splits) and
// the classifier recipe.
func datasetDigest(m *dataset.Images) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s %v %+v\n", classifierVersion, m.Shape(), classifierTraining)
	for _, split := range []*dataset.Images{m, m.Test()} {
		buf := make([]byte, 4*split.Dim())
		for i := range split.Len() {
			for j, v := range split.Image(i) {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
			}
			h.Write(buf)
			h.Write([]byte{byte(split.Label(i))})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func labelsOf(m *dataset.Images) []uint8 {
	out := make([]uint8, m.Len())
	for i := range out {
		out[i] = uint8(m.Label(i))
	}
	return out
}

func loadOrTrainClassifier(ctx context.Context, m *dataset.Images, path string) (*eval.Classifier, float64, error) {
	if b, err := os.ReadFile(path); err == nil {
		c, acc, err := decodeClassifier(b, m)
		if err == nil {
			return c, acc, nil
		}
		slog.Warn("cached classifier unusable, training a new one", "file", path, "err", err)
	}
	c, err := eval.NewClassifier(m.Shape(), m.NumLabels(), classifierTraining.Seed)
	if err != nil {
		return nil, 0, err
	}
	began := time.Now()
	opts := classifierTraining
	opts.Log = func(epoch int, loss float64) {
		slog.Info("image classifier", "dataset", m.Name(), "epoch", epoch, "of", opts.Epochs, "loss", loss, "elapsed", time.Since(began).Round(time.Second))
	}
	if err := c.Train(ctx, m.Pixels(), labelsOf(m), opts); err != nil {
		return nil, 0, fmt.Errorf("train %s classifier: %w", m.Name(), err)
	}
	acc, err := c.Accuracy(m.Test().Pixels(), labelsOf(m.Test()))
	if err != nil {
		return nil, 0, err
	}
	slog.Info("image classifier trained", "dataset", m.Name(), "test_accuracy", acc, "test_images", m.Test().Len(),
		"took", time.Since(began).Round(time.Second), "cache", path)
	var tensors []storage.Tensor
	for _, p := range c.ClassifierParams() {
		tensors = append(tensors, storage.F32Tensor(p.Name, p.Shape, c.Params()[p.Offset:p.Offset+p.Count]))
	}
	meta := map[string]string{
		metaFormat: formatPT, "sbtrain.classifier": classifierVersion, "sbtrain.dataset": m.Name(),
		"sbtrain.shape":         fmt.Sprint(m.Shape()),
		"sbtrain.labels":        strconv.Itoa(m.NumLabels()),
		"sbtrain.test_accuracy": strconv.FormatFloat(acc, 'g', -1, 64),
	}
	b, err := storage.EncodeSafetensors(tensors, meta)
	if err != nil {
		return nil, 0, fmt.Errorf("encode classifier: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, 0, fmt.Errorf("classifier cache: %w", err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return nil, 0, fmt.Errorf("classifier cache: %w", err)
	}
	return c, acc, nil
}

func decodeClassifier(b []byte, m *dataset.Images) (*eval.Classifier, float64, error) {
	tensors, meta, err := storage.DecodeSafetensors(b)
	if err != nil {
		return nil, 0, err
	}
	if v := meta["sbtrain.classifier"]; v != classifierVersion {
		return nil, 0, fmt.Errorf("classifier version %q, want %q", v, classifierVersion)
	}
	acc, err := strconv.ParseFloat(meta["sbtrain.test_accuracy"], 64)
	if err != nil {
		return nil, 0, fmt.Errorf("metadata sbtrain.test_accuracy: %w", err)
	}
	c, err := eval.LoadClassifierParams(m.Shape(), m.NumLabels(), func(name string) ([]int, []float32, error) {
		t, err := storage.TensorByName(tensors, name)
		if err != nil {
			return nil, nil, err
		}
		v, err := t.Float32s()
		return t.Shape, v, err
	})
	if err != nil {
		return nil, 0, err
	}
	return c, acc, nil
}

// newImageEval readies image scoring against the data's test split with n
// generated samples; nil when the data are not labelled images.
func newImageEval(ctx context.Context, data dataset.Distribution, n int) (*imageEval, error) {
	m, ok := data.(*dataset.Images)
	if !ok || !m.Labeled() || m.Test() == nil {
		return nil, nil
	}
	c, acc, err := Classifier(ctx, m)
	if err != nil {
		return nil, err
	}
	test := m.Test()
	feats, _, err := c.Score(test.Pixels())
	if err != nil {
		return nil, err
	}
	// The halves interleave, so that each holds every class.
	half := test.Len() / 2
	n = min(n, half)
	if n < 2 {
		return nil, fmt.Errorf("image figures: the test split of %s has %d images, too few for a floor", m.Source(), test.Len())
	}
	a, b := make([]float32, 0, n*eval.FeatureDim), make([]float32, 0, n*eval.FeatureDim)
	for i := range n {
		a = append(a, feats[2*i*eval.FeatureDim:(2*i+1)*eval.FeatureDim]...)
		b = append(b, feats[(2*i+1)*eval.FeatureDim:(2*i+2)*eval.FeatureDim]...)
	}
	ie := &imageEval{data: m, classifier: c, accuracy: acc, n: n,
		reference: eval.Cloud{Data: a, Dim: eval.FeatureDim}}
	if ie.floor, err = eval.FrechetDistance(eval.Cloud{Data: b, Dim: eval.FeatureDim}, ie.reference); err != nil {
		return nil, fmt.Errorf("frechet floor: %w", err)
	}
	return ie, nil
}

// score is the image figures of generated rows.
func (ie *imageEval) score(generated []float32) (*ImageFigures, error) {
	feats, pred, err := ie.classifier.Score(generated)
	if err != nil {
		return nil, err
	}
	f := &ImageFigures{Samples: len(pred), ClassifierAccuracy: ie.accuracy, FrechetFloor: ie.floor, Classes: ie.data.Classes()}
	if f.Frechet, err = eval.FrechetDistance(eval.Cloud{Data: feats, Dim: eval.FeatureDim}, ie.reference); err != nil {
		return nil, err
	}
	if ie.floor > 0 {
		f.FrechetRatio = f.Frechet / ie.floor
	}
	f.ClassShares, f.MinClassShare, f.ClassEntropy = eval.ClassHistogram(pred, f.Classes)
	return f, nil
}
