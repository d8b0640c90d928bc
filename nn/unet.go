package nn

import (
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/rng"
	"gonum.org/v1/gonum/blas"
	"gorgonia.org/gorgonia"
)

// unetChunk is how many images one pass holds at a time. Larger batches are
// cut into chunks of this size whose gradients add up, which bounds the
// workspace while every GEMM still has hundreds to thousands of rows;
// chunks of 16 measured no faster.
const unetChunk = 8

// linear is torch.nn.Linear with torch's [out, in] weight layout.
type linear struct {
	name    string
	in, out int
	w, b    int
}

// forward writes y = x W^T + b for rows rows.
func (l *linear) forward(params, x, y []float32, rows int) {
	y = y[:rows*l.out]
	bias := params[l.b : l.b+l.out]
	for r := range rows {
		copy(y[r*l.out:(r+1)*l.out], bias)
	}
	gorgonia.WhichBLAS().Sgemm(blas.NoTrans, blas.Trans, rows, l.out, l.in,
		1, x, l.in, params[l.w:l.w+l.out*l.in], l.in, 1, y, l.out)
}

// backward adds the parameter gradients of dy to grads and, with dx
// non-nil, adds dy W to dx.
func (l *linear) backward(params, grads, x, dy, dx []float32, rows int) {
	impl := gorgonia.WhichBLAS()
	dy = dy[:rows*l.out]
	impl.Sgemm(blas.Trans, blas.NoTrans, l.out, l.in, rows,
		1, dy, l.out, x, l.in, 1, grads[l.w:l.w+l.out*l.in], l.in)
	colSum(grads[l.b:l.b+l.out], dy, rows, true)
	if dx != nil {
		impl.Sgemm(blas.NoTrans, blas.NoTrans, rows, l.in, l.out,
			1, dy, l.out, params[l.w:l.w+l.out*l.in], l.in, 1, dx, l.in)
	}
}

// resBlock is the unet's residual block at one resolution:
// h = conv1(silu(norm1(x))) + temb(e); h = conv2(silu(norm2(h)));
// out = skip(x) + h, with skip a 1x1 convolution when cin != cout and the
// identity otherwise. Its buffers hold one chunk's activations between
// forward and backward.
type resBlock struct {
	cin, cout, h, w int
	norm1, norm2    groupNorm
	conv1, conv2    conv
	skip            *conv
	temb            linear

	z1, sig1, a1          []float32 // norm1 output, its sigmoid, silu: rows x cin
	h1, z2, sig2, a2, out []float32 // rows x cout
	dout                  []float32 // gradient with respect to out
	st1, st2              []float64 // group statistics
	tb, dtb               []float32 // temb(e) and its gradient, nb x cout
}

// unet is the body of a Net of architecture unet. Activations are kept
// channel-last (rows = image, y, x; columns = channels) so that every
// convolution of a chunk is one GEMM; x and the output are converted from
// and to the NCHW layout of the Net's API at the ends.
type unet struct {
	c, h, w  int // image shape
	ch       []int
	embed    int // sinusoidal embedding size
	tembDim  int // width of the time embedding MLP
	freqs    []float64
	te0, te2 linear
	inc      conv
	down     []*resBlock
	downs    []*conv
	mid      *resBlock
	up       []*resBlock
	outNorm  groupNorm
	outConv  conv
	convs    []*conv

	// workspace for cap images
	cap                        int
	tf, e0z, e0s, e0a, de0     []float32
	emb, demb                  []float32
	xin, dxin, incOut, dIncOut []float32
	dsOut, dDs, cat            [][]float32
	onZ, onSig, onA, outY, dY  []float32
	onSt                       []float64
	col, dcat, g1, g2, g3      []float32
	pw                         []float32 // per-image weight-gradient shares, see rowTapWeightGrad
	ex                         *exec
	maxC                       int // widest GroupNorm
}

// paramAlloc lays tensors out in the arena in the order they are added,
// keeping each tensor's fan-in for initialisation. A dry one only counts:
// it leaves out the layers' weight-sized buffers.
type paramAlloc struct {
	info  []ParamInfo
	fanIn []int // > 0: uniform ±1/sqrt(fanIn); 0: ones; -1: zeros
	off   int
	dry   bool
}

func (a *paramAlloc) add(name string, fanIn int, shape ...int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	off := a.off
	a.info = append(a.info, ParamInfo{Name: name, Shape: shape, Offset: off, Len: n})
	a.fanIn = append(a.fanIn, fanIn)
	a.off += n
	return off
}

func (a *paramAlloc) conv(name string, cin, cout, k, stride, h, w int) conv {
	c := conv{name: name, cin: cin, cout: cout, k: k, stride: stride, inH: h, inW: w}
	fan := cin * k * k
	c.w = a.add(name+".weight", fan, cout, cin, k, k)
	c.b = a.add(name+".bias", fan, cout)
	if a.dry {
		return c
	}
	c.wk = make([]float32, cout*fan)
	c.dwk = make([]float32, cout*fan)
	if k == 3 && stride == 1 {
		c.wb = make([]float32, cout*fan)
	}
	return c
}

func (a *paramAlloc) linear(name string, in, out int) linear {
	l := linear{name: name, in: in, out: out}
	l.w = a.add(name+".weight", in, out, in)
	l.b = a.add(name+".bias", in, out)
	return l
}

func (a *paramAlloc) groupNorm(name string, groups, c int) groupNorm {
	g := groupNorm{name: name, c: c, groups: groups}
	g.w = a.add(name+".weight", 0, c)
	g.b = a.add(name+".bias", -1, c)
	return g
}

// resBlock adds a block's tensors in the order of its torch state_dict.
func (a *paramAlloc) resBlock(name string, cin, cout, groups, tembDim, h, w int) *resBlock {
	b := &resBlock{cin: cin, cout: cout, h: h, w: w}
	b.norm1 = a.groupNorm(name+".norm1", groups, cin)
	b.conv1 = a.conv(name+".conv1", cin, cout, 3, 1, h, w)
	b.temb = a.linear(name+".temb", tembDim, cout)
	b.norm2 = a.groupNorm(name+".norm2", groups, cout)
	b.conv2 = a.conv(name+".conv2", cout, cout, 3, 1, h, w)
	if cin != cout {
		s := a.conv(name+".skip", cin, cout, 1, 1, h, w)
		b.skip = &s
	}
	return b
}

// newUNet lays out a validated, defaulted unet spec. The arena follows the
// state_dict order of the torch module with submodules registered as
// time_embed, inc, down, downsample, mid, up, out_norm, out_conv. With dry
// set it only lays out the arena (see paramAlloc).
func newUNet(s Spec, dry bool) (*unet, []ParamInfo, []int, int) {
	u := &unet{c: s.Image[0], h: s.Image[1], w: s.Image[2], ch: s.Channels, embed: s.TimeEmbed}
	u.tembDim = 4 * s.Channels[0]
	u.freqs = sinusoidFreqs(s.TimeEmbed / 2)
	L, G, td := len(s.Channels), s.Groups, u.tembDim
	a := &paramAlloc{dry: dry}
	u.te0 = a.linear("time_embed.0", s.TimeEmbed, td)
	u.te2 = a.linear("time_embed.2", td, td)
	u.inc = a.conv("inc", u.c, s.Channels[0], 3, 1, u.h, u.w)
	for i := 0; i < L-1; i++ {
		prev := s.Channels[0]
		if i > 0 {
			prev = s.Channels[i-1]
		}
		u.down = append(u.down, a.resBlock(fmt.Sprintf("down.%d", i), prev, s.Channels[i], G, td, u.h>>i, u.w>>i))
	}
	for i := 0; i < L-1; i++ {
		c := a.conv(fmt.Sprintf("downsample.%d", i), s.Channels[i], s.Channels[i], 3, 2, u.h>>i, u.w>>i)
		u.downs = append(u.downs, &c)
	}
	midIn := s.Channels[0]
	if L > 1 {
		midIn = s.Channels[L-2]
	}
	u.mid = a.resBlock("mid", midIn, s.Channels[L-1], G, td, u.h>>(L-1), u.w>>(L-1))
	cur := s.Channels[L-1]
	for j := 0; j < L-1; j++ {
		i := L - 2 - j
		u.up = append(u.up, a.resBlock(fmt.Sprintf("up.%d", j), cur+s.Channels[i], s.Channels[i], G, td, u.h>>i, u.w>>i))
		cur = s.Channels[i]
	}
	u.up = append(u.up, a.resBlock(fmt.Sprintf("up.%d", L-1), cur+s.Channels[0], s.Channels[0], G, td, u.h, u.w))
	u.outNorm = a.groupNorm("out_norm", G, s.Channels[0])
	u.outConv = a.conv("out_conv", s.Channels[0], u.c, 3, 1, u.h, u.w)

	u.convs = append(u.convs, &u.inc)
	for _, b := range u.blocks() {
		u.convs = append(u.convs, &b.conv1, &b.conv2)
		if b.skip != nil {
			u.convs = append(u.convs, b.skip)
		}
	}
	u.convs = append(u.convs, u.downs...)
	u.convs = append(u.convs, &u.outConv)
	maxC := u.c
	for _, b := range u.blocks() {
		maxC = max(maxC, b.cin)
	}
	u.ex = newExec(maxC)
	u.maxC = maxC
	return u, a.info, a.fanIn, a.off
}

// blocks lists every residual block.
func (u *unet) blocks() []*resBlock {
	bs := append([]*resBlock(nil), u.down...)
	bs = append(bs, u.mid)
	return append(bs, u.up...)
}

// initUNet draws the parameters torch's way: conv and linear weights and
// biases uniform in ±1/sqrt(fan_in), GroupNorm weights 1 and biases 0, one
// rng stream per tensor.
func initUNet(params []float32, info []ParamInfo, fanIn []int, seed uint64) {
	for i, p := range info {
		dst := params[p.Offset : p.Offset+p.Len]
		switch f := fanIn[i]; {
		case f == 0:
			for j := range dst {
				dst[j] = 1
			}
		case f < 0:
			clear(dst)
		default:
			bound := 1 / math.Sqrt(float64(f))
			s := rng.New(seed, rng.PurposeInit, uint64(i))
			for j := range dst {
				dst[j] = float32((2*s.Float64() - 1) * bound)
			}
		}
	}
}

// grow sizes the workspace for nb images per chunk.
func (u *unet) grow(nb int) {
	if u.cap >= nb {
		return
	}
	u.cap = nb
	f := func(n int) []float32 { return make([]float32, n) }
	hw := u.h * u.w
	c0 := u.ch[0]
	u.tf, u.e0z, u.e0s, u.e0a = f(nb*u.embed), f(nb*u.tembDim), f(nb*u.tembDim), f(nb*u.tembDim)
	u.de0 = f(nb * u.tembDim)
	u.emb, u.demb = f(nb*u.tembDim), f(nb*u.tembDim)
	u.xin, u.dxin = f(nb*hw*u.c), f(nb*hw*u.c)
	u.incOut, u.dIncOut = f(nb*hw*c0), f(nb*hw*c0)
	u.dsOut, u.dDs = nil, nil
	for i, d := range u.downs {
		n := nb * (u.h >> (i + 1)) * (u.w >> (i + 1)) * d.cout
		u.dsOut = append(u.dsOut, f(n))
		u.dDs = append(u.dDs, f(n))
	}
	u.cat = nil
	maxCat, maxOut, maxIn := 0, 0, 0
	for _, b := range u.blocks() {
		rows := nb * b.h * b.w
		b.z1, b.sig1, b.a1 = f(rows*b.cin), f(rows*b.cin), f(rows*b.cin)
		b.h1, b.z2, b.sig2, b.a2 = f(rows*b.cout), f(rows*b.cout), f(rows*b.cout), f(rows*b.cout)
		b.out, b.dout = f(rows*b.cout), f(rows*b.cout)
		b.st1, b.st2 = make([]float64, 2*nb*b.norm1.groups), make([]float64, 2*nb*b.norm2.groups)
		b.tb, b.dtb = f(nb*b.cout), f(nb*b.cout)
		maxOut = max(maxOut, rows*b.cout)
		maxIn = max(maxIn, rows*b.cin)
	}
	for _, b := range u.up {
		u.cat = append(u.cat, f(nb*b.h*b.w*b.cin))
		maxCat = max(maxCat, nb*b.h*b.w*b.cin)
	}
	maxCol, maxPW := 0, 0
	for _, c := range u.convs {
		if c.k == 1 {
			continue
		}
		rows := nb * c.outSize(c.inH) * c.outSize(c.inW)
		if c.stride != 1 { // its input gradient goes through col2im
			maxCol = max(maxCol, rows*c.kdim(), gemmSlots(rows, c.kdim())*blockRows(c.kdim())*c.kdim())
			continue
		}
		for _, ci := range []int{c.cin, c.cout} {
			maxCol = max(maxCol, gemmSlots(rows, 9*ci)*min(rows, blockRows(9*ci))*9*ci)
			if c.rowTaps(c.inW) {
				maxCol = max(maxCol, rowTapSlots(nb)*rowTapLen(c.inH, c.inW, ci))
				maxPW = max(maxPW, nb*len(c.dwk))
			}
		}
	}
	u.col, u.dcat, u.pw = f(maxCol), f(maxCat), f(maxPW)
	u.g1, u.g2, u.g3 = f(maxOut), f(maxOut), f(max(maxIn, nb*hw*c0))
	u.onZ, u.onSig, u.onA = f(nb*hw*c0), f(nb*hw*c0), f(nb*hw*c0)
	u.onSt = make([]float64, 2*nb*u.outNorm.groups)
	u.outY, u.dY = f(nb*hw*u.c), f(nb*hw*u.c)
	u.ex.pg = make([]float64, nb*2*u.maxC)
}

// forward runs one resBlock on x (rows x cin) with time embedding emb.
func (b *resBlock) forward(u *unet, params, x, emb []float32, nb int) {
	e := u.ex
	hw := b.h * b.w
	rows := nb * hw
	b.norm1.forwardSiLU(params, x, b.z1, b.sig1, b.a1, b.st1, nb, hw, e)
	e.mark(kindGroupNorm)
	b.temb.forward(params, emb, b.tb, nb)
	e.mark(kindOther)
	b.conv1.forward(params, b.a1, b.h1, u.col, nb, b.h, b.w, false, e)
	for i := range nb {
		addRows(b.h1[i*hw*b.cout:(i+1)*hw*b.cout], b.tb[i*b.cout:(i+1)*b.cout], b.cout, hw)
	}
	e.mark(kindOther)
	b.norm2.forwardSiLU(params, b.h1, b.z2, b.sig2, b.a2, b.st2, nb, hw, e)
	e.mark(kindGroupNorm)
	n := rows * b.cout
	b.conv2.forward(params, b.a2, b.out, u.col, nb, b.h, b.w, false, e)
	if b.skip != nil {
		b.skip.forward(params, x, b.out, u.col, nb, b.h, b.w, true, e)
	} else {
		addRows(b.out[:n], x[:n], n, 1)
		e.mark(kindOther)
	}
}

// backward propagates b.dout through the block that forward ran on x,
// writing the gradient with respect to x into dx (addDX: adding it). With
// wantParams it adds parameter gradients to grads and the gradient with
// respect to the time embedding to demb.
func (b *resBlock) backward(u *unet, params, grads, x, emb, dx, demb []float32, nb int, wantParams, addDX bool) {
	e := u.ex
	hw := b.h * b.w
	rows := nb * hw
	n := rows * b.cout
	g1, g2, g3 := u.g1[:n], u.g2[:n], u.g3[:rows*b.cin]
	b.conv2.backward(grads, b.a2, b.dout, g1, u.col, u.pw, nb, b.h, b.w, wantParams, false, e)
	b.norm2.backwardSiLU(params, grads, b.h1, g1, g2, b.z2, b.sig2, b.st2, nb, hw, wantParams, false, e)
	e.mark(kindGroupNorm)
	if wantParams {
		clear(b.dtb[:nb*b.cout])
		for i := range nb {
			colSum(b.dtb[i*b.cout:(i+1)*b.cout], g2[i*hw*b.cout:(i+1)*hw*b.cout], hw, true)
		}
		b.temb.backward(params, grads, emb, b.dtb, demb, nb)
		e.mark(kindOther)
	}
	b.conv1.backward(grads, b.a1, g2, g3, u.col, u.pw, nb, b.h, b.w, wantParams, false, e)
	b.norm1.backwardSiLU(params, grads, x, g3, dx, b.z1, b.sig1, b.st1, nb, hw, wantParams, addDX, e)
	e.mark(kindGroupNorm)
	if b.skip != nil {
		b.skip.backward(grads, x, b.dout, dx, u.col, u.pw, nb, b.h, b.w, wantParams, true, e)
	} else {
		addRows(dx[:n], b.dout[:n], n, 1)
		e.mark(kindOther)
	}
}

// nchwToNHWC transposes nb images of c planes of hw pixels to channel-last.
func nchwToNHWC(dst, src []float32, nb, c, hw int) {
	if c == 1 {
		copy(dst[:nb*hw], src)
		return
	}
	for b := range nb {
		s, d := src[b*c*hw:(b+1)*c*hw], dst[b*c*hw:(b+1)*c*hw]
		for ci := range c {
			for q, v := range s[ci*hw : (ci+1)*hw] {
				d[q*c+ci] = v
			}
		}
	}
}

// nhwcToNCHW is the inverse of nchwToNHWC.
func nhwcToNCHW(dst, src []float32, nb, c, hw int) {
	if c == 1 {
		copy(dst[:nb*hw], src)
		return
	}
	for b := range nb {
		s, d := src[b*c*hw:(b+1)*c*hw], dst[b*c*hw:(b+1)*c*hw]
		for ci := range c {
			plane := d[ci*hw : (ci+1)*hw]
			for q := range plane {
				plane[q] = s[q*c+ci]
			}
		}
	}
}

// fillCat writes the up block's input: the first cc channels from cur,
// nearest-upsampled by 2 when up is set, and the next cs from skip, for nb
// images of h x w (the output resolution).
func fillCat(cat, cur, skip []float32, nb, h, w, cc, cs int, up bool) {
	ct := cc + cs
	for b := range nb {
		for y := range h {
			for x := range w {
				m := (b*h+y)*w + x
				src := m
				if up {
					src = (b*(h/2)+y/2)*(w/2) + x/2
				}
				row := cat[m*ct : (m+1)*ct]
				copy(row[:cc], cur[src*cc:(src+1)*cc])
				copy(row[cc:], skip[m*cs:(m+1)*cs])
			}
		}
	}
}

// splitCat is the adjoint of fillCat: it writes the gradients of cur
// (summing the four copies when up is set) and of skip.
func splitCat(dcur, dskip, dcat []float32, nb, h, w, cc, cs int, up bool) {
	ct := cc + cs
	if up {
		clear(dcur[:nb*(h/2)*(w/2)*cc])
	}
	for b := range nb {
		for y := range h {
			for x := range w {
				m := (b*h+y)*w + x
				row := dcat[m*ct : (m+1)*ct]
				copy(dskip[m*cs:(m+1)*cs], row[cc:])
				if !up {
					copy(dcur[m*cc:(m+1)*cc], row[:cc])
					continue
				}
				src := (b*(h/2)+y/2)*(w/2) + x/2
				d := dcur[src*cc : (src+1)*cc]
				for i, v := range row[:cc] {
					d[i] += v
				}
			}
		}
	}
}

// loadWeights refreshes every convolution's GEMM-layout weights.
func (u *unet) loadWeights(params []float32) {
	for _, c := range u.convs {
		c.loadWeights(params)
	}
}

// forward runs nb <= cap images (x in NCHW) and writes the output in NCHW
// to out; the activations stay in the workspace for backward.
func (u *unet) forward(params, t, x, out []float32) {
	nb := len(t)
	e := u.ex
	e.timer().start()
	hw := u.h * u.w
	timeFeatures(u.tf, t, u.embed, u.freqs)
	u.te0.forward(params, u.tf, u.e0z, nb)
	e.mark(kindOther)
	nt := nb * u.tembDim
	e.silu(u.e0a[:nt], u.e0s[:nt], u.e0z[:nt])
	u.te2.forward(params, u.e0a, u.emb, nb)
	nchwToNHWC(u.xin, x, nb, u.c, hw)
	e.mark(kindOther)
	u.inc.forward(params, u.xin, u.incOut, u.col, nb, u.h, u.w, false, e)
	cur := u.incOut
	for i, b := range u.down {
		b.forward(u, params, cur, u.emb, nb)
		u.downs[i].forward(params, b.out, u.dsOut[i], u.col, nb, b.h, b.w, false, e)
		cur = u.dsOut[i]
	}
	u.mid.forward(u, params, cur, u.emb, nb)
	prev := u.mid
	L := len(u.ch)
	for j, b := range u.up {
		skip, up := u.incOut, false
		if j < L-1 {
			skip, up = u.down[L-2-j].out, true
		}
		fillCat(u.cat[j], prev.out, skip, nb, b.h, b.w, prev.cout, b.cin-prev.cout, up)
		e.mark(kindOther)
		b.forward(u, params, u.cat[j], u.emb, nb)
		prev = b
	}
	u.outNorm.forwardSiLU(params, prev.out, u.onZ, u.onSig, u.onA, u.onSt, nb, hw, e)
	e.mark(kindGroupNorm)
	u.outConv.forward(params, u.onA, u.outY, u.col, nb, u.h, u.w, false, e)
	nhwcToNCHW(out, u.outY, nb, u.c, hw)
	e.mark(kindOther)
}

// backward propagates dy (NCHW, the gradient with respect to the output of
// the forward call just made) through the chunk. With wantParams it adds the
// parameter gradients to grads (conv weights to their dwk); with dx
// non-nil it writes the gradient with respect to x (NCHW) there.
func (u *unet) backward(params, grads, dy, dx []float32, nb int, wantParams bool) {
	e := u.ex
	e.timer().start()
	hw := u.h * u.w
	L := len(u.ch)
	nchwToNHWC(u.dY, dy, nb, u.c, hw)
	e.mark(kindOther)
	n := nb * hw * u.ch[0]
	g := u.g3[:n]
	u.outConv.backward(grads, u.onA, u.dY, g, u.col, u.pw, nb, u.h, u.w, wantParams, false, e)
	last := u.up[L-1]
	u.outNorm.backwardSiLU(params, grads, last.out, g, last.dout, u.onZ, u.onSig, u.onSt, nb, hw, wantParams, false, e)
	e.mark(kindGroupNorm)
	if wantParams {
		clear(u.demb[:nb*u.tembDim])
	}
	for j := L - 1; j >= 0; j-- {
		b := u.up[j]
		b.backward(u, params, grads, u.cat[j], u.emb, u.dcat, u.demb, nb, wantParams, false)
		prev := u.mid
		if j > 0 {
			prev = u.up[j-1]
		}
		if j == L-1 {
			splitCat(prev.dout, u.dIncOut, u.dcat, nb, b.h, b.w, prev.cout, b.cin-prev.cout, false)
		} else {
			splitCat(prev.dout, u.down[L-2-j].dout, u.dcat, nb, b.h, b.w, prev.cout, b.cin-prev.cout, true)
		}
		e.mark(kindOther)
	}
	if L == 1 {
		u.mid.backward(u, params, grads, u.incOut, u.emb, u.dIncOut, u.demb, nb, wantParams, true)
	} else {
		u.mid.backward(u, params, grads, u.dsOut[L-2], u.emb, u.dDs[L-2], u.demb, nb, wantParams, false)
	}
	for i := L - 2; i >= 0; i-- {
		b := u.down[i]
		u.downs[i].backward(grads, b.out, u.dDs[i], b.dout, u.col, u.pw, nb, b.h, b.w, wantParams, true, e)
		if i > 0 {
			b.backward(u, params, grads, u.dsOut[i-1], u.emb, u.dDs[i-1], u.demb, nb, wantParams, false)
		} else {
			b.backward(u, params, grads, u.incOut, u.emb, u.dIncOut, u.demb, nb, wantParams, true)
		}
	}
	var dxin []float32
	if dx != nil {
		dxin = u.dxin
	}
	u.inc.backward(grads, u.xin, u.dIncOut, dxin, u.col, u.pw, nb, u.h, u.w, wantParams, false, e)
	if dx != nil {
		nhwcToNCHW(dx, u.dxin, nb, u.c, hw)
		e.mark(kindOther)
	}
	if wantParams {
		nt := nb * u.tembDim
		g := u.de0[:nt]
		clear(g)
		u.te2.backward(params, grads, u.e0a, u.demb, g, nb)
		e.mark(kindOther)
		e.siluGrad(g, u.e0z[:nt], u.e0a[:nt], u.e0s[:nt])
		u.te0.backward(params, grads, u.tf, g, nil, nb)
		e.mark(kindOther)
	}
}

// unetBLASThreads makes the BLAS single-threaded for the length of a unet
// pass, and returns the count to restore. With GOMAXPROCS > 1 the pass
// splits the row-tap GEMMs over its own workers: those products are one
// image each, too small to share well, and a BLAS pool's threads left
// spinning between them took a core from the workers (at two threads a
// step cost twice the CPU time of one). With GOMAXPROCS 1 it holds too,
// because on some kernels (OpenBLAS's Haswell/Zen sgemm) a threaded
// product rounds differently from a single-threaded one, and a pass must
// have the same bits at any GOMAXPROCS.
func unetBLASThreads() int {
	prev := BLASThreads()
	if prev > 1 {
		SetBLASThreads(1)
	}
	return prev
}

// restoreBLASThreads undoes unetBLASThreads.
func restoreBLASThreads(prev int) {
	if prev > 1 {
		SetBLASThreads(prev)
	}
}

// unetForward is Net.Forward for the unet.
func (n *Net) unetForward(t, x, out []float32) {
	defer restoreBLASThreads(unetBLASThreads())
	u, d := n.unet, n.spec.Dim
	u.grow(min(len(t), unetChunk))
	u.loadWeights(n.params)
	for lo := 0; lo < len(t); lo += unetChunk {
		hi := min(lo+unetChunk, len(t))
		u.forward(n.params, t[lo:hi], x[lo*d:hi*d], out[lo*d:hi*d])
	}
}

// unetLossGrad is denseLossGrad for the unet: the gradient of the squared
// error, its output gradient scaled by scale, into grads; it returns the
// error's sum.
func (n *Net) unetLossGrad(t, x, target []float32, scale float32, grads []float32) float64 {
	defer restoreBLASThreads(unetBLASThreads())
	u, d := n.unet, n.spec.Dim
	u.grow(min(len(t), unetChunk))
	u.loadWeights(n.params)
	clear(grads)
	for _, c := range u.convs {
		clear(c.dwk)
	}
	var loss float64
	y := u.dxin // free until backward's input gradient, which LossGrad skips
	for lo := 0; lo < len(t); lo += unetChunk {
		hi := min(lo+unetChunk, len(t))
		nb := hi - lo
		y := y[:nb*d]
		u.forward(n.params, t[lo:hi], x[lo*d:hi*d], y)
		for i, yi := range y {
			r := yi - target[lo*d+i]
			loss += float64(r) * float64(r)
			y[i] = scale * r
		}
		u.backward(n.params, grads, y, nil, nb, true)
	}
	for _, c := range u.convs {
		c.storeGrad(grads)
	}
	return loss
}

// unetVJP is Net.VJP for the unet.
func (n *Net) unetVJP(t, x, v, out, vjp []float32) {
	defer restoreBLASThreads(unetBLASThreads())
	u, d := n.unet, n.spec.Dim
	u.grow(min(len(t), unetChunk))
	u.loadWeights(n.params)
	for lo := 0; lo < len(t); lo += unetChunk {
		hi := min(lo+unetChunk, len(t))
		u.forward(n.params, t[lo:hi], x[lo*d:hi*d], out[lo*d:hi*d])
		u.backward(n.params, nil, v[lo*d:hi*d], vjp[lo*d:hi*d], hi-lo, false)
	}
}
