package nn

import (
	"math"
	"testing"
)

// kernelSet is one implementation of the elementwise kernels.
type kernelSet struct {
	name      string
	exp       func(dst, x []float32)
	sigmoid   func(dst, x []float32)
	silu      func(a, s, z []float32)
	siluFwd   func(a, z []float32)
	siluGrad  func(g, z, s []float32)
	tanh      func(dst, x []float32)
	tanhGrad  func(g, a []float32)
	signScale func(dst, src, z []float32, neg float32)
	adam      func(params, grads, m, v []float32, c adamCoef)
}

var goKernels = kernelSet{"go", expGo, sigmoidGo, siluGo, siluFwdGo, siluGradGo, tanhGo, tanhGradGo, signScaleGo, adamGo}

var dispatchKernels = kernelSet{"dispatch", expVec, sigmoidVec, siluVec, siluFwdVec, siluGradVec, tanhVec, tanhGradVec, signScaleVec, adamVec}

// The bounds documented in kernels.go: relative error against float64
// where the result is a normal float32, and an absolute one below that
// (times 1+|x| for SiLU, whose product rounds into the subnormals too).
const (
	expRelTol     = 1.2e-7
	sigmoidRelTol = 2.0e-7
	siluRelTol    = 2.5e-7
	tanhRelTol    = 1.8e-7
	subnormalTol  = 0x1p-149
	smallestNorm  = 0x1p-126
)

// forwardKernel names one forward kernel of a set and its bound.
type forwardKernel struct {
	name  string
	rel   float64
	scale bool // the absolute bound scales with 1+|x|
	run   func(k kernelSet, dst, aux, x []float32)
}

var forwardKernels = []forwardKernel{
	{"exp", expRelTol, false, func(k kernelSet, dst, _, x []float32) { k.exp(dst, x) }},
	{"sigmoid", sigmoidRelTol, false, func(k kernelSet, dst, _, x []float32) { k.sigmoid(dst, x) }},
	{"silu", siluRelTol, true, func(k kernelSet, dst, aux, x []float32) { k.silu(dst, aux, x) }},
	{"tanh", tanhRelTol, false, func(k kernelSet, dst, _, x []float32) { k.tanh(dst, x) }},
}

// references fills want[f][j] with forward kernel f's float64 value at
// x[j] (in forwardKernels' order), and normal[f][j] with whether the
// relative bound applies there: the result, and for SiLU the sigmoid, is a
// normal float32.
func references(want [][]float64, normal [][]bool, x []float32) {
	for j, v := range x {
		x64 := float64(v)
		sig := 1 / (1 + math.Exp(-x64))
		w := [4]float64{math.Exp(x64), sig, x64 * sig, math.Tanh(x64)}
		for f := range w {
			want[f][j] = w[f]
			normal[f][j] = math.Abs(w[f]) >= smallestNorm
		}
		normal[2][j] = normal[2][j] && sig >= smallestNorm
	}
}

// errStats records the worst relative error of one kernel, and how far
// it is from the Go kernel.
type errStats struct {
	maxRel    float64
	worstX    float32
	worstGot  float32
	worstWant float64
	differ    int     // results not bitwise equal to the Go kernel's
	maxApart  float64 // in ulps of the Go kernel's result, where normal
}

// within reports whether got is within f's bound of want at x; NaN wants
// NaN, and a result that overflows float32 must be the Inf it rounds to.
func (f forwardKernel) within(x, got float32, want float64) bool {
	abs := subnormalTol
	if f.scale {
		abs *= 1 + math.Abs(float64(x))
	}
	if math.Abs(float64(got)-want) <= f.rel*math.Abs(want)+abs {
		return true
	}
	if math.IsNaN(want) {
		return math.IsNaN(float64(got))
	}
	w32 := float32(want)
	return (math.IsInf(float64(w32), 0) || math.IsInf(float64(got), 0)) && got == w32
}

// agree reports whether two implementations' results are within twice
// the bound of each other (each may be off by the bound, on either side
// of want).
func (f forwardKernel) agree(x, got, other float32, want float64) bool {
	if math.IsNaN(float64(got)) && math.IsNaN(float64(other)) {
		return true
	}
	g2 := forwardKernel{rel: 2 * f.rel, scale: f.scale}
	return g2.within(x, got, float64(other)) && !math.IsInf(float64(got)-float64(other), 0) ||
		got == other
}

func ulpsOff(got float32, want float64) float64 {
	w := float32(want)
	ulp := math.Nextafter32(float32(math.Abs(float64(w))), float32(math.Inf(1))) - float32(math.Abs(float64(w)))
	return math.Abs(float64(got)-float64(w)) / float64(ulp)
}

// specialInputs are the edge cases of the kernels: zeros, subnormals,
// extremes, infinities, NaN, the saturation thresholds of exp and the
// branch point of tanh, with their neighbours.
func specialInputs() []float32 {
	inf := float32(math.Inf(1))
	xs := []float32{0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, 0x1p-127, smallestNorm,
		math.MaxFloat32, inf, float32(math.NaN()), 1, 0.5, 2, 10, 20, 30, 1e-3, 1e-10}
	for _, c := range []float32{88.72283, 88.722839, 89, 87.33655, 87.3365, 103.97208, 103.9, 104, 104.5, 150,
		tanhSmall, 9.01, 17, 16.64} {
		xs = append(xs, c, math.Nextafter32(c, 0), math.Nextafter32(c, inf))
	}
	n := len(xs)
	for _, x := range xs[:n] {
		xs = append(xs, -x)
	}
	return xs
}

// TestKernelAccuracy sweeps every 257th float32 bit pattern (about 17
// million values, all exponents and both signs) and the special values
// through the Go and assembly forward kernels, checks each against
// float64 math within its bound, and the assembly against the Go kernels
// within twice the bound. -short sweeps every 4099th.
func TestKernelAccuracy(t *testing.T) {
	stride := uint64(257)
	if testing.Short() {
		stride = 4099
	}
	sets := kernelSets()
	if n := len(sets); n > 2 {
		sets = sets[:n-1] // the dispatcher is one of the others
	}
	const chunk = 4096
	in := make([]float32, 0, chunk)
	want := make([][]float64, len(forwardKernels))
	normal := make([][]bool, len(forwardKernels))
	for f := range want {
		want[f] = make([]float64, chunk)
		normal[f] = make([]bool, chunk)
	}
	outs := make([][]float32, len(sets))
	for i := range outs {
		outs[i] = make([]float32, chunk)
	}
	aux := make([]float32, chunk)
	stats := make([][]errStats, len(sets))
	for i := range stats {
		stats[i] = make([]errStats, len(forwardKernels))
	}
	failures, checked := 0, 0
	fail := func(format string, args ...any) {
		if failures < 20 {
			t.Errorf(format, args...)
		}
		failures++
	}
	flush := func() {
		references(want, normal, in)
		checked += len(in)
		for fi, f := range forwardKernels {
			w, nm := want[fi][:len(in)], normal[fi][:len(in)]
			for si, k := range sets {
				out := outs[si][:len(in)]
				f.run(k, out, aux, in)
				st := &stats[si][fi]
				for j, x := range in {
					got := out[j]
					if !f.within(x, got, w[j]) {
						fail("%s: %s(%g) = %g, want %.9g", k.name, f.name, x, got, w[j])
						continue
					}
					if si > 0 && math.Float32bits(got) != math.Float32bits(outs[0][j]) {
						st.differ++
						if !f.agree(x, got, outs[0][j], w[j]) {
							fail("%s: %s(%g) = %g, the Go kernel gives %g", k.name, f.name, x, got, outs[0][j])
						}
						if u := ulpsOff(got, float64(outs[0][j])); nm[j] && u > st.maxApart {
							st.maxApart = u
						}
					}
					if nm[j] && !math.IsInf(float64(got), 0) {
						if r := math.Abs(float64(got)-w[j]) / math.Abs(w[j]); r > st.maxRel {
							st.maxRel, st.worstX, st.worstGot, st.worstWant = r, x, got, w[j]
						}
					}
				}
			}
		}
		in = in[:0]
	}
	in = append(in, specialInputs()...)
	flush()
	for b := uint64(0); b < 1<<32; b += stride {
		in = append(in, math.Float32frombits(uint32(b)))
		if len(in) == chunk {
			flush()
		}
	}
	flush()
	for si, k := range sets {
		for fi, f := range forwardKernels {
			st := stats[si][fi]
			t.Logf("%-4s %-7s max relative error %.3g (%.0f ulp) at x = %g, of %d values; %d differ from go, by at most %.0f ulp",
				k.name, f.name, st.maxRel, ulpsOff(st.worstGot, st.worstWant), st.worstX, checked, st.differ, st.maxApart)
		}
	}
}

func TestKernelExactValues(t *testing.T) {
	inf := float32(math.Inf(1))
	negZero := float32(math.Copysign(0, -1))
	nan := float32(math.NaN())
	tests := []struct {
		kernel string
		x      float32
		want   float32
	}{
		{"exp", 0, 1},
		{"exp", negZero, 1},
		{"exp", inf, inf},
		{"exp", -inf, 0},
		{"exp", nan, nan},
		{"exp", 88.72283, 3.4027985e38},
		{"exp", math.Nextafter32(88.72283, inf), inf},
		{"exp", -104, 0},
		{"exp", -103.9, math.SmallestNonzeroFloat32}, // e^-103.9 = 7.5e-46 rounds up to 2^-149
		{"sigmoid", 0, 0.5},
		{"sigmoid", negZero, 0.5},
		{"sigmoid", inf, 1},
		{"sigmoid", -inf, 0},
		{"sigmoid", nan, nan},
		{"sigmoid", 20, 1},
		{"sigmoid", -103.9, math.SmallestNonzeroFloat32},
		{"tanh", 0, 0},
		{"tanh", negZero, negZero},
		{"tanh", inf, 1},
		{"tanh", -inf, -1},
		{"tanh", nan, nan},
		{"tanh", 10, 1},
		{"tanh", -10, -1},
		{"tanh", math.SmallestNonzeroFloat32, math.SmallestNonzeroFloat32},
		{"tanh", -1e-30, -1e-30},
		{"silu", 0, 0},
		{"silu", inf, inf},
		{"silu", 20, 20},
	}
	for _, k := range kernelSets() {
		for _, tc := range tests {
			var got [1]float32
			x := []float32{tc.x}
			switch tc.kernel {
			case "exp":
				k.exp(got[:], x)
			case "sigmoid":
				k.sigmoid(got[:], x)
			case "tanh":
				k.tanh(got[:], x)
			case "silu":
				k.silu(got[:], make([]float32, 1), x)
			}
			same := math.Float32bits(got[0]) == math.Float32bits(tc.want) ||
				math.IsNaN(float64(got[0])) && math.IsNaN(float64(tc.want))
			if !same {
				t.Errorf("%s: %s(%g) = %g (%#08x), want %g (%#08x)", k.name, tc.kernel, tc.x,
					got[0], math.Float32bits(got[0]), tc.want, math.Float32bits(tc.want))
			}
		}
	}
}

// kernelInputs returns n pseudo-random pre-activations with both signs,
// a spread of magnitudes, and the odd zero.
func kernelInputs(n int, seed uint32) []float32 {
	xs := make([]float32, n)
	s := seed*2654435761 + 1
	for i := range xs {
		s ^= s << 13
		s ^= s >> 17
		s ^= s << 5
		xs[i] = (float32(s>>8)/(1<<24) - 0.5) * 12
		if s%17 == 0 {
			xs[i] = 0
		}
	}
	return xs
}

// TestKernelLengthsAndOffsets runs every kernel on lengths 0..70 at
// offsets 0..3 into a guarded buffer, out of place and in place: every
// element must get the result it gets alone (the tails of the vector
// loops compute like the body), and nothing outside the slice changes.
func TestKernelLengthsAndOffsets(t *testing.T) {
	const guard = -12345.5
	type op struct {
		name string
		// run applies the kernel to the inputs at [off, off+n) of the
		// buffers and writes its outputs there (out, and aux for SiLU's s).
		run func(k kernelSet, out, aux, x, y []float32)
	}
	ops := []op{
		{"exp", func(k kernelSet, out, _, x, _ []float32) { k.exp(out, x) }},
		{"sigmoid", func(k kernelSet, out, _, x, _ []float32) { k.sigmoid(out, x) }},
		{"silu", func(k kernelSet, out, aux, x, _ []float32) { k.silu(out, aux, x) }},
		{"siluFwd", func(k kernelSet, out, _, x, _ []float32) { k.siluFwd(out, x) }},
		{"tanh", func(k kernelSet, out, _, x, _ []float32) { k.tanh(out, x) }},
		{"siluGrad", func(k kernelSet, out, _, x, y []float32) {
			copy(out, y)
			k.siluGrad(out, x, sigmoidOf(x))
		}},
		{"tanhGrad", func(k kernelSet, out, _, x, y []float32) {
			copy(out, y)
			k.tanhGrad(out, x)
		}},
		{"leaky", func(k kernelSet, out, _, x, _ []float32) { k.signScale(out, x, x, leakySlope) }},
		{"reluGrad", func(k kernelSet, out, _, x, y []float32) {
			copy(out, y)
			k.signScale(out, out, x, 0)
		}},
	}
	const maxLen = 70
	for _, k := range kernelSets() {
		for _, o := range ops {
			for n := 0; n <= maxLen; n++ {
				for off := 0; off < 4; off++ {
					xBuf := make([]float32, maxLen+8)
					for i := range xBuf {
						xBuf[i] = guard
					}
					copy(xBuf[off:], kernelInputs(n, uint32(n*4+off)))
					yBuf := append([]float32(nil), xBuf...)
					copy(yBuf[off:], kernelInputs(n, uint32(n*4+off+1000)))
					outBuf := append([]float32(nil), xBuf...)
					auxBuf := append([]float32(nil), xBuf...)
					x, y := xBuf[off:off+n], yBuf[off:off+n]
					o.run(k, outBuf[off:off+n], auxBuf[off:off+n], x, y)
					for i := range outBuf {
						if i >= off && i < off+n {
							var one, oneAux [1]float32
							o.run(k, one[:], oneAux[:], x[i-off:i-off+1], y[i-off:i-off+1])
							if math.Float32bits(outBuf[i]) != math.Float32bits(one[0]) ||
								(o.name == "silu" && auxBuf[i] != oneAux[0]) {
								t.Fatalf("%s %s n=%d off=%d: element %d = %g, alone %g", k.name, o.name, n, off, i-off, outBuf[i], one[0])
							}
						} else if outBuf[i] != guard || auxBuf[i] != guard {
							t.Fatalf("%s %s n=%d off=%d: wrote index %d outside the slice", k.name, o.name, n, off, i-off)
						}
					}
					// In place: the output is the input slice itself.
					if o.name == "exp" || o.name == "sigmoid" || o.name == "siluFwd" || o.name == "tanh" || o.name == "leaky" {
						inPlace := append([]float32(nil), x...)
						o.run(k, inPlace, make([]float32, n), inPlace, y)
						for i := range inPlace {
							if math.Float32bits(inPlace[i]) != math.Float32bits(outBuf[off+i]) {
								t.Fatalf("%s %s n=%d off=%d in place: element %d = %g, want %g", k.name, o.name, n, off, i, inPlace[i], outBuf[off+i])
							}
						}
					}
				}
			}
		}
	}
}

func sigmoidOf(x []float32) []float32 {
	s := make([]float32, len(x))
	sigmoidGo(s, x)
	return s
}

// TestGradKernelsExact: the gradient kernels and signScale are plain
// IEEE float32 arithmetic in the scalar formulas' order, so every
// implementation gives the scalar bits, including the signed zeros of
// ReLU at negative inputs and the kink rule (-0 takes the negative slope).
func TestGradKernelsExact(t *testing.T) {
	const n = 1000
	z := kernelInputs(n, 7)
	z[0], z[1], z[2] = float32(math.Copysign(0, -1)), 0, -3
	g0 := kernelInputs(n, 8)
	s := sigmoidOf(z)
	a := make([]float32, n)
	tanhGo(a, z)
	for _, k := range kernelSets() {
		gs := append([]float32(nil), g0...)
		k.siluGrad(gs, z, s)
		gt := append([]float32(nil), g0...)
		k.tanhGrad(gt, a)
		leaky := make([]float32, n)
		k.signScale(leaky, z, z, leakySlope)
		relu := make([]float32, n)
		k.signScale(relu, z, z, 0)
		gr := append([]float32(nil), g0...)
		k.signScale(gr, gr, z, leakySlope)
		for i := range z {
			si := s[i]
			wantS := g0[i] * (si * float32(1+float32(z[i]*(1-si))))
			wantT := g0[i] * (1 - float32(a[i]*a[i]))
			f := float32(1)
			if math.Signbit(float64(z[i])) {
				f = leakySlope
			}
			wantLeaky, wantGr := z[i]*f, g0[i]*f
			wantRelu := z[i]
			if math.Signbit(float64(z[i])) {
				wantRelu = z[i] * 0
			}
			for _, c := range []struct {
				name      string
				got, want float32
			}{{"siluGrad", gs[i], wantS}, {"tanhGrad", gt[i], wantT}, {"leaky", leaky[i], wantLeaky},
				{"relu", relu[i], wantRelu}, {"leakyGrad", gr[i], wantGr}} {
				if math.Float32bits(c.got) != math.Float32bits(c.want) {
					t.Fatalf("%s %s at z=%g: %g, want %g", k.name, c.name, z[i], c.got, c.want)
				}
			}
		}
		if math.Float32bits(relu[0]) != 1<<31 || math.Float32bits(relu[2]) != 1<<31 {
			t.Fatalf("%s: relu(-0), relu(-3) = %g, %g, want -0", k.name, relu[0], relu[2])
		}
	}
}

// adamScalar is Adam.Step's loop as it was before the kernels, the
// reference for their bits.
func adamScalar(params, grads, m, v []float32, b1, b2, lr, eps float64, t int64) {
	bc1 := 1 - math.Pow(b1, float64(t))
	bc2 := 1 - math.Pow(b2, float64(t))
	stepSize := lr / bc1
	sqrtBC2 := math.Sqrt(bc2)
	for i, g32 := range grads {
		g := float64(g32)
		mi := b1*float64(m[i]) + (1-b1)*g
		vi := b2*float64(v[i]) + (1-b2)*g*g
		m[i] = float32(mi)
		v[i] = float32(vi)
		denom := math.Sqrt(vi)/sqrtBC2 + eps
		params[i] = float32(float64(params[i]) - stepSize*mi/denom)
	}
}

// TestAdamKernelsBitwise: every Adam kernel, on lengths 0..70 at offsets
// 0..3, over several steps, gives exactly the bits of the scalar float64
// loop, so replicas stay bit-identical whichever kernel each runs, and
// nothing outside the slices changes.
func TestAdamKernelsBitwise(t *testing.T) {
	const guard = -7.25
	for _, k := range kernelSets() {
		for n := 0; n <= 70; n++ {
			for off := 0; off < 4; off++ {
				buf := func(inside []float32) []float32 {
					b := make([]float32, 80)
					for i := range b {
						b[i] = guard
					}
					copy(b[off:], inside)
					return b
				}
				p, m, v := buf(kernelInputs(n, uint32(3*n+off))), buf(make([]float32, n)), buf(make([]float32, n))
				wp, wm, wv := append([]float32(nil), p...), append([]float32(nil), m...), append([]float32(nil), v...)
				a := NewAdam(n, 1e-3)
				for step := int64(1); step <= 3; step++ {
					g := kernelInputs(n, uint32(100*n+10*off+int(step)))
					if n > 0 {
						g[0] *= 1e-20 // a v far below float32's normal range
					}
					a.T = step
					bc1 := 1 - math.Pow(a.Beta1, float64(step))
					bc2 := 1 - math.Pow(a.Beta2, float64(step))
					c := adamCoef{a.Beta1, 1 - a.Beta1, a.Beta2, 1 - a.Beta2, a.LR / bc1, math.Sqrt(bc2), a.Eps}
					k.adam(p[off:off+n], g, m[off:off+n], v[off:off+n], c)
					adamScalar(wp[off:off+n], g, wm[off:off+n], wv[off:off+n], a.Beta1, a.Beta2, a.LR, a.Eps, step)
				}
				for i := range p {
					if i < off || i >= off+n {
						if p[i] != guard || m[i] != guard || v[i] != guard {
							t.Fatalf("%s n=%d off=%d: wrote index %d outside the slices", k.name, n, off, i-off)
						}
						continue
					}
					if math.Float32bits(p[i]) != math.Float32bits(wp[i]) || math.Float32bits(m[i]) != math.Float32bits(wm[i]) ||
						math.Float32bits(v[i]) != math.Float32bits(wv[i]) {
						t.Fatalf("%s n=%d off=%d element %d: p, m, v = %g, %g, %g; scalar loop %g, %g, %g",
							k.name, n, off, i-off, p[i], m[i], v[i], wp[i], wm[i], wv[i])
					}
				}
			}
		}
	}
}

// BenchmarkKernels times each kernel per element on 4096 values (which
// stay in L1), for every implementation and, as "float64", for the loops
// activate and Adam.Step ran before the kernels.
func BenchmarkKernels(b *testing.B) {
	const n = 4096
	x := kernelInputs(n, 1)
	g := kernelInputs(n, 2)
	s := sigmoidOf(x)
	out := make([]float32, n)
	aux := make([]float32, n)
	perElement := func(b *testing.B, f func()) {
		c0, ok := processCPU()
		for b.Loop() {
			f()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
		// On a shared machine process CPU time leaves out waiting for a CPU.
		if c1, ok1 := processCPU(); ok && ok1 {
			b.ReportMetric(float64(c1-c0)/float64(b.N)/n, "cpu-ns/elem")
		}
	}
	float64Impl := map[string]func(){
		"exp": func() {
			for i, v := range x {
				out[i] = float32(math.Exp(float64(v)))
			}
		},
		"silu": func() {
			for i, v := range x {
				si := float32(1 / (1 + math.Exp(-float64(v))))
				aux[i] = si
				out[i] = v * si
			}
		},
		"tanh": func() {
			for i, v := range x {
				out[i] = float32(math.Tanh(float64(v)))
			}
		},
	}
	p, m, v := kernelInputs(n, 3), make([]float32, n), make([]float32, n)
	adamC := adamCoef{0.9, 0.1, 0.999, 1 - 0.999, 1e-4, 0.5, 1e-8}
	float64Impl["adam"] = func() { adamScalar(p, g, m, v, 0.9, 0.999, 1e-4, 1e-8, 10) }
	for _, name := range []string{"exp", "sigmoid", "silu", "siluFwd", "tanh", "siluGrad", "tanhGrad", "leaky", "adam"} {
		for _, k := range kernelSets() {
			if k.name == "dispatch" {
				continue
			}
			fs := map[string]func(){
				"exp":      func() { k.exp(out, x) },
				"sigmoid":  func() { k.sigmoid(out, x) },
				"silu":     func() { k.silu(out, aux, x) },
				"siluFwd":  func() { k.siluFwd(out, x) },
				"tanh":     func() { k.tanh(out, x) },
				"siluGrad": func() { copy(out, g); k.siluGrad(out, x, s) },
				"tanhGrad": func() { copy(out, g); k.tanhGrad(out, s) },
				"leaky":    func() { k.signScale(out, x, x, leakySlope) },
				"adam":     func() { k.adam(p, g, m, v, adamC) },
			}
			b.Run(name+"/"+k.name, func(b *testing.B) { perElement(b, fs[name]) })
		}
		if f, ok := float64Impl[name]; ok {
			b.Run(name+"/float64", func(b *testing.B) { perElement(b, f) })
		}
	}
}
