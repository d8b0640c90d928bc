package nn

import (
	"runtime"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/gorgonia"
)

// conv is a 2D convolution with bias, kernel k x k (3 with padding 1 and stride 1
// or 2, or 1 with stride 1 and no padding), over activations kept image-major and
// channel-last: a chunk of nb images of h x w pixels is a matrix of
// nb*h*w rows by cin columns. In that layout im2col gives one matrix of
// nb*ho*wo rows by k*k*cin columns for the whole chunk, so each pass is a
// single GEMM whose rows are every output pixel of every image.
//
// The arena holds torch's [cout, cin, k, k] weight. The GEMMs want it as
// [k, k, cin, cout] (tap-major rows, so that im2col copies contiguous
// channel runs; output channels last, the faster GEMM form, measured):
// wk holds that permutation, refreshed once per call, and dwk collects the
// weight gradient in it until it is permuted back.
type conv struct {
	name                 string
	cin, cout, k, stride int
	w, b                 int       // arena offsets of weight and bias
	wk, dwk              []float32 // [k*k*cin, cout]
	wb                   []float32 // 3x3 stride 1: [3, 3, cout, cin], the kernel flipped, for the input gradient

	inH, inW int // input size
}

// kdim is the length of one im2col row.
func (c *conv) kdim() int { return c.k * c.k * c.cin }

// outSize is the output height or width for an input of size n.
func (c *conv) outSize(n int) int {
	pad := (c.k - 1) / 2
	return (n+2*pad-c.k)/c.stride + 1
}

// loadWeights permutes the arena's [cout, cin, k*k] weight into wk, and
// for a stride-1 3x3 kernel into wb: the input gradient of that
// convolution is the convolution of the output gradient with the kernel
// flipped in both axes and its channel axes swapped.
func (c *conv) loadWeights(params []float32) {
	taps := c.k * c.k
	w := params[c.w : c.w+c.cout*c.cin*taps]
	for o := range c.cout {
		for ci := range c.cin {
			src := w[(o*c.cin+ci)*taps : (o*c.cin+ci+1)*taps]
			for t, v := range src {
				c.wk[(t*c.cin+ci)*c.cout+o] = v
				if c.wb != nil {
					c.wb[((8-t)*c.cout+o)*c.cin+ci] = v
				}
			}
		}
	}
}

// storeGrad permutes dwk back into the arena's layout, overwriting it.
func (c *conv) storeGrad(grads []float32) {
	taps := c.k * c.k
	g := grads[c.w : c.w+c.cout*c.cin*taps]
	for o := range c.cout {
		for ci := range c.cin {
			dst := g[(o*c.cin+ci)*taps : (o*c.cin+ci+1)*taps]
			for t := range dst {
				dst[t] = c.dwk[(t*c.cin+ci)*c.cout+o]
			}
		}
	}
}

// im2colRows writes rows [m0, m1) of the im2col matrix of a 3x3
// padding-1 convolution at stride s over images of h x w pixels with c
// channels, x holding every image: row m is the 9*c input values (zero
// outside the image) that output pixel m's kernel covers.
func im2colRows(col, x []float32, h, w, c, s, m0, m1 int) {
	ho, wo := (h-1)/s+1, (w-1)/s+1
	kd := 9 * c
	for m := m0; m < m1; m++ {
		b, q := m/(ho*wo), m%(ho*wo)
		oy, ox := q/wo, q%wo
		img := x[b*h*w*c : (b+1)*h*w*c]
		row := col[(m-m0)*kd : (m-m0+1)*kd]
		for ky := range 3 {
			dst := row[ky*3*c : (ky+1)*3*c]
			iy := oy*s + ky - 1
			if iy < 0 || iy >= h {
				clear(dst)
				continue
			}
			// The three taps of a kernel row are adjacent pixels,
			// one contiguous run of the channel-last input.
			ix := ox*s - 1
			src := img[iy*w*c : (iy+1)*w*c]
			if ix >= 0 && ix+3 <= w {
				copy(dst, src[ix*c:(ix+3)*c])
				continue
			}
			for kx := range 3 {
				d := dst[kx*c : (kx+1)*c]
				if j := ix + kx; j >= 0 && j < w {
					copy(d, src[j*c:(j+1)*c])
				} else {
					clear(d)
				}
			}
		}
	}
}

// im2colRows is im2colRows split over the workers by row.
func (e *exec) im2colRows(col, x []float32, h, w, c, s, m0, m1 int) {
	const minRows = 64 // below this a goroutine costs more than it saves
	n := m1 - m0
	pieces := max(1, n/minRows)
	if e == nil || pieces == 1 || runtime.GOMAXPROCS(0) == 1 {
		im2colRows(col, x, h, w, c, s, m0, m1) // no closure to allocate
		return
	}
	e.run(pieces, func(_, lo, hi int) {
		a, z := m0+lo*n/pieces, m0+hi*n/pieces
		im2colRows(col[(a-m0)*9*c:], x, h, w, c, s, a, z)
	})
}

// convBlock is how many floats of im2col matrix one GEMM takes at a time:
// a block that stays in the core's L2 cache between being written and
// being read by the GEMM, where building the chunk's whole matrix first
// made both the copy and the product wait on memory.
const convBlock = 1 << 18

// blockRows is how many im2col rows of kd values make one block.
func blockRows(kd int) int { return max(1, convBlock/kd) }

// col2im adds each row of col back onto the input pixels it was gathered
// from: the adjoint of im2col. dx must hold what it should be added to.
func (c *conv) col2im(dx, col []float32, nb, h, w int) {
	ho, wo := c.outSize(h), c.outSize(w)
	cin, kd, s := c.cin, c.kdim(), c.stride
	m := 0
	for b := range nb {
		img := dx[b*h*w*cin : (b+1)*h*w*cin]
		for oy := range ho {
			for ox := range wo {
				row := col[m*kd : (m+1)*kd]
				m++
				for ky := range 3 {
					iy := oy*s + ky - 1
					if iy < 0 || iy >= h {
						continue
					}
					for kx := range 3 {
						ix := ox*s + kx - 1
						if ix < 0 || ix >= w {
							continue
						}
						src := row[(ky*3+kx)*cin : (ky*3+kx+1)*cin]
						dst := img[(iy*w+ix)*cin : (iy*w+ix+1)*cin]
						for i, v := range src {
							dst[i] += v
						}
					}
				}
			}
		}
	}
}

// rowTapMinW is the narrowest image a stride-1 3x3 convolution runs on as
// row taps (see rowTapConv); narrower ones make too short a GEMM per image.
const rowTapMinW = 14

// rowTaps reports whether this convolution runs on images w pixels wide
// as row taps.
func (c *conv) rowTaps(w int) bool { return c.k == 3 && c.stride == 1 && w >= rowTapMinW }

// rowTapLen is the size of one image's row-tap matrix (see rowTapsRange).
func rowTapLen(h, w, c int) int { return (h + 2) * w * 3 * c }

// rowTapSlots is how many row-tap matrices rowTapConv may build at once,
// one per worker, each in its own slot of col.
func rowTapSlots(nb int) int { return max(1, min(maxWorkers, nb)) }

// rowTapsRange writes rows [r0, r1) of the row-tap matrix of image b of x
// (h x w pixels of c channels) into dst: it has h+2 rows of w pixels, of
// which row y+1 holds, for pixel x, the 3*c input values at (y, x-1),
// (y, x), (y, x+1) (zero outside the image), and rows 0 and h+1 are zero.
// Output row oy of a 3x3 convolution is then the sum over ky of the
// matrix's rows oy+ky, taken as one contiguous block of h*w rows per ky,
// times the kernel's row ky: three GEMMs over a matrix a third the size
// of im2col's.
func rowTapsRange(dst, x []float32, h, w, c, b, r0, r1 int) {
	rw := 3 * c * w // one padded row
	for r := r0; r < r1; r++ {
		y := r - 1
		d := dst[r*rw : (r+1)*rw]
		if y < 0 || y >= h {
			clear(d)
			continue
		}
		src := x[(b*h+y)*w*c : (b*h+y+1)*w*c]
		for px := range w {
			o := d[px*3*c : (px+1)*3*c]
			lo, hi := px-1, px+2 // source pixels [lo, hi)
			if lo < 0 {
				clear(o[:c])
				o, lo = o[c:], 0
			}
			if hi > w {
				clear(o[len(o)-c:])
				hi = w
			}
			copy(o, src[lo*c:hi*c])
		}
	}
}

// rowTapConv writes (beta 0) or adds (beta 1) onto out the stride-1 3x3
// convolution of nb images x of h x w pixels with cin channels by the
// kernel wt in wk's layout ([3][3][cin][cout] rows of cout), without bias,
// building each image's row-tap matrix in a slot of col. The images are
// split over the workers, each making its images' GEMMs (see
// unetBLASThreads), so a result does not depend on the split.
func rowTapConv(out, x, wt, col []float32, nb, h, w, cin, cout int, beta float32, e *exec) {
	if e == nil || runtime.GOMAXPROCS(0) == 1 {
		rowTapConvImages(out, x, wt, col, 0, nb, h, w, cin, cout, beta) // no closure to allocate
	} else {
		per := rowTapLen(h, w, cin)
		e.run(nb, func(wi, lo, hi int) {
			rowTapConvImages(out, x, wt, col[wi*per:(wi+1)*per], lo, hi, h, w, cin, cout, beta)
		})
	}
	e.mark(kindConvGEMM)
}

func rowTapConvImages(out, x, wt, x3 []float32, lo, hi, h, w, cin, cout int, beta float32) {
	impl := gorgonia.WhichBLAS()
	k3, hw := 3*cin, h*w
	for b := lo; b < hi; b++ {
		rowTapsRange(x3, x, h, w, cin, b, 0, h+2)
		o := out[b*hw*cout : (b+1)*hw*cout]
		for ky := range 3 {
			bt := beta
			if ky > 0 {
				bt = 1
			}
			impl.Sgemm(blas.NoTrans, blas.NoTrans, hw, cout, k3,
				1, x3[ky*w*k3:], k3, wt[ky*k3*cout:], cout, bt, o, cout)
		}
	}
}

// rowTapWeightGrad adds to dwk the weight gradient of a row-tap
// convolution of x by dout. Each image's share is computed on its own, in
// a slot of pw (nb slots of len(dwk)), and the shares are added to dwk in
// image order, so the sum does not depend on how the images were split.
func (c *conv) rowTapWeightGrad(x, dout, col, pw []float32, nb, h, w int, e *exec) {
	nw := len(c.dwk)
	if e == nil || runtime.GOMAXPROCS(0) == 1 {
		c.rowTapWeightGradImages(x, dout, col, pw, 0, nb, h, w)
	} else {
		per := rowTapLen(h, w, c.cin)
		e.run(nb, func(wi, lo, hi int) {
			c.rowTapWeightGradImages(x, dout, col[wi*per:(wi+1)*per], pw, lo, hi, h, w)
		})
	}
	e.mark(kindConvGEMM)
	for b := range nb {
		addRows(c.dwk, pw[b*nw:(b+1)*nw], nw, 1)
	}
	e.mark(kindOther)
}

func (c *conv) rowTapWeightGradImages(x, dout, x3, pw []float32, lo, hi, h, w int) {
	impl := gorgonia.WhichBLAS()
	k3, hw, nw := 3*c.cin, h*w, len(c.dwk)
	for b := lo; b < hi; b++ {
		rowTapsRange(x3, x, h, w, c.cin, b, 0, h+2)
		d := dout[b*hw*c.cout : (b+1)*hw*c.cout]
		p := pw[b*nw : (b+1)*nw]
		for ky := range 3 {
			impl.Sgemm(blas.Trans, blas.NoTrans, k3, c.cout, hw,
				1, x3[ky*w*k3:], k3, d, c.cout, 0, p[ky*k3*c.cout:], c.cout)
		}
	}
}

// gemmSlots is how many blocks of rows rows of kd values blockGEMM may
// gather at once, one per worker, each in its own slot of col.
func gemmSlots(rows, kd int) int {
	br := blockRows(kd)
	return max(1, min(maxWorkers, (rows+br-1)/br))
}

// blockGEMM writes (beta 0) or adds (beta 1) onto out (rows x cout) the
// product of the left operand by wt (kd x cout, or with transB cout x kd),
// in blocks of blockRows(kd) rows split over the workers. With gather the
// left operand is the im2col matrix of x (a 3x3 kernel over images of
// h x w pixels of cin channels at stride s), each block built in a slot of
// col; without, it is x itself (rows x kd). The blocks are the same at
// any number of workers, so the bits are.
func blockGEMM(out, x, wt, col []float32, rows, kd, cout int, gather, transB bool, h, w, cin, s int, beta float32, e *exec) {
	br := blockRows(kd)
	nblk := (rows + br - 1) / br
	if e == nil || nblk == 1 || runtime.GOMAXPROCS(0) == 1 {
		for k := range nblk { // no closure to allocate
			gemmBlock(out, x, wt, col, k*br, min((k+1)*br, rows), kd, cout, gather, transB, h, w, cin, s, beta)
		}
	} else {
		e.run(nblk, func(wi, lo, hi int) {
			slot := col
			if gather {
				slot = col[wi*br*kd : (wi+1)*br*kd]
			}
			for k := lo; k < hi; k++ {
				gemmBlock(out, x, wt, slot, k*br, min((k+1)*br, rows), kd, cout, gather, transB, h, w, cin, s, beta)
			}
		})
	}
	e.mark(kindConvGEMM)
}

func gemmBlock(out, x, wt, col []float32, m0, m1, kd, cout int, gather, transB bool, h, w, cin, s int, beta float32) {
	a := col
	if gather {
		im2colRows(col, x, h, w, cin, s, m0, m1)
	} else {
		a = x[m0*kd:]
	}
	tb, ldb := blas.NoTrans, cout
	if transB {
		tb, ldb = blas.Trans, kd
	}
	gorgonia.WhichBLAS().Sgemm(blas.NoTrans, tb, m1-m0, cout, kd,
		1, a, kd, wt, ldb, beta, out[m0*cout:], cout)
}

// fillRows writes v into every row of dst (len(dst) a multiple of len(v)),
// doubling the filled part with each copy rather than copying row by row.
func fillRows(dst, v []float32) {
	if len(dst) == 0 {
		return
	}
	n := copy(dst, v)
	for n < len(dst) {
		n += copy(dst[n:], dst[:n])
	}
}

// forward computes out = conv(x) + bias for nb images of h x w pixels, or
// with add set adds that onto out. col is scratch of at least
// blockRows(kdim)*kdim values, or for row taps rowTapSlots(nb) row-tap
// matrices.
func (c *conv) forward(params, x, out, col []float32, nb, h, w int, add bool, e *exec) {
	rows := nb * c.outSize(h) * c.outSize(w)
	out = out[:rows*c.cout]
	bias := params[c.b : c.b+c.cout]
	if add {
		addRows(out, bias, c.cout, rows)
	} else {
		fillRows(out, bias)
	}
	e.mark(kindOther)
	if c.rowTaps(w) {
		rowTapConv(out, x, c.wk, col, nb, h, w, c.cin, c.cout, 1, e)
		return
	}
	blockGEMM(out, x, c.wk, col, rows, c.kdim(), c.cout, c.k == 3, false, h, w, c.cin, c.stride, 1, e)
}

// backward takes dout, the gradient with respect to the output of the
// forward call on x, and with params set adds the weight gradient to dwk
// and the bias gradient to the arena's grads. With dx non-nil it writes
// the gradient with respect to x there, or with addDX adds it. col is
// scratch of at least blockRows(kdim)*kdim and blockRows(9*cout)*9*cout
// values (for row taps rowTapSlots(nb) row-tap matrices of x and of dout),
// and for stride 2 of the whole output's im2col matrix; pw holds nb
// weight-gradient shares for row taps.
func (c *conv) backward(grads, x, dout, dx, col, pw []float32, nb, h, w int, params, addDX bool, e *exec) {
	impl := gorgonia.WhichBLAS()
	rows := nb * c.outSize(h) * c.outSize(w)
	dout = dout[:rows*c.cout]
	kd := c.kdim()
	if params {
		colSum(grads[c.b:c.b+c.cout], dout, rows, true)
		e.mark(kindOther)
		if c.k == 1 {
			impl.Sgemm(blas.Trans, blas.NoTrans, kd, c.cout, rows,
				1, x, kd, dout, c.cout, 1, c.dwk, c.cout)
			e.mark(kindConvGEMM)
		} else if c.rowTaps(w) {
			c.rowTapWeightGrad(x, dout, col, pw, nb, h, w, e)
		} else {
			// The columns are gathered again rather than kept from
			// forward: a block in cache costs less to rebuild than a
			// chunk's matrix costs to read back from memory.
			br := blockRows(kd)
			for m0 := 0; m0 < rows; m0 += br {
				m1 := min(m0+br, rows)
				e.im2colRows(col, x, h, w, c.cin, c.stride, m0, m1)
				e.mark(kindIm2col)
				impl.Sgemm(blas.Trans, blas.NoTrans, kd, c.cout, m1-m0,
					1, col, kd, dout[m0*c.cout:], c.cout, 1, c.dwk, c.cout)
				e.mark(kindConvGEMM)
			}
		}
	}
	if dx == nil {
		return
	}
	n := nb * h * w * c.cin
	var beta float32
	if addDX {
		beta = 1
	}
	if c.k == 1 {
		blockGEMM(dx[:n], dout, c.wk, col, rows, c.cout, c.cin, false, true, h, w, c.cout, 1, beta, e)
		return
	}
	if c.rowTaps(w) {
		// The input gradient of a stride-1 convolution is the
		// convolution of dout by the flipped kernel.
		rowTapConv(dx[:n], dout, c.wb, col, nb, h, w, c.cout, c.cin, beta, e)
		return
	}
	if c.stride == 1 {
		// A gather and a GEMM instead of a GEMM and a scatter-add.
		blockGEMM(dx[:n], dout, c.wb, col, rows, 9*c.cout, c.cin, true, false, h, w, c.cout, 1, beta, e)
		return
	}
	col = col[:rows*kd]
	impl.Sgemm(blas.NoTrans, blas.Trans, rows, kd, c.cout,
		1, dout, c.cout, c.wk, c.cout, 0, col, kd)
	e.mark(kindConvGEMM)
	if !addDX {
		clear(dx[:n])
	}
	ho, wo := c.outSize(h), c.outSize(w)
	e.run(nb, func(_, lo, hi int) {
		c.col2im(dx[lo*h*w*c.cin:hi*h*w*c.cin], col[lo*ho*wo*kd:hi*ho*wo*kd], hi-lo, h, w)
	})
	e.mark(kindIm2col)
}
