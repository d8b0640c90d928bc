// Package dataset owns the distributions that a bridge connects: the 2D toy
// distributions of the FFJORD / DSB papers, Gaussians with diagonal or full
// covariance, point clouds read from user files, and image datasets (MNIST
// from the GoMNIST module, Fashion-MNIST from Debian's package, IDX files,
// folders of PNGs), loaded once per process and shared. Every draw is a pure
// function of an rng stream, and Draw keys sample i by (seed, purpose, ids,
// i), so a sample is the same whichever worker draws it and in whatever order.
package dataset

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/sbtrain/sbtrain/rng"
)

// Distribution is something the bridges can draw samples from.
type Distribution interface {
	Dim() int
	Name() string
	// Sample writes one sample, drawn only from s, into dst (len Dim()).
	Sample(s *rng.Stream, dst []float64)
}

// LogDensity is implemented by distributions with a known density
// (Gaussians, checkerboard, 8gaussians, mixture), used by likelihood
// evaluation.
type LogDensity interface {
	LogProb(x []float64) float64
}

// Draw returns samples first..first+n-1, row-major float32, sample i drawn
// from rng.New(seed, purpose, append(ids, i)...): sample i is the same whoever
// draws it and in whatever order. It panics if first or n is negative.
func Draw(d Distribution, seed uint64, purpose rng.Purpose, ids []uint64, first, n int) []float32 {
	if n < 0 {
		panic(fmt.Sprintf("dataset.Draw: n = %d, want >= 0", n))
	}
	out := make([]float32, n*d.Dim())
	DrawInto(out, d, seed, purpose, ids, first)
	return out
}

// DrawInto is Draw writing into dst, whose length must be a multiple of
// d.Dim(); it draws len(dst)/d.Dim() samples starting at index first.
func DrawInto(dst []float32, d Distribution, seed uint64, purpose rng.Purpose, ids []uint64, first int) {
	dim := d.Dim()
	if first < 0 {
		panic(fmt.Sprintf("dataset.Draw: first = %d, want >= 0", first))
	}
	if len(dst)%dim != 0 {
		panic(fmt.Sprintf("dataset.DrawInto: len(dst) = %d is not a multiple of dim %d", len(dst), dim))
	}
	key := make([]uint64, len(ids)+1)
	copy(key, ids)
	buf := make([]float64, dim)
	for i := 0; i < len(dst)/dim; i++ {
		key[len(ids)] = uint64(first + i)
		s := rng.New(seed, purpose, key...)
		d.Sample(&s, buf)
		row := dst[i*dim : (i+1)*dim]
		for j, v := range buf {
			row[j] = float32(v)
		}
	}
}

// Spec is how a config names a distribution. Fields that do not apply to the
// named distribution must be left zero; Validate says which one was set.
type Spec struct {
	Name   string      // one of Names()
	Dim    int         // gaussian: required (>=1); 2D toys: 2 (0 means 2); points: 0 (from the file) or the file's dimension
	Mean   []float64   // gaussian: len 1 (broadcast) or Dim; default 0
	Var    []float64   // gaussian diagonal variance: len 1 (broadcast) or Dim; default 1; must be > 0
	Cov    [][]float64 // gaussian full covariance (Dim x Dim, symmetric positive definite), exclusive with Var
	Noise  float64     // toys: observation noise scale where the toy has one (0 means the toy's default, see Names)
	Scale  float64     // toys: multiply coordinates (0 means 1)
	Path   string      // points: a CSV or .npy file; idx: the images file; png: the folder; mnist, fashion-mnist: optionally the folder of the four standard files
	Jitter float64     // points: Gaussian jitter std added when sampling (0: pick a stored point uniformly)

	// Image datasets (mnist, fashion-mnist, idx, png).
	Labels     string // idx: the labels file
	TestPath   string // idx: the test images file (optional; without it every tenth image is held out)
	TestLabels string // idx: the test labels file, with TestPath
	Classes    []int  // keep only images of these labels (empty: all)
	Downscale  int    // average f x f pixel blocks (2: 28x28 to 14x14); 0 or 1: none
}

// toyInfo describes a 2D toy: its default noise (0 when it has no noise
// parameter) and how it draws one unscaled sample.
type toyInfo struct {
	defaultNoise float64
	sample       func(s *rng.Stream, noise float64, dst []float64)
	// logProb, when set, is the exact log density of the unscaled toy.
	logProb func(x []float64, noise float64) float64
}

var toys = map[string]toyInfo{
	"8gaussians":   {defaultNoise: 0.5, sample: sampleEightGaussians, logProb: logProbEightGaussians},
	"mixture":      {defaultNoise: 0.5, sample: sampleGridMixture, logProb: logProbGridMixture},
	"moons":        {defaultNoise: 0.1, sample: sampleMoons},
	"circles":      {defaultNoise: 0.08, sample: sampleCircles},
	"swissroll":    {defaultNoise: 1.0, sample: sampleSwissRoll},
	"scurve":       {defaultNoise: 0.1, sample: sampleSCurve},
	"checkerboard": {sample: sampleCheckerboard, logProb: logProbCheckerboard},
	"pinwheel":     {sample: samplePinwheel},
	"spirals":      {defaultNoise: 0.1, sample: sampleSpirals},
}

// Names lists the distribution names New accepts, sorted.
func Names() []string {
	names := append([]string{"gaussian", "points"}, imageNames...)
	for name := range toys {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func (s Spec) errorf(format string, args ...any) error {
	return fmt.Errorf("dataset %q: %s", s.Name, fmt.Sprintf(format, args...))
}

// Validate checks the spec without reading any file.
func (s Spec) Validate() error {
	switch s.Name {
	case "":
		return fmt.Errorf("dataset: name is empty, want one of %s", strings.Join(Names(), ", "))
	case "gaussian":
		return s.validateGaussian()
	case "points":
		return s.validatePoints()
	case "mnist", "fashion-mnist", "idx", "png":
		return s.validateImages()
	}
	if _, ok := toys[s.Name]; !ok {
		return fmt.Errorf("dataset: unknown name %q, want one of %s", s.Name, strings.Join(Names(), ", "))
	}
	return s.validateToy()
}

// unused returns an error for the first field that is set but does not apply.
func (s Spec) unused(fields ...string) error {
	for _, f := range fields {
		set := false
		switch f {
		case "dim":
			set = s.Dim != 0
		case "mean":
			set = s.Mean != nil
		case "var":
			set = s.Var != nil
		case "cov":
			set = s.Cov != nil
		case "noise":
			set = s.Noise != 0
		case "scale":
			set = s.Scale != 0
		case "path":
			set = s.Path != ""
		case "jitter":
			set = s.Jitter != 0
		case "image fields":
			set = s.Labels != "" || s.TestPath != "" || s.TestLabels != "" || s.Classes != nil || s.Downscale != 0
		}
		if set {
			return s.errorf("%s is set but does not apply to %s", f, s.Name)
		}
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (s Spec) validateGaussian() error {
	if s.Dim < 1 {
		return s.errorf("dim = %d, want >= 1", s.Dim)
	}
	if err := s.unused("noise", "scale", "path", "jitter", "image fields"); err != nil {
		return err
	}
	if n := len(s.Mean); n != 0 && n != 1 && n != s.Dim {
		return s.errorf("mean has %d entries, want 1 or dim = %d", n, s.Dim)
	}
	for i, v := range s.Mean {
		if !finite(v) {
			return s.errorf("mean[%d] = %v, want a finite number", i, v)
		}
	}
	if s.Var != nil && s.Cov != nil {
		return s.errorf("var and cov are both set, want at most one")
	}
	if n := len(s.Var); n != 0 && n != 1 && n != s.Dim {
		return s.errorf("var has %d entries, want 1 or dim = %d", n, s.Dim)
	}
	for i, v := range s.Var {
		if !(v > 0) || math.IsInf(v, 0) {
			return s.errorf("var[%d] = %v, want > 0", i, v)
		}
	}
	if s.Cov != nil {
		if _, err := choleskyOf(s); err != nil {
			return err
		}
	}
	return nil
}

func (s Spec) validateToy() error {
	if s.Dim != 0 && s.Dim != 2 {
		return s.errorf("dim = %d, want 2 (or 0 for the default 2)", s.Dim)
	}
	if err := s.unused("mean", "var", "cov", "path", "jitter", "image fields"); err != nil {
		return err
	}
	info := toys[s.Name]
	if s.Noise != 0 && info.defaultNoise == 0 {
		return s.errorf("noise = %v, but %s has no noise parameter; leave it 0", s.Noise, s.Name)
	}
	if s.Noise < 0 || !finite(s.Noise) {
		return s.errorf("noise = %v, want >= 0 (0 selects the default %v)", s.Noise, info.defaultNoise)
	}
	if s.Scale < 0 || !finite(s.Scale) {
		return s.errorf("scale = %v, want > 0 (0 selects the default 1)", s.Scale)
	}
	return nil
}

func (s Spec) validatePoints() error {
	if s.Path == "" {
		return s.errorf("path is empty, want a .csv or .npy file")
	}
	if s.Dim < 0 {
		return s.errorf("dim = %d, want >= 1 (or 0 to take it from the file)", s.Dim)
	}
	if err := s.unused("mean", "var", "cov", "noise", "scale", "image fields"); err != nil {
		return err
	}
	if s.Jitter < 0 || !finite(s.Jitter) {
		return s.errorf("jitter = %v, want >= 0", s.Jitter)
	}
	return nil
}

// New builds the distribution a spec names; for "points" it reads the file.
func New(s Spec) (Distribution, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	switch s.Name {
	case "gaussian":
		return newGaussian(s)
	case "points":
		return loadPoints(s)
	case "mnist", "fashion-mnist", "idx", "png":
		return loadImages(s)
	}
	info := toys[s.Name]
	t := toy{name: s.Name, info: info, noise: s.Noise, scale: s.Scale}
	if t.noise == 0 {
		t.noise = info.defaultNoise
	}
	if t.scale == 0 {
		t.scale = 1
	}
	if info.logProb != nil {
		return densityToy{t}, nil
	}
	return t, nil
}
