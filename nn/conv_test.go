package nn

import (
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func randVec(seed uint64, n int, scale float64) []float32 {
	s := rng.New(seed, rng.PurposeBench, 77)
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(scale * s.Norm())
	}
	return v
}

// gorgoniaVJP builds y = op(inputs...) as a gorgonia graph and returns y
// and the gradients of sum(y * r) with respect to every input, from
// gorgonia.Grad and its tape machine.
func gorgoniaVJP(t *testing.T, inputs [][]float32, shapes [][]int, r []float32,
	op func(g *gorgonia.ExprGraph, in []*gorgonia.Node) (*gorgonia.Node, error)) (y []float32, grads [][]float32) {
	t.Helper()
	g := gorgonia.NewGraph()
	var nodes []*gorgonia.Node
	for i, in := range inputs {
		sh := shapes[i]
		nodes = append(nodes, gorgonia.NewTensor(g, tensor.Float32, len(sh), gorgonia.WithShape(sh...),
			gorgonia.WithName(fmt.Sprintf("in%d", i)),
			gorgonia.WithValue(tensor.New(tensor.WithShape(sh...), tensor.WithBacking(append([]float32(nil), in...))))))
	}
	out, err := op(g, nodes)
	if err != nil {
		t.Fatal(err)
	}
	rn := gorgonia.NewTensor(g, tensor.Float32, len(out.Shape()), gorgonia.WithShape(out.Shape()...), gorgonia.WithName("r"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(r))))
	prod, err := gorgonia.HadamardProd(out, rn)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := gorgonia.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	gn, err := gorgonia.Grad(cost, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	y, err = nodeData(out)
	if err != nil {
		t.Fatal(err)
	}
	y = append([]float32(nil), y...)
	for _, n := range gn {
		d, err := nodeData(n)
		if err != nil {
			t.Fatal(err)
		}
		grads = append(grads, append([]float32(nil), d...))
	}
	return y, grads
}

// toNHWC and toNCHW convert nb images between the API's layout and the
// layers'.
func toNHWC(x []float32, nb, c, hw int) []float32 {
	out := make([]float32, len(x))
	nchwToNHWC(out, x, nb, c, hw)
	return out
}

func toNCHW(x []float32, nb, c, hw int) []float32 {
	out := make([]float32, len(x))
	nhwcToNCHW(out, x, nb, c, hw)
	return out
}

func compareVec(t *testing.T, what string, got, want []float32) {
	t.Helper()
	compare(t, what, got, want, indexLabel)
}

type convCase struct {
	nb, cin, cout, k, stride, h, w int
}

var convCases = []convCase{
	{2, 3, 5, 3, 1, 5, 4},
	{1, 1, 4, 3, 1, 6, 6},
	{3, 4, 4, 3, 2, 6, 6},
	{2, 3, 2, 3, 2, 7, 5}, // odd sizes at stride 2
	{2, 6, 3, 1, 1, 3, 4},
	{1, 8, 8, 3, 1, 1, 1},  // a single pixel: every tap but the centre is padding
	{2, 3, 5, 3, 1, 3, 16}, // wide enough for row taps
	{1, 2, 4, 3, 1, 5, 14}, // row taps at the narrowest width
}

// runConv runs the fused conv layer on NCHW data: forward, then backward
// of dy (NCHW), returning y, dW (torch layout), db and dx, all NCHW.
func runConv(tc convCase, wt, bias, x, dy []float32) (y, dw, db, dx []float32) {
	c := conv{cin: tc.cin, cout: tc.cout, k: tc.k, stride: tc.stride, w: 0, b: len(wt)}
	c.wk = make([]float32, len(wt))
	c.dwk = make([]float32, len(wt))
	if tc.k == 3 && tc.stride == 1 {
		c.wb = make([]float32, len(wt))
	}
	params := append(append([]float32(nil), wt...), bias...)
	grads := make([]float32, len(params))
	c.loadWeights(params)
	ho, wo := c.outSize(tc.h), c.outSize(tc.w)
	xin := toNHWC(x, tc.nb, tc.cin, tc.h*tc.w)
	col := make([]float32, tc.nb*max(ho*wo*c.kdim(), tc.h*tc.w*9*tc.cout, rowTapSlots(tc.nb)*rowTapLen(tc.h, tc.w, max(tc.cin, tc.cout))))
	out := make([]float32, tc.nb*ho*wo*tc.cout)
	c.forward(params, xin, out, col, tc.nb, tc.h, tc.w, false, nil)
	dout := toNHWC(dy, tc.nb, tc.cout, ho*wo)
	dxin := make([]float32, len(xin))
	for i := range dxin {
		dxin[i] = float32(math.NaN()) // written, not added to
	}
	pw := make([]float32, tc.nb*len(wt))
	c.backward(grads, xin, dout, dxin, col, pw, tc.nb, tc.h, tc.w, true, false, nil)
	c.storeGrad(grads)
	return toNCHW(out, tc.nb, tc.cout, ho*wo), grads[:len(wt)], grads[len(wt):], toNCHW(dxin, tc.nb, tc.cin, tc.h*tc.w)
}

// TestConvMatchesGorgonia holds the convolution's forward pass and its
// weight, bias and input gradients to gorgonia.Conv2d differentiated by
// gorgonia.Grad.
func TestConvMatchesGorgonia(t *testing.T) {
	for i, tc := range convCases {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			s := uint64(i * 10)
			wt := randVec(s+1, tc.cout*tc.cin*tc.k*tc.k, 0.5)
			bias := randVec(s+2, tc.cout, 0.5)
			x := randVec(s+3, tc.nb*tc.cin*tc.h*tc.w, 1)
			pad := (tc.k - 1) / 2
			ho, wo := (tc.h+2*pad-tc.k)/tc.stride+1, (tc.w+2*pad-tc.k)/tc.stride+1
			r := randVec(s+4, tc.nb*tc.cout*ho*wo, 1)
			y, dw, db, dx := runConv(tc, wt, bias, x, r)
			gy, gg := gorgoniaVJP(t, [][]float32{x, wt, bias},
				[][]int{{tc.nb, tc.cin, tc.h, tc.w}, {tc.cout, tc.cin, tc.k, tc.k}, {1, tc.cout, 1, 1}}, r,
				func(g *gorgonia.ExprGraph, in []*gorgonia.Node) (*gorgonia.Node, error) {
					c, err := gorgonia.Conv2d(in[0], in[1], tensor.Shape{tc.k, tc.k}, []int{pad, pad}, []int{tc.stride, tc.stride}, []int{1, 1})
					if err != nil {
						return nil, err
					}
					return gorgonia.BroadcastAdd(c, in[2], nil, []byte{0, 2, 3})
				})
			compareVec(t, "y", y, gy)
			compareVec(t, "dx", dx, gg[0])
			compareVec(t, "dW", dw, gg[1])
			compareVec(t, "db", db, gg[2])
		})
	}
}

// TestConvMatchesFiniteDifferences checks the same gradients against
// central differences of the float64 direct convolution.
func TestConvMatchesFiniteDifferences(t *testing.T) {
	const h = 1e-4
	for i, tc := range convCases {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			s := uint64(i*10 + 5)
			wt := randVec(s+1, tc.cout*tc.cin*tc.k*tc.k, 0.5)
			bias := randVec(s+2, tc.cout, 0.5)
			x := randVec(s+3, tc.nb*tc.cin*tc.h*tc.w, 1)
			pad := (tc.k - 1) / 2
			ho, wo := (tc.h+2*pad-tc.k)/tc.stride+1, (tc.w+2*pad-tc.k)/tc.stride+1
			r := randVec(s+4, tc.nb*tc.cout*ho*wo, 1)
			_, dw, db, dx := runConv(tc, wt, bias, x, r)
			w64, b64, x64 := f64(wt), f64(bias), f64(x)
			f := func() float64 {
				y := refConv(ref4{x64, tc.nb, tc.cin, tc.h, tc.w}, w64, b64, tc.cout, tc.k, tc.stride)
				var l float64
				for i, v := range y.d {
					l += v * float64(r[i])
				}
				return l
			}
			for _, p := range []struct {
				name string
				v    []float64
				g    []float32
			}{{"x", x64, dx}, {"W", w64, dw}, {"b", b64, db}} {
				for j := range p.v {
					o := p.v[j]
					p.v[j] = o + h
					lp := f()
					p.v[j] = o - h
					lm := f()
					p.v[j] = o
					fd := (lp - lm) / (2 * h)
					if math.Abs(float64(p.g[j])-fd) > 1e-3*math.Abs(fd)+1e-4 {
						t.Fatalf("d/d%s[%d]: fused %g, finite differences %g", p.name, j, p.g[j], fd)
					}
				}
			}
		})
	}
}

type gnCase struct{ nb, c, groups, h, w int }

// The last case normalises two values per group, where 1/std is large
// and gorgonia's float32 arithmetic drifts by 1e-4: finite differences only.
var gnCases = []gnCase{{2, 8, 4, 3, 5}, {1, 6, 1, 4, 4}, {3, 4, 4, 2, 3}, {2, 16, 8, 2, 2}, {2, 16, 8, 1, 1}}

// runGN runs the fused group norm on NCHW data and backward of dz (NCHW).
func runGN(tc gnCase, gamma, beta, x, dz []float32) (z, dg, db, dx []float32) {
	g := groupNorm{c: tc.c, groups: tc.groups, w: 0, b: tc.c}
	params := append(append([]float32(nil), gamma...), beta...)
	grads := make([]float32, len(params))
	hw := tc.h * tc.w
	xin := toNHWC(x, tc.nb, tc.c, hw)
	out := make([]float32, len(xin))
	stats := make([]float64, 2*tc.nb*tc.groups)
	sc := newExec(tc.c)
	g.forward(params, xin, out, stats, tc.nb, hw, sc)
	dxin := make([]float32, len(xin))
	if dz != nil {
		g.backward(params, grads, xin, toNHWC(dz, tc.nb, tc.c, hw), dxin, stats, tc.nb, hw, true, false, sc)
	}
	return toNCHW(out, tc.nb, tc.c, hw), grads[:tc.c], grads[tc.c:], toNCHW(dxin, tc.nb, tc.c, hw)
}

// TestGroupNormMatchesGorgonia holds GroupNorm to gorgonia's GroupNorm op
// with (1, C, 1, 1) affine parameters, the shape that op needs.
func TestGroupNormMatchesGorgonia(t *testing.T) {
	// gorgonia's GroupNorm logs on every backward pass.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	for i, tc := range gnCases[:len(gnCases)-1] {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			s := uint64(100 + i*10)
			gamma := randVec(s+1, tc.c, 1)
			beta := randVec(s+2, tc.c, 1)
			x := randVec(s+3, tc.nb*tc.c*tc.h*tc.w, 2)
			for j := range x {
				x[j] += 3 // a mean well away from zero
			}
			r := randVec(s+4, len(x), 1)
			z, dg, db, dx := runGN(tc, gamma, beta, x, r)
			gz, gg := gorgoniaVJP(t, [][]float32{x, gamma, beta},
				[][]int{{tc.nb, tc.c, tc.h, tc.w}, {1, tc.c, 1, 1}, {1, tc.c, 1, 1}}, r,
				func(g *gorgonia.ExprGraph, in []*gorgonia.Node) (*gorgonia.Node, error) {
					return gorgonia.GroupNorm(in[0], in[1], in[2], tc.groups, tc.c, groupNormEps)
				})
			compareVec(t, "z", z, gz)
			compareVec(t, "dx", dx, gg[0])
			compareVec(t, "dgamma", dg, gg[1])
			compareVec(t, "dbeta", db, gg[2])
		})
	}
}

// TestGroupNormMatchesFiniteDifferences checks GroupNorm's gradients
// against central differences of the float64 two-pass definition.
func TestGroupNormMatchesFiniteDifferences(t *testing.T) {
	const h = 1e-5
	for i, tc := range gnCases {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			s := uint64(200 + i*10)
			gamma := randVec(s+1, tc.c, 1)
			beta := randVec(s+2, tc.c, 1)
			x := randVec(s+3, tc.nb*tc.c*tc.h*tc.w, 2)
			r := randVec(s+4, len(x), 1)
			z, dg, db, dx := runGN(tc, gamma, beta, x, r)
			g64, b64, x64 := f64(gamma), f64(beta), f64(x)
			want := refGroupNorm(ref4{x64, tc.nb, tc.c, tc.h, tc.w}, tc.groups, g64, b64)
			for j, v := range want.d {
				if !closeTo(float64(z[j]), v, 1) {
					t.Fatalf("z[%d] = %g, want %g", j, z[j], v)
				}
			}
			f := func() float64 {
				y := refGroupNorm(ref4{x64, tc.nb, tc.c, tc.h, tc.w}, tc.groups, g64, b64)
				var l float64
				for i, v := range y.d {
					l += v * float64(r[i])
				}
				return l
			}
			for _, p := range []struct {
				name string
				v    []float64
				g    []float32
			}{{"x", x64, dx}, {"gamma", g64, dg}, {"beta", b64, db}} {
				for j := range p.v {
					o := p.v[j]
					p.v[j] = o + h
					lp := f()
					p.v[j] = o - h
					lm := f()
					p.v[j] = o
					fd := (lp - lm) / (2 * h)
					if math.Abs(float64(p.g[j])-fd) > 1e-3*math.Abs(fd)+1e-3 {
						t.Fatalf("d/d%s[%d]: fused %g, finite differences %g", p.name, j, p.g[j], fd)
					}
				}
			}
		})
	}
}

// TestUpsampleConcatMatchesGorgonia holds the up path's input, the
// channel concatenation of a nearest-upsampled tensor and a skip, and its
// adjoint to gorgonia.Upsample2D and gorgonia.Concat.
func TestUpsampleConcatMatchesGorgonia(t *testing.T) {
	for _, up := range []bool{true, false} {
		t.Run(fmt.Sprint("up=", up), func(t *testing.T) {
			nb, cc, cs, h, w := 2, 3, 2, 4, 6
			lh, lw := h, w
			if up {
				lh, lw = h/2, w/2
			}
			cur := randVec(1, nb*cc*lh*lw, 1)
			skip := randVec(2, nb*cs*h*w, 1)
			r := randVec(3, nb*(cc+cs)*h*w, 1)
			cat := make([]float32, len(r))
			fillCat(cat, toNHWC(cur, nb, cc, lh*lw), toNHWC(skip, nb, cs, h*w), nb, h, w, cc, cs, up)
			dcur := make([]float32, len(cur))
			dskip := make([]float32, len(skip))
			for i := range dcur {
				dcur[i] = 7 // overwritten, not added to
			}
			splitCat(dcur, dskip, toNHWC(r, nb, cc+cs, h*w), nb, h, w, cc, cs, up)
			gy, gg := gorgoniaVJP(t, [][]float32{cur, skip}, [][]int{{nb, cc, lh, lw}, {nb, cs, h, w}}, r,
				func(g *gorgonia.ExprGraph, in []*gorgonia.Node) (*gorgonia.Node, error) {
					a := in[0]
					if up {
						var err error
						if a, err = gorgonia.Upsample2D(a, 2); err != nil {
							return nil, err
						}
					}
					return gorgonia.Concat(1, a, in[1])
				})
			compareVec(t, "cat", toNCHW(cat, nb, cc+cs, h*w), gy)
			compareVec(t, "dcur", toNCHW(dcur, nb, cc, lh*lw), gg[0])
			compareVec(t, "dskip", toNCHW(dskip, nb, cs, h*w), gg[1])
		})
	}
}
