package nn

// GEMM is one matrix product of a training step, C[M,N] += A[M,K] B[K,N],
// repeated Count times. A step's list says where its arithmetic goes, and
// the largest entry is the size a benchmark sets a plain SGEMM beside.
type GEMM struct {
	Kind    string // the layer kind it belongs to, e.g. "dense", "conv3x3"
	M, N, K int
	Count   int
}

// FLOPs is 2*M*N*K*Count: a multiply and an add per inner-product term.
func (g GEMM) FLOPs() float64 {
	return 2 * float64(g.M) * float64(g.N) * float64(g.K) * float64(g.Count)
}

// StepGEMMs lists the matrix products of one LossGrad call at the given
// batch size: forward, parameter gradients and the gradients that flow
// back into earlier layers (never into x or the time features).
func (n *Net) StepGEMMs(batch int) []GEMM {
	if n.unet != nil {
		return n.unet.stepGEMMs(batch)
	}
	var out []GEMM
	for _, l := range n.layers {
		for s, src := range l.srcs {
			k := l.widths[s]
			out = append(out,
				GEMM{Kind: "dense", M: batch, N: l.out, K: k, Count: 1}, // forward
				GEMM{Kind: "dense", M: k, N: l.out, K: batch, Count: 1}) // weight gradient
			if src >= 0 {
				out = append(out, GEMM{Kind: "dense", M: batch, N: k, K: l.out, Count: 1})
			}
		}
	}
	return out
}

// StepFLOPs is the sum of StepGEMMs' FLOPs: the arithmetic a step costs,
// leaving out the elementwise work, which is small beside it.
func (n *Net) StepFLOPs(batch int) float64 {
	var f float64
	for _, g := range n.StepGEMMs(batch) {
		f += g.FLOPs()
	}
	return f
}

// stepGEMMs lists a unet step's products: every convolution's forward,
// weight gradient and input gradient (the first convolution's input
// gradient is not needed), and the time-embedding layers.
func (u *unet) stepGEMMs(batch int) []GEMM {
	var out []GEMM
	addConv := func(c *conv, h, w int, wantDX bool) {
		kind := "conv1x1"
		if c.k == 3 {
			kind = "conv3x3"
		}
		rows := batch * c.outSize(h) * c.outSize(w)
		out = append(out,
			GEMM{Kind: kind, M: rows, N: c.cout, K: c.kdim(), Count: 1},
			GEMM{Kind: kind, M: c.cout, N: c.kdim(), K: rows, Count: 1})
		if wantDX {
			out = append(out, GEMM{Kind: kind, M: rows, N: c.kdim(), K: c.cout, Count: 1})
		}
	}
	addLinear := func(l *linear, wantDX bool) {
		out = append(out,
			GEMM{Kind: "dense", M: batch, N: l.out, K: l.in, Count: 1},
			GEMM{Kind: "dense", M: l.out, N: l.in, K: batch, Count: 1})
		if wantDX {
			out = append(out, GEMM{Kind: "dense", M: batch, N: l.in, K: l.out, Count: 1})
		}
	}
	addLinear(&u.te0, false)
	addLinear(&u.te2, true)
	addConv(&u.inc, u.h, u.w, false)
	for _, b := range u.blocks() {
		addConv(&b.conv1, b.h, b.w, true)
		addConv(&b.conv2, b.h, b.w, true)
		if b.skip != nil {
			addConv(b.skip, b.h, b.w, true)
		}
		addLinear(&b.temb, true)
	}
	for i, c := range u.downs {
		addConv(c, u.h>>i, u.w>>i, true)
	}
	addConv(&u.outConv, u.h, u.w, true)
	return out
}
