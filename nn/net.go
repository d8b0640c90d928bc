package nn

import (
	"errors"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/rng"
	"gonum.org/v1/gonum/blas"
	"gorgonia.org/gorgonia"
)

// ParamInfo locates one tensor in the parameter arena. Dense-network
// weights have shape [in, out] (row-major, y = x W + b), the transpose of
// torch.nn.Linear's; unet tensors have torch's names and shapes (Linear
// [out, in], Conv2d [out, in, kh, kw]), so its state_dict loads them.
type ParamInfo struct {
	Name        string
	Shape       []int
	Offset, Len int
}

// Sources of a layer other than earlier layers.
const (
	srcX    = -1 // the data input x
	srcTime = -2 // the time features
)

// layer is one dense layer y = act(sum_s in_s W_s + b). Its weight is a
// single [sum(widths), out] tensor whose row blocks W_s are contiguous, so a
// layer fed by two tensors needs no concatenation.
type layer struct {
	name   string
	srcs   []int // srcX, srcTime or the index of an earlier layer
	widths []int // width of each source
	in     int   // sum of widths
	out    int
	act    bool // apply the activation to the output
	w, b   int  // arena offsets of weight and bias
}

// maxChunk bounds the rows processed at once, and so the workspace memory;
// larger batches are cut into chunks of this size.
const maxChunk = 2048

// Net is one network: a stack of dense layers whose weights and biases live
// in one flat parameter arena, with a gradient arena of the same layout.
// The forward and backward passes are written out over the arenas and call
// the BLAS that gorgonia is configured with (gonum pure Go by default,
// OpenBLAS with the openblas build tag). Not safe for concurrent use.
type Net struct {
	spec   Spec
	layers []layer
	info   []ParamInfo
	params []float32
	grads  []float32
	ws     workspace

	// Per-layer flags of which layers backward visits, computed once:
	// every layer for parameter gradients, only those that depend on x for
	// a VJP.
	needParams, needX []bool
	written           []bool    // scratch for backward
	freqs             []float64 // sinusoidal embedding frequencies

	unet      *unet // the body of a unet; nil for the dense architectures
	unetFanIn []int // per tensor, for initUNet
}

// workspace holds the per-row buffers of one chunk, sized for maxChunk rows
// (or fewer, grown on demand) and reused by every call.
type workspace struct {
	rows int         // capacity in rows
	tf   []float32   // time features, rows x timeWidth
	z    [][]float32 // per layer: pre-activation, rows x out
	a    [][]float32 // per layer: output (aliases z when act is false)
	sig  [][]float32 // per layer, SiLU only: sigmoid(z)
	da   [][]float32 // per layer: gradient with respect to the output
}

// New builds a network for spec with parameters drawn deterministically from
// seed: every weight and bias uniform in ±1/sqrt(fan_in), torch.nn.Linear's
// default, from rng streams keyed by (seed, PurposeInit, layer, tensor).
//
// A unet draws every tensor from its own stream keyed by (seed,
// PurposeInit, tensor index), torch's defaults: convolutions and linear
// layers uniform in ±1/sqrt(fan_in), GroupNorm weights 1 and biases 0.
func New(spec Spec, seed uint64) (*Net, error) {
	n, err := newUninit(spec)
	if err != nil {
		return nil, err
	}
	if n.unet != nil {
		initUNet(n.params, n.info, n.unetFanIn, seed)
		return n, nil
	}
	for li, l := range n.layers {
		bound := 1 / math.Sqrt(float64(l.in))
		ws := rng.New(seed, rng.PurposeInit, uint64(li), 0)
		for i := range l.in * l.out {
			n.params[l.w+i] = float32((2*ws.Float64() - 1) * bound)
		}
		bs := rng.New(seed, rng.PurposeInit, uint64(li), 1)
		for i := range l.out {
			n.params[l.b+i] = float32((2*bs.Float64() - 1) * bound)
		}
	}
	return n, nil
}

// newUninit validates spec and lays out the arenas, leaving parameters zero.
func newUninit(spec Spec) (*Net, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.WithDefaults()
	if spec.Arch == ArchUNet {
		u, info, fanIn, size := newUNet(spec, false)
		return &Net{spec: spec, info: info, params: make([]float32, size), grads: make([]float32, size),
			unet: u, unetFanIn: fanIn}, nil
	}
	n := &Net{spec: spec, layers: buildLayers(spec)}
	off := 0
	for i := range n.layers {
		l := &n.layers[i]
		l.w = off
		off += l.in * l.out
		l.b = off
		off += l.out
		n.info = append(n.info,
			ParamInfo{Name: l.name + ".weight", Shape: []int{l.in, l.out}, Offset: l.w, Len: l.in * l.out},
			ParamInfo{Name: l.name + ".bias", Shape: []int{l.out}, Offset: l.b, Len: l.out})
	}
	n.params = make([]float32, off)
	n.grads = make([]float32, off)
	n.needParams = n.needsGrad(true, false)
	n.needX = n.needsGrad(false, true)
	n.written = make([]bool, len(n.layers))
	n.freqs = sinusoidFreqs(spec.TimeEmbed / 2)
	return n, nil
}

// buildLayers returns the layer graph of a validated, defaulted spec, in
// topological order; the last layer's output is the network's output.
func buildLayers(s Spec) []layer {
	tw := timeWidth(s.TimeEmbed)
	mk := func(name string, srcs, widths []int, out int, act bool) layer {
		in := 0
		for _, w := range widths {
			in += w
		}
		return layer{name: name, srcs: srcs, widths: widths, in: in, out: out, act: act}
	}
	switch s.Arch {
	case ArchDSB2D:
		// The reference ScoreNetwork: x and time encoders (MLPs without a
		// final activation), concatenation, then a 128-128 decoder.
		return []layer{
			mk("x_encoder.0", []int{srcX}, []int{s.Dim}, dsbEncWidth, true),
			mk("x_encoder.1", []int{0}, []int{dsbEncWidth}, dsbEncOut, false),
			mk("t_encoder.0", []int{srcTime}, []int{tw}, dsbEncWidth, true),
			mk("t_encoder.1", []int{2}, []int{dsbEncWidth}, dsbEncOut, false),
			mk("net.0", []int{1, 3}, []int{dsbEncOut, dsbEncOut}, dsbDecWidth, true),
			mk("net.1", []int{4}, []int{dsbDecWidth}, dsbDecWidth, true),
			mk("net.2", []int{5}, []int{dsbDecWidth}, s.Dim, false),
		}
	default: // ArchMLP
		var ls []layer
		srcs, widths := []int{srcX, srcTime}, []int{s.Dim, tw}
		for i, h := range s.Hidden {
			ls = append(ls, mk(fmt.Sprintf("net.%d", i), srcs, widths, h, true))
			srcs, widths = []int{i}, []int{h}
		}
		return append(ls, mk(fmt.Sprintf("net.%d", len(s.Hidden)), srcs, widths, s.Dim, false))
	}
}

// Spec returns the network's spec with defaults filled in.
func (n *Net) Spec() Spec { return n.spec.WithDefaults() }

// NumParams is the length of the parameter and gradient arenas.
func (n *Net) NumParams() int { return len(n.params) }

// Params returns the parameter arena. It is never reallocated; writing it
// changes the next Forward, LossGrad and VJP.
func (n *Net) Params() []float32 { return n.params }

// Grads returns the gradient arena, same layout as Params. LossGrad
// overwrites it; it is never reallocated.
func (n *Net) Grads() []float32 { return n.grads }

// ParamNames describes each tensor in the arena, in arena order.
func (n *Net) ParamNames() []ParamInfo {
	out := make([]ParamInfo, len(n.info))
	for i, p := range n.info {
		p.Shape = append([]int(nil), p.Shape...)
		out[i] = p
	}
	return out
}

// Clone returns an independent network with the same spec and parameters
// (gradients zero).
func (n *Net) Clone() (*Net, error) {
	c, err := newUninit(n.spec)
	if err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	copy(c.params, n.params)
	return c, nil
}

// Forward computes out = net(t, x) for a batch of B = len(t) >= 1 samples:
// len(x) == len(out) == B*Dim, row-major. out may alias x. With the pure-Go
// BLAS a sample's output is bitwise independent of the batch it is in; with
// OpenBLAS it can differ in the last bits between batch sizes.
func (n *Net) Forward(t, x, out []float32) error {
	if err := n.checkBatch("forward", t, x, "out", out); err != nil {
		return err
	}
	if n.unet != nil {
		n.unetForward(t, x, out)
		return nil
	}
	d := n.spec.Dim
	for lo := 0; lo < len(t); lo += maxChunk {
		hi := min(lo+maxChunk, len(t))
		y := n.forward(t[lo:hi], x[lo*d:hi*d], false)
		copy(out[lo*d:hi*d], y)
	}
	return nil
}

// LossGrad computes loss = (1/B) sum_b |net(t_b, x_b) - target_b|^2 and
// writes its gradient with respect to the parameters into Grads()
// (overwriting it). The loss is summed in float64.
func (n *Net) LossGrad(t, x, target []float32) (float64, error) {
	return n.LossGradTo(t, x, target, 1, n.grads)
}

// LossGradTo is LossGrad of weight*loss with the gradient written into
// grads (NumParams values, overwritten) instead of Grads(). A caller that
// sums weighted parts, a shard's share of the global batch, gets each part
// in a buffer of its own from the one pass: the weight rides on the
// output's gradient, so nothing rescales or copies the parameter gradient
// afterwards (for a small net that pass over the arena cost as much as a
// layer). It returns weight*loss.
func (n *Net) LossGradTo(t, x, target []float32, weight float64, grads []float32) (float64, error) {
	if err := n.checkBatch("loss", t, x, "target", target); err != nil {
		return 0, err
	}
	if len(grads) != len(n.params) {
		return 0, fmt.Errorf("nn loss: gradient buffer has %d values, want %d parameters", len(grads), len(n.params))
	}
	scale := float32(2 * weight / float64(len(t)))
	var sum float64
	if n.unet != nil {
		sum = n.unetLossGrad(t, x, target, scale, grads)
	} else {
		sum = n.denseLossGrad(t, x, target, scale, grads)
	}
	return sum / float64(len(t)) * weight, nil
}

// denseLossGrad writes the gradient of the squared error, its output
// gradient scaled by scale, into grads and returns the error's sum.
func (n *Net) denseLossGrad(t, x, target []float32, scale float32, grads []float32) float64 {
	d := n.spec.Dim
	var sum float64
	for lo := 0; lo < len(t); lo += maxChunk {
		hi := min(lo+maxChunk, len(t))
		y := n.forward(t[lo:hi], x[lo*d:hi*d], true)
		dy := n.ws.da[len(n.layers)-1][:len(y)]
		for i, yi := range y {
			r := yi - target[lo*d+i]
			sum += float64(r) * float64(r)
			dy[i] = scale * r
		}
		n.backward(hi-lo, x[lo*d:hi*d], grads, lo > 0, nil)
	}
	return sum
}

// VJP computes out = net(t, x) and vjp_b = v_b^T d net(t_b, x_b)/d x_b for
// every sample. It leaves Grads() untouched. Shapes as in Forward;
// len(v) == len(vjp) == B*Dim.
func (n *Net) VJP(t, x, v, out, vjp []float32) error {
	if err := n.checkBatch("vjp", t, x, "out", out); err != nil {
		return err
	}
	d := n.spec.Dim
	if len(v) != len(x) {
		return fmt.Errorf("nn vjp: len(v) = %d, want B*Dim = %d", len(v), len(x))
	}
	if len(vjp) != len(x) {
		return fmt.Errorf("nn vjp: len(vjp) = %d, want B*Dim = %d", len(vjp), len(x))
	}
	if n.unet != nil {
		n.unetVJP(t, x, v, out, vjp)
		return nil
	}
	for lo := 0; lo < len(t); lo += maxChunk {
		hi := min(lo+maxChunk, len(t))
		y := n.forward(t[lo:hi], x[lo*d:hi*d], true)
		copy(out[lo*d:hi*d], y)
		copy(n.ws.da[len(n.layers)-1], v[lo*d:hi*d])
		n.backward(hi-lo, x[lo*d:hi*d], nil, false, vjp[lo*d:hi*d])
	}
	return nil
}

var errEmptyBatch = errors.New("empty batch")

func (n *Net) checkBatch(op string, t, x []float32, outName string, out []float32) error {
	if len(t) == 0 {
		return fmt.Errorf("nn %s: len(t) = 0: %w", op, errEmptyBatch)
	}
	want := len(t) * n.spec.Dim
	if len(x) != want {
		return fmt.Errorf("nn %s: len(x) = %d, want B*Dim = %d*%d", op, len(x), len(t), n.spec.Dim)
	}
	if len(out) != want {
		return fmt.Errorf("nn %s: len(%s) = %d, want B*Dim = %d*%d", op, outName, len(out), len(t), n.spec.Dim)
	}
	return nil
}

// grow makes the workspace hold at least rows rows.
func (n *Net) grow(rows int) {
	ws := &n.ws
	if ws.rows >= rows {
		return
	}
	if ws.z == nil {
		nl := len(n.layers)
		ws.z, ws.a, ws.sig, ws.da = make([][]float32, nl), make([][]float32, nl), make([][]float32, nl), make([][]float32, nl)
	}
	ws.rows = rows
	ws.tf = make([]float32, rows*timeWidth(n.spec.TimeEmbed))
	for i, l := range n.layers {
		ws.z[i] = make([]float32, rows*l.out)
		ws.a[i] = ws.z[i]
		if l.act {
			ws.a[i] = make([]float32, rows*l.out)
			if n.spec.Activation == SiLU {
				ws.sig[i] = make([]float32, rows*l.out)
			}
		}
		ws.da[i] = make([]float32, rows*l.out)
	}
}

// source returns the row-major input matrix of a layer source for rows rows.
func (n *Net) source(src, rows int, x []float32) []float32 {
	switch src {
	case srcX:
		return x
	case srcTime:
		return n.ws.tf[:rows*timeWidth(n.spec.TimeEmbed)]
	default:
		return n.ws.a[src][:rows*n.layers[src].out]
	}
}

// forward runs the layers on one chunk (rows <= maxChunk) and returns the
// output rows, which live in the workspace until the next call. keep
// keeps what backward needs beyond z and a (SiLU's sigmoid); Forward, which
// never runs backward, skips storing it.
func (n *Net) forward(t, x []float32, keep bool) []float32 {
	rows := len(t)
	n.grow(rows)
	timeFeatures(n.ws.tf, t, n.spec.TimeEmbed, n.freqs)
	impl := gorgonia.WhichBLAS()
	for li, l := range n.layers {
		z := n.ws.z[li][:rows*l.out]
		bias := n.params[l.b : l.b+l.out]
		for r := range rows {
			copy(z[r*l.out:(r+1)*l.out], bias)
		}
		wOff := l.w
		for s, src := range l.srcs {
			k := l.widths[s]
			in := n.source(src, rows, x)
			impl.Sgemm(blas.NoTrans, blas.NoTrans, rows, l.out, k,
				1, in, k, n.params[wOff:wOff+k*l.out], l.out, 1, z, l.out)
			wOff += k * l.out
		}
		if l.act {
			var sig []float32
			if keep && n.ws.sig[li] != nil {
				sig = n.ws.sig[li][:len(z)]
			}
			activate(n.spec.Activation, n.ws.a[li][:len(z)], sig, z)
		}
	}
	last := len(n.layers) - 1
	return n.ws.a[last][:rows*n.layers[last].out]
}

// backward propagates the gradient that the caller placed in the last
// layer's da through the chunk that forward just ran. With grads non-nil
// it writes (accumulate: adds) the parameter gradients there, in the
// arena's layout; with dx non-nil it writes the gradient with respect to x
// there.
func (n *Net) backward(rows int, x []float32, grads []float32, accumulate bool, dx []float32) {
	impl := gorgonia.WhichBLAS()
	params := grads != nil
	needs := n.needX
	if params {
		needs = n.needParams
	}
	written := n.written // whether da[i] holds this pass's gradient
	clear(written)
	written[len(n.layers)-1] = true
	xWritten := false
	for li := len(n.layers) - 1; li >= 0; li-- {
		l := n.layers[li]
		if !needs[li] || !written[li] {
			continue
		}
		dz := n.ws.da[li][:rows*l.out]
		if l.act {
			var sig []float32
			if n.ws.sig[li] != nil {
				sig = n.ws.sig[li][:len(dz)]
			}
			activateGrad(n.spec.Activation, dz, n.ws.z[li][:len(dz)], n.ws.a[li][:len(dz)], sig)
		}
		if params {
			var beta float32
			if accumulate {
				beta = 1
			}
			wOff := l.w
			for s, src := range l.srcs {
				k := l.widths[s]
				in := n.source(src, rows, x)
				impl.Sgemm(blas.Trans, blas.NoTrans, k, l.out, rows,
					1, in, k, dz, l.out, beta, grads[wOff:wOff+k*l.out], l.out)
				wOff += k * l.out
			}
			colSum(grads[l.b:l.b+l.out], dz, rows, accumulate)
		}
		wOff := l.w
		for s, src := range l.srcs {
			k := l.widths[s]
			w := n.params[wOff : wOff+k*l.out]
			wOff += k * l.out
			var dst []float32
			var beta float32
			switch {
			case src == srcTime:
				continue
			case src == srcX:
				if dx == nil {
					continue
				}
				dst = dx[:rows*k]
				if xWritten {
					beta = 1
				}
				xWritten = true
			default:
				if !needs[src] {
					continue
				}
				dst = n.ws.da[src][:rows*k]
				if written[src] {
					beta = 1
				}
				written[src] = true
			}
			impl.Sgemm(blas.NoTrans, blas.Trans, rows, k, l.out,
				1, dz, l.out, w, l.out, beta, dst, k)
		}
	}
	if dx != nil && !xWritten {
		clear(dx[:rows*n.spec.Dim])
	}
}

// needsGrad reports, per layer, whether backward must visit it: every layer
// when parameter gradients are wanted, else only layers that depend on x.
func (n *Net) needsGrad(params, wantX bool) []bool {
	needs := make([]bool, len(n.layers))
	for i, l := range n.layers {
		if params {
			needs[i] = true
			continue
		}
		for _, s := range l.srcs {
			if (s == srcX && wantX) || (s >= 0 && needs[s]) {
				needs[i] = true
			}
		}
	}
	return needs
}

// colSum writes (or adds, with accumulate) the column sums of the
// rows x len(dst) matrix m into dst.
func colSum(dst, m []float32, rows int, accumulate bool) {
	if !accumulate {
		clear(dst)
	}
	colSumRows(dst, m, len(dst), rows)
}
