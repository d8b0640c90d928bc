package nn

import (
	"fmt"
	"math"
)

// A float64 reimplementation of the unet written straight from its torch
// definition: NCHW tensors, torch weight layouts, direct convolution loops.
// It shares no code with the fused passes, so agreement checks the
// channel-last layout, the weight permutation and every backward formula.

type ref4 struct {
	d          []float64
	n, c, h, w int
}

func (t ref4) at(b, c, y, x int) float64 { return t.d[((b*t.c+c)*t.h+y)*t.w+x] }

func newRef4(n, c, h, w int) ref4 { return ref4{make([]float64, n*c*h*w), n, c, h, w} }

// refParams maps tensor names to float64 copies of a net's parameters.
func refParams(n *Net) map[string][]float64 {
	out := map[string][]float64{}
	for _, p := range n.ParamNames() {
		v := make([]float64, p.Len)
		for i := range v {
			v[i] = float64(n.Params()[p.Offset+i])
		}
		out[p.Name] = v
	}
	return out
}

func refConv(x ref4, wt, bias []float64, cout, k, stride int) ref4 {
	pad := (k - 1) / 2
	ho, wo := (x.h+2*pad-k)/stride+1, (x.w+2*pad-k)/stride+1
	y := newRef4(x.n, cout, ho, wo)
	for b := range x.n {
		for o := range cout {
			for oy := range ho {
				for ox := range wo {
					s := bias[o]
					for ci := range x.c {
						for ky := range k {
							for kx := range k {
								iy, ix := oy*stride+ky-pad, ox*stride+kx-pad
								if iy < 0 || iy >= x.h || ix < 0 || ix >= x.w {
									continue
								}
								s += wt[((o*x.c+ci)*k+ky)*k+kx] * x.at(b, ci, iy, ix)
							}
						}
					}
					y.d[((b*cout+o)*ho+oy)*wo+ox] = s
				}
			}
		}
	}
	return y
}

func refGroupNorm(x ref4, groups int, gamma, beta []float64) ref4 {
	y := newRef4(x.n, x.c, x.h, x.w)
	cg, hw := x.c/groups, x.h*x.w
	for b := range x.n {
		for g := range groups {
			blk := x.d[(b*x.c+g*cg)*hw : (b*x.c+(g+1)*cg)*hw]
			var m float64
			for _, v := range blk {
				m += v
			}
			m /= float64(len(blk))
			var v2 float64
			for _, v := range blk {
				v2 += (v - m) * (v - m)
			}
			r := 1 / math.Sqrt(v2/float64(len(blk))+1e-5)
			for i, v := range blk {
				c := g*cg + i/hw
				y.d[(b*x.c+g*cg)*hw+i] = (v-m)*r*gamma[c] + beta[c]
			}
		}
	}
	return y
}

func refSiLU(x ref4) ref4 {
	y := newRef4(x.n, x.c, x.h, x.w)
	for i, v := range x.d {
		y.d[i] = v / (1 + math.Exp(-v))
	}
	return y
}

func refLinear(x []float64, rows, in int, wt, bias []float64) []float64 {
	out := len(bias)
	y := make([]float64, rows*out)
	for r := range rows {
		for o := range out {
			s := bias[o]
			for i := range in {
				s += wt[o*in+i] * x[r*in+i]
			}
			y[r*out+o] = s
		}
	}
	return y
}

func refUpsample(x ref4) ref4 {
	y := newRef4(x.n, x.c, 2*x.h, 2*x.w)
	for b := range x.n {
		for c := range x.c {
			for oy := range y.h {
				for ox := range y.w {
					y.d[((b*x.c+c)*y.h+oy)*y.w+ox] = x.at(b, c, oy/2, ox/2)
				}
			}
		}
	}
	return y
}

func refCat(a, b ref4) ref4 {
	y := newRef4(a.n, a.c+b.c, a.h, a.w)
	hw := a.h * a.w
	for i := range a.n {
		copy(y.d[i*y.c*hw:], a.d[i*a.c*hw:(i+1)*a.c*hw])
		copy(y.d[(i*y.c+a.c)*hw:], b.d[i*b.c*hw:(i+1)*b.c*hw])
	}
	return y
}

func refAdd(a, b ref4) ref4 {
	y := newRef4(a.n, a.c, a.h, a.w)
	for i := range a.d {
		y.d[i] = a.d[i] + b.d[i]
	}
	return y
}

func refResBlock(p map[string][]float64, name string, x ref4, cout, groups int, emb []float64, embW int) ref4 {
	h := refSiLU(refGroupNorm(x, groups, p[name+".norm1.weight"], p[name+".norm1.bias"]))
	h = refConv(h, p[name+".conv1.weight"], p[name+".conv1.bias"], cout, 3, 1)
	tb := refLinear(emb, x.n, embW, p[name+".temb.weight"], p[name+".temb.bias"])
	hw := h.h * h.w
	for b := range x.n {
		for c := range cout {
			for q := range hw {
				h.d[(b*cout+c)*hw+q] += tb[b*cout+c]
			}
		}
	}
	h = refSiLU(refGroupNorm(h, groups, p[name+".norm2.weight"], p[name+".norm2.bias"]))
	h = refConv(h, p[name+".conv2.weight"], p[name+".conv2.bias"], cout, 3, 1)
	skip := x
	if x.c != cout {
		skip = refConv(x, p[name+".skip.weight"], p[name+".skip.bias"], cout, 1, 1)
	}
	return refAdd(skip, h)
}

// refUNet evaluates the unet of spec (defaulted) with parameters p on a
// batch: t has B entries, x is B*C*H*W in NCHW; the result is NCHW too.
func refUNet(spec Spec, p map[string][]float64, t []float32, x []float64) []float64 {
	s := spec.WithDefaults()
	B, L, G := len(t), len(s.Channels), s.Groups
	half := s.TimeEmbed / 2
	tf := make([]float64, B*s.TimeEmbed)
	for b, tb := range t {
		for i := range half {
			f := 1.0
			if half > 1 {
				f = math.Exp(-math.Log(10000) * float64(i) / float64(half-1))
			}
			tf[b*s.TimeEmbed+i] = math.Sin(float64(tb) * f)
			tf[b*s.TimeEmbed+half+i] = math.Cos(float64(tb) * f)
		}
	}
	td := 4 * s.Channels[0]
	e := refLinear(tf, B, s.TimeEmbed, p["time_embed.0.weight"], p["time_embed.0.bias"])
	for i, v := range e {
		e[i] = v / (1 + math.Exp(-v))
	}
	e = refLinear(e, B, td, p["time_embed.2.weight"], p["time_embed.2.bias"])

	in := ref4{append([]float64(nil), x...), B, s.Image[0], s.Image[1], s.Image[2]}
	inc := refConv(in, p["inc.weight"], p["inc.bias"], s.Channels[0], 3, 1)
	cur := inc
	var skips []ref4
	for i := 0; i < L-1; i++ {
		cur = refResBlock(p, fmt.Sprintf("down.%d", i), cur, s.Channels[i], G, e, td)
		skips = append(skips, cur)
		cur = refConv(cur, p[fmt.Sprintf("downsample.%d.weight", i)], p[fmt.Sprintf("downsample.%d.bias", i)], s.Channels[i], 3, 2)
	}
	cur = refResBlock(p, "mid", cur, s.Channels[L-1], G, e, td)
	for j := 0; j < L-1; j++ {
		i := L - 2 - j
		cur = refResBlock(p, fmt.Sprintf("up.%d", j), refCat(refUpsample(cur), skips[i]), s.Channels[i], G, e, td)
	}
	cur = refResBlock(p, fmt.Sprintf("up.%d", L-1), refCat(cur, inc), s.Channels[0], G, e, td)
	cur = refSiLU(refGroupNorm(cur, G, p["out_norm.weight"], p["out_norm.bias"]))
	return refConv(cur, p["out_conv.weight"], p["out_conv.bias"], s.Image[0], 3, 1).d
}
