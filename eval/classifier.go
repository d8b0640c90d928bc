package eval

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/sbtrain/sbtrain/rng"
)

// Classifier is a small LeNet-style network that scores images: two 3x3
// convolutions (16 and 32 channels, ReLU, 2x2 max-pooling each), a dense
// layer of FeatureDim ReLU units (the penultimate features the Fréchet
// distance uses) and a dense layer of one logit per label. Inception
// weights cannot be fetched here, so sbtrain trains this one itself,
// deterministically from a seed. Activations are channel-last, so that
// every convolution is one matrix product over im2col rows.
type Classifier struct {
	shape  [3]int // C, H, W of the inputs
	labels int
	params []float32
	info   []ClassifierParam
}

// ClassifierParam names one tensor of the parameter arena.
type ClassifierParam struct {
	Name          string
	Shape         []int
	Offset, Count int
}

// Classifier sizes.
const (
	FeatureDim = 128
	conv1Ch    = 16
	conv2Ch    = 32
)

// Offsets of the tensors in the arena, in ClassifierParams order.
const (
	pConv1W = iota
	pConv1B
	pConv2W
	pConv2B
	pFC1W
	pFC1B
	pFC2W
	pFC2B
)

// NewClassifier lays out a classifier for images of shape [C, H, W] (H and
// W at least 4; pooling drops an odd last row or column) and labels outputs, initialised from seed (He-uniform
// weights, zero biases).
func NewClassifier(shape [3]int, labels int, seed uint64) (*Classifier, error) {
	c, h, w := shape[0], shape[1], shape[2]
	if c < 1 || h < 4 || w < 4 {
		return nil, fmt.Errorf("classifier: images %dx%dx%d, want C >= 1 and H, W >= 4", c, h, w)
	}
	if labels < 2 || labels > 256 {
		return nil, fmt.Errorf("classifier: %d labels, want 2..256", labels)
	}
	flat := (h / 4) * (w / 4) * conv2Ch
	shapes := []struct {
		name  string
		shape []int
	}{
		{"conv1.weight", []int{9 * c, conv1Ch}}, {"conv1.bias", []int{conv1Ch}},
		{"conv2.weight", []int{9 * conv1Ch, conv2Ch}}, {"conv2.bias", []int{conv2Ch}},
		{"fc1.weight", []int{flat, FeatureDim}}, {"fc1.bias", []int{FeatureDim}},
		{"fc2.weight", []int{FeatureDim, labels}}, {"fc2.bias", []int{labels}},
	}
	m := &Classifier{shape: shape, labels: labels}
	off := 0
	for _, s := range shapes {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		m.info = append(m.info, ClassifierParam{Name: s.name, Shape: s.shape, Offset: off, Count: n})
		off += n
	}
	m.params = make([]float32, off)
	for i, p := range m.info {
		if len(p.Shape) != 2 {
			continue
		}
		st := rng.New(seed, rng.PurposeInit, 0xC1A551F1E5, uint64(i))
		bound := math.Sqrt(6 / float64(p.Shape[0])) // fan-in
		for j := range m.p(i) {
			m.p(i)[j] = float32(bound * (2*st.Float64() - 1))
		}
	}
	return m, nil
}

func (m *Classifier) p(i int) []float32 {
	p := m.info[i]
	return m.params[p.Offset : p.Offset+p.Count]
}

// Shape is the input image shape, Labels the number of outputs.
func (m *Classifier) Shape() [3]int { return m.shape }
func (m *Classifier) Labels() int   { return m.labels }

// Params is the flat parameter arena; ClassifierParams names its tensors.
func (m *Classifier) Params() []float32                   { return m.params }
func (m *Classifier) ClassifierParams() []ClassifierParam { return m.info }

// gemm is C = A·B + beta C for row-major A (m x k, or k x m when ta), B
// (k x n, or n x k when tb) and C (m x n).
func gemm(ta, tb bool, m, n, k int, a, b []float32, beta float32, c []float32) {
	tA, tB, lda, ldb := blas.NoTrans, blas.NoTrans, k, n
	if ta {
		tA, lda = blas.Trans, m
	}
	if tb {
		tB, ldb = blas.Trans, k
	}
	blas32.Implementation().Sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, beta, c, n)
}

// im2col3 writes, for each pixel of nb channel-last h x w x c images, its
// 3x3 neighbourhood (zero outside) as one row of 9c values.
func im2col3(col, x []float32, nb, h, w, c int) {
	k := 0
	for b := range nb {
		img := x[b*h*w*c:]
		for y := range h {
			for xx := range w {
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						yy, xc := y+dy, xx+dx
						dst := col[k : k+c]
						k += c
						if yy < 0 || yy >= h || xc < 0 || xc >= w {
							clear(dst)
							continue
						}
						copy(dst, img[(yy*w+xc)*c:(yy*w+xc+1)*c])
					}
				}
			}
		}
	}
}

// col2im3 adds the rows of dcol back onto the pixels they were gathered
// from (the transpose of im2col3).
func col2im3(dx, dcol []float32, nb, h, w, c int) {
	clear(dx[:nb*h*w*c])
	k := 0
	for b := range nb {
		img := dx[b*h*w*c:]
		for y := range h {
			for xx := range w {
				for dy := -1; dy <= 1; dy++ {
					for ddx := -1; ddx <= 1; ddx++ {
						yy, xc := y+dy, xx+ddx
						src := dcol[k : k+c]
						k += c
						if yy < 0 || yy >= h || xc < 0 || xc >= w {
							continue
						}
						dst := img[(yy*w+xc)*c : (yy*w+xc+1)*c]
						for i, v := range src {
							dst[i] += v
						}
					}
				}
			}
		}
	}
}

// biasReLU adds the bias to every row of z (rows x len(bias)) and writes
// max(z, 0) into a; z keeps the pre-activation for the backward pass.
func biasReLU(z, a, bias []float32) {
	n := len(bias)
	for i := 0; i < len(z); i += n {
		for j, b := range bias {
			v := z[i+j] + b
			z[i+j] = v
			a[i+j] = max(v, 0)
		}
	}
}

// pool2 max-pools 2x2 blocks of channel-last images, keeping each
// output's argmax (an index into x) for the backward pass.
func pool2(out, x []float32, arg []int32, nb, h, w, c int) {
	oh, ow := h/2, w/2
	k := 0
	for b := range nb {
		base := b * h * w * c
		for y := range oh {
			for xx := range ow {
				for ch := range c {
					best := int32(base + ((2*y)*w+2*xx)*c + ch)
					for _, d := range [3][2]int{{0, 1}, {1, 0}, {1, 1}} {
						i := int32(base + ((2*y+d[0])*w+2*xx+d[1])*c + ch)
						if x[i] > x[best] {
							best = i
						}
					}
					out[k], arg[k] = x[best], best
					k++
				}
			}
		}
	}
}

// classifierWork is the scratch of one batch size.
type classifierWork struct {
	nb                          int
	x, col1, z1, a1, p1         []float32
	col2, z2, a2, p2, z3, h3, o []float32
	arg1, arg2                  []int32
	// backward
	do, dh, dp2, da2, dcol2, dp1, da1 []float32
	grads                             []float32
}

func (m *Classifier) work(nb int, train bool) *classifierWork {
	c, h, w := m.shape[0], m.shape[1], m.shape[2]
	h2, w2, h4, w4 := h/2, w/2, h/4, w/4
	wk := &classifierWork{nb: nb,
		x: make([]float32, nb*h*w*c), col1: make([]float32, nb*h*w*9*c),
		z1: make([]float32, nb*h*w*conv1Ch), a1: make([]float32, nb*h*w*conv1Ch),
		p1: make([]float32, nb*h2*w2*conv1Ch), arg1: make([]int32, nb*h2*w2*conv1Ch),
		col2: make([]float32, nb*h2*w2*9*conv1Ch),
		z2:   make([]float32, nb*h2*w2*conv2Ch), a2: make([]float32, nb*h2*w2*conv2Ch),
		p2: make([]float32, nb*h4*w4*conv2Ch), arg2: make([]int32, nb*h4*w4*conv2Ch),
		z3: make([]float32, nb*FeatureDim), h3: make([]float32, nb*FeatureDim),
		o: make([]float32, nb*m.labels),
	}
	if train {
		wk.do = make([]float32, nb*m.labels)
		wk.dh = make([]float32, nb*FeatureDim)
		wk.dp2 = make([]float32, len(wk.p2))
		wk.da2 = make([]float32, len(wk.a2))
		wk.dcol2 = make([]float32, len(wk.col2))
		wk.dp1 = make([]float32, len(wk.p1))
		wk.da1 = make([]float32, len(wk.a1))
		wk.grads = make([]float32, len(m.params))
	}
	return wk
}

// forward runs nb images (rows of C*H*W, channel-major as datasets store
// them) through the network; the features are wk.h3, the logits wk.o.
func (m *Classifier) forward(wk *classifierWork, images []float32, nb int) {
	c, h, w := m.shape[0], m.shape[1], m.shape[2]
	hw := h * w
	for b := range nb {
		src, dst := images[b*c*hw:(b+1)*c*hw], wk.x[b*c*hw:]
		for ch := range c {
			for i := range hw {
				dst[i*c+ch] = src[ch*hw+i]
			}
		}
	}
	h2, w2 := h/2, w/2
	rows1, rows2 := nb*hw, nb*h2*w2
	im2col3(wk.col1, wk.x, nb, h, w, c)
	gemm(false, false, rows1, conv1Ch, 9*c, wk.col1[:rows1*9*c], m.p(pConv1W), 0, wk.z1[:rows1*conv1Ch])
	biasReLU(wk.z1[:rows1*conv1Ch], wk.a1, m.p(pConv1B))
	pool2(wk.p1, wk.a1, wk.arg1, nb, h, w, conv1Ch)
	im2col3(wk.col2, wk.p1, nb, h2, w2, conv1Ch)
	gemm(false, false, rows2, conv2Ch, 9*conv1Ch, wk.col2[:rows2*9*conv1Ch], m.p(pConv2W), 0, wk.z2[:rows2*conv2Ch])
	biasReLU(wk.z2[:rows2*conv2Ch], wk.a2, m.p(pConv2B))
	pool2(wk.p2, wk.a2, wk.arg2, nb, h2, w2, conv2Ch)
	flat := len(wk.p2) / wk.nb
	gemm(false, false, nb, FeatureDim, flat, wk.p2[:nb*flat], m.p(pFC1W), 0, wk.z3[:nb*FeatureDim])
	biasReLU(wk.z3[:nb*FeatureDim], wk.h3, m.p(pFC1B))
	copy(wk.o, m.p(pFC2B))
	for b := 1; b < nb; b++ {
		copy(wk.o[b*m.labels:], m.p(pFC2B))
	}
	gemm(false, false, nb, m.labels, FeatureDim, wk.h3[:nb*FeatureDim], m.p(pFC2W), 1, wk.o[:nb*m.labels])
}

// lossGrad is the mean softmax cross-entropy of a full batch and its
// gradient in wk.grads.
func (m *Classifier) lossGrad(wk *classifierWork, images []float32, labels []uint8) float64 {
	nb := wk.nb
	m.forward(wk, images, nb)
	k := m.labels
	var loss float64
	for b := range nb {
		o, d := wk.o[b*k:(b+1)*k], wk.do[b*k:(b+1)*k]
		mx := o[0]
		for _, v := range o {
			mx = max(mx, v)
		}
		var sum float64
		for _, v := range o {
			sum += math.Exp(float64(v - mx))
		}
		for j, v := range o {
			d[j] = float32(math.Exp(float64(v-mx))/sum) / float32(nb)
		}
		l := int(labels[b])
		d[l] -= 1 / float32(nb)
		loss += math.Log(sum) - float64(o[l]-mx)
	}
	g := func(i int) []float32 { p := m.info[i]; return wk.grads[p.Offset : p.Offset+p.Count] }
	colSums := func(dst, x []float32) {
		clear(dst)
		n := len(dst)
		for i := 0; i < len(x); i += n {
			for j := range dst {
				dst[j] += x[i+j]
			}
		}
	}
	reluGrad := func(d, z []float32) {
		for i, v := range z {
			if v <= 0 {
				d[i] = 0
			}
		}
	}
	unpool := func(dx, dout []float32, arg []int32) {
		clear(dx)
		for i, a := range arg {
			dx[a] += dout[i]
		}
	}
	c, h, w := m.shape[0], m.shape[1], m.shape[2]
	h2, w2 := h/2, w/2
	flat := len(wk.p2) / nb
	// fc2
	gemm(true, false, FeatureDim, k, nb, wk.h3, wk.do, 0, g(pFC2W))
	colSums(g(pFC2B), wk.do)
	gemm(false, true, nb, FeatureDim, k, wk.do, m.p(pFC2W), 0, wk.dh)
	reluGrad(wk.dh, wk.z3)
	// fc1
	gemm(true, false, flat, FeatureDim, nb, wk.p2, wk.dh, 0, g(pFC1W))
	colSums(g(pFC1B), wk.dh)
	gemm(false, true, nb, flat, FeatureDim, wk.dh, m.p(pFC1W), 0, wk.dp2)
	// conv2
	unpool(wk.da2, wk.dp2, wk.arg2)
	reluGrad(wk.da2, wk.z2)
	rows2 := nb * h2 * w2
	gemm(true, false, 9*conv1Ch, conv2Ch, rows2, wk.col2, wk.da2, 0, g(pConv2W))
	colSums(g(pConv2B), wk.da2)
	gemm(false, true, rows2, 9*conv1Ch, conv2Ch, wk.da2, m.p(pConv2W), 0, wk.dcol2)
	col2im3(wk.dp1, wk.dcol2, nb, h2, w2, conv1Ch)
	// conv1
	unpool(wk.da1, wk.dp1, wk.arg1)
	reluGrad(wk.da1, wk.z1)
	gemm(true, false, 9*c, conv1Ch, nb*h*w, wk.col1, wk.da1, 0, g(pConv1W))
	colSums(g(pConv1B), wk.da1)
	return loss / float64(nb)
}

// ClassifierTraining is how Train runs.
type ClassifierTraining struct {
	Seed   uint64
	Epochs int     // passes over the training images
	Batch  int     // images per Adam step
	LR     float64 // Adam step size, decayed by cosine to 0 over the run
	// Log, when set, is called after each epoch with its mean loss.
	Log func(epoch int, loss float64)
}

// Train fits the classifier to images (rows of C*H*W) and their labels:
// Adam on the mean cross-entropy, minibatches in an order drawn from the
// seed, so equal inputs give equal weights.
func (m *Classifier) Train(ctx context.Context, images []float32, labels []uint8, o ClassifierTraining) error {
	d := m.shape[0] * m.shape[1] * m.shape[2]
	n := len(labels)
	if len(images) != n*d {
		return fmt.Errorf("classifier train: %d values for %d images of %d pixels", len(images), n, d)
	}
	if o.Epochs < 1 || o.Batch < 1 || !(o.LR > 0) {
		return fmt.Errorf("classifier train: epochs %d, batch %d, lr %v; want all > 0", o.Epochs, o.Batch, o.LR)
	}
	if n < o.Batch {
		return fmt.Errorf("classifier train: %d images, fewer than a batch of %d", n, o.Batch)
	}
	for i, l := range labels {
		if int(l) >= m.labels {
			return fmt.Errorf("classifier train: image %d has label %d, the classifier has %d outputs", i, l, m.labels)
		}
	}
	wk := m.work(o.Batch, true)
	mom, vel := make([]float32, len(m.params)), make([]float32, len(m.params))
	bx, by := make([]float32, o.Batch*d), make([]uint8, o.Batch)
	perBatch := n / o.Batch
	total := o.Epochs * perBatch
	const b1, b2, eps = 0.9, 0.999, 1e-8
	step := 0
	for ep := range o.Epochs {
		perm := make([]int, n)
		for i := range perm {
			perm[i] = i
		}
		st := rng.New(o.Seed, rng.PurposeData, 0xC1A551F1E5, uint64(ep))
		for i := n - 1; i > 0; i-- {
			j := st.Intn(i + 1)
			perm[i], perm[j] = perm[j], perm[i]
		}
		var sum float64
		for bi := range perBatch {
			if bi%64 == 0 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("classifier train: %w", err)
				}
			}
			for j := range o.Batch {
				src := perm[bi*o.Batch+j]
				copy(bx[j*d:(j+1)*d], images[src*d:(src+1)*d])
				by[j] = labels[src]
			}
			sum += m.lossGrad(wk, bx, by)
			step++
			lr := o.LR * 0.5 * (1 + math.Cos(math.Pi*float64(step-1)/float64(total)))
			c1 := 1 - math.Pow(b1, float64(step))
			c2 := 1 - math.Pow(b2, float64(step))
			for i, gr := range wk.grads {
				mom[i] = b1*mom[i] + (1-b1)*gr
				vel[i] = b2*vel[i] + (1-b2)*gr*gr
				mh := float64(mom[i]) / c1
				vh := float64(vel[i]) / c2
				m.params[i] -= float32(lr * mh / (math.Sqrt(vh) + eps))
			}
		}
		if o.Log != nil {
			o.Log(ep+1, sum/float64(perBatch))
		}
	}
	return nil
}

// evalChunk is how many images a scoring pass runs at once.
const evalChunk = 256

// Score runs images (rows of C*H*W) through the network and returns the
// penultimate features (n x FeatureDim) and the predicted labels.
func (m *Classifier) Score(images []float32) (features []float32, predicted []uint8, err error) {
	d := m.shape[0] * m.shape[1] * m.shape[2]
	if len(images)%d != 0 {
		return nil, nil, fmt.Errorf("classifier: %d values are not whole %dx%dx%d images", len(images), m.shape[0], m.shape[1], m.shape[2])
	}
	n := len(images) / d
	features = make([]float32, n*FeatureDim)
	predicted = make([]uint8, n)
	wk := m.work(min(n, evalChunk), false)
	for lo := 0; lo < n; lo += evalChunk {
		nb := min(evalChunk, n-lo)
		m.forward(wk, images[lo*d:(lo+nb)*d], nb)
		copy(features[lo*FeatureDim:], wk.h3[:nb*FeatureDim])
		for b := range nb {
			o := wk.o[b*m.labels : (b+1)*m.labels]
			best := 0
			for j, v := range o {
				if v > o[best] {
					best = j
				}
			}
			predicted[lo+b] = uint8(best)
		}
	}
	return features, predicted, nil
}

// Accuracy is the share of images the classifier labels right.
func (m *Classifier) Accuracy(images []float32, labels []uint8) (float64, error) {
	_, pred, err := m.Score(images)
	if err != nil {
		return 0, err
	}
	if len(pred) != len(labels) {
		return 0, fmt.Errorf("classifier accuracy: %d images, %d labels", len(pred), len(labels))
	}
	right := 0
	for i, p := range pred {
		if p == labels[i] {
			right++
		}
	}
	return float64(right) / float64(len(labels)), nil
}

// LoadClassifierParams rebuilds a classifier from its tensors by name, each
// with its exact shape: the inverse of ClassifierParams over Params.
func LoadClassifierParams(shape [3]int, labels int, get func(name string) ([]int, []float32, error)) (*Classifier, error) {
	m, err := NewClassifier(shape, labels, 0)
	if err != nil {
		return nil, err
	}
	for _, p := range m.info {
		sh, v, err := get(p.Name)
		if err != nil {
			return nil, err
		}
		if len(sh) != len(p.Shape) || len(v) != p.Count {
			return nil, fmt.Errorf("classifier tensor %s has shape %v, want %v", p.Name, sh, p.Shape)
		}
		for i := range sh {
			if sh[i] != p.Shape[i] {
				return nil, fmt.Errorf("classifier tensor %s has shape %v, want %v", p.Name, sh, p.Shape)
			}
		}
		copy(m.params[p.Offset:], v)
	}
	return m, nil
}

// FrechetDistance is the squared Fréchet distance between Gaussians fitted
// to two feature clouds, |m1 - m2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2):
// the FID convention, here in the classifier's features.
func FrechetDistance(x, y Cloud) (float64, error) {
	if err := checkPair(x, y); err != nil {
		return 0, fmt.Errorf("frechet distance: %w", err)
	}
	mx, err := Mean(x)
	if err != nil {
		return 0, err
	}
	my, err := Mean(y)
	if err != nil {
		return 0, err
	}
	sx, err := Covariance(x)
	if err != nil {
		return 0, err
	}
	sy, err := Covariance(y)
	if err != nil {
		return 0, err
	}
	w, err := GaussianW2(mx, sx, my, sy)
	if err != nil {
		return 0, fmt.Errorf("frechet distance: %w", err)
	}
	return w * w, nil
}

// ClassHistogram is the share of predicted labels falling in each of
// classes, its smallest share, and its entropy over log(len(classes)): 1
// when every class is equally frequent, 0 when one takes all. Predictions
// outside classes count in no share.
func ClassHistogram(predicted []uint8, classes []int) (shares []float64, minShare, entropy float64) {
	shares = make([]float64, len(classes))
	at := map[int]int{}
	for i, c := range classes {
		at[c] = i
	}
	for _, p := range predicted {
		if i, ok := at[int(p)]; ok {
			shares[i]++
		}
	}
	minShare = 1
	for i := range shares {
		shares[i] /= float64(max(1, len(predicted)))
		minShare = min(minShare, shares[i])
		if shares[i] > 0 {
			entropy -= shares[i] * math.Log(shares[i])
		}
	}
	if len(classes) > 1 {
		entropy /= math.Log(float64(len(classes)))
	}
	return shares, minShare, entropy
}
