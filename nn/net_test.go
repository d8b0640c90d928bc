package nn

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
)

// testSpecs covers both architectures, every activation and both kinds of
// time input, including the degenerate Dim = 1 and a single hidden unit.
var testSpecs = []struct {
	name string
	spec Spec
}{
	{"dsb2d", Spec{Arch: ArchDSB2D, Dim: 2}},
	{"dsb2d-dim1-embed5-tanh", Spec{Arch: ArchDSB2D, Dim: 1, TimeEmbed: 5, Activation: Tanh}},
	{"mlp-rawt-silu", Spec{Arch: ArchMLP, Dim: 3, Hidden: []int{8, 7}}},
	{"mlp-embed-relu", Spec{Arch: ArchMLP, Dim: 2, Hidden: []int{6}, TimeEmbed: 4, Activation: ReLU}},
	{"mlp-leaky-dim1", Spec{Arch: ArchMLP, Dim: 1, Hidden: []int{1, 5}, Activation: LeakyReLU}},
	{"mlp-linear", Spec{Arch: ArchMLP, Dim: 2}},
}

// randomBatch draws times that mix step indices and [0,1] times, and
// standard normal x.
func randomBatch(seed uint64, b, dim int) (t, x []float32) {
	s := rng.New(seed, rng.PurposeBench, 1)
	t = make([]float32, b)
	x = make([]float32, b*dim)
	for i := range t {
		if i%2 == 0 {
			t[i] = float32(s.Intn(20))
		} else {
			t[i] = float32(s.Float64())
		}
	}
	for i := range x {
		x[i] = float32(s.Norm())
	}
	return t, x
}

// refForward is an independent float64 forward pass that knows the
// architectures from their definition and finds tensors by name.
func refForward(t *testing.T, n *Net, ts, x []float32) []float64 {
	t.Helper()
	spec := n.Spec()
	byName := map[string]ParamInfo{}
	for _, p := range n.ParamNames() {
		byName[p.Name] = p
	}
	p := n.Params()
	dense := func(name string, in []float64, act bool) []float64 {
		w, ok := byName[name+".weight"]
		if !ok {
			t.Fatalf("no tensor %s.weight", name)
		}
		bias := byName[name+".bias"]
		nin, nout := w.Shape[0], w.Shape[1]
		if nin != len(in) || bias.Len != nout {
			t.Fatalf("%s: weight %v, bias %d, input %d", name, w.Shape, bias.Len, len(in))
		}
		out := make([]float64, nout)
		for j := range out {
			s := float64(p[bias.Offset+j])
			for i, v := range in {
				s += v * float64(p[w.Offset+i*nout+j])
			}
			if act {
				s = refAct(spec.Activation, s)
			}
			out[j] = s
		}
		return out
	}
	res := make([]float64, 0, len(x))
	for b, tb := range ts {
		xb := make([]float64, spec.Dim)
		for j := range xb {
			xb[j] = float64(x[b*spec.Dim+j])
		}
		var feat []float64
		if spec.TimeEmbed == 0 {
			feat = []float64{float64(tb)}
		} else {
			half := spec.TimeEmbed / 2
			feat = make([]float64, spec.TimeEmbed)
			for i := range half {
				f := 1.0
				if half > 1 {
					f = math.Exp(-math.Log(10000) * float64(i) / float64(half-1))
				}
				feat[i] = math.Sin(float64(tb) * f)
				feat[half+i] = math.Cos(float64(tb) * f)
			}
		}
		var y []float64
		switch spec.Arch {
		case ArchDSB2D:
			xe := dense("x_encoder.1", dense("x_encoder.0", xb, true), false)
			te := dense("t_encoder.1", dense("t_encoder.0", feat, true), false)
			h := dense("net.0", append(xe, te...), true)
			h = dense("net.1", h, true)
			y = dense("net.2", h, false)
		case ArchMLP:
			h := append(xb, feat...)
			for i := range spec.Hidden {
				h = dense("net."+itoa(i), h, true)
			}
			y = dense("net."+itoa(len(spec.Hidden)), h, false)
		}
		res = append(res, y...)
	}
	return res
}

func itoa(i int) string { return string(rune('0' + i)) }

func refAct(a Activation, v float64) float64 {
	switch a {
	case LeakyReLU:
		if v < 0 {
			return 0.01 * v
		}
		return v
	case ReLU:
		return math.Max(v, 0)
	case Tanh:
		return math.Tanh(v)
	case SiLU:
		return v / (1 + math.Exp(-v))
	}
	panic("activation " + string(a))
}

func TestForwardMatchesReference(t *testing.T) {
	for _, tc := range testSpecs {
		for _, b := range []int{1, 2, 37, maxChunk + 5} {
			if b > 100 && tc.name != "dsb2d" && tc.name != "mlp-rawt-silu" {
				continue // the chunked path is exercised by one net per arch
			}
			t.Run(tc.name+"/B="+strings.TrimSpace(itoaLong(b)), func(t *testing.T) {
				n, err := New(tc.spec, 7)
				if err != nil {
					t.Fatal(err)
				}
				ts, x := randomBatch(uint64(b), b, tc.spec.Dim)
				out := make([]float32, len(x))
				if err := n.Forward(ts, x, out); err != nil {
					t.Fatal(err)
				}
				want := refForward(t, n, ts, x)
				for i := range out {
					// float32 arithmetic over at most ~200-term dot products:
					// relative error well under 1e-4.
					if d := math.Abs(float64(out[i]) - want[i]); d > 1e-4*(1+math.Abs(want[i])) {
						t.Fatalf("out[%d] = %g, reference %g", i, out[i], want[i])
					}
				}
			})
		}
	}
}

func itoaLong(i int) string {
	var b [20]byte
	pos := len(b)
	for {
		pos--
		b[pos] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[pos:])
		}
	}
}

// lossRef is the loss in float64 from the reference forward.
func lossRef(t *testing.T, n *Net, ts, x, target []float32) float64 {
	y := refForward(t, n, ts, x)
	var s float64
	for i, v := range y {
		r := v - float64(target[i])
		s += r * r
	}
	return s / float64(len(ts))
}

func TestLossGradMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range testSpecs {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.spec, 11)
			if err != nil {
				t.Fatal(err)
			}
			const b = 9
			ts, x := randomBatch(3, b, tc.spec.Dim)
			_, target := randomBatch(4, b, tc.spec.Dim)
			loss, err := n.LossGrad(ts, x, target)
			if err != nil {
				t.Fatal(err)
			}
			if want := lossRef(t, n, ts, x, target); math.Abs(loss-want) > 1e-4*(1+want) {
				t.Fatalf("loss %g, formula gives %g", loss, want)
			}
			grads := append([]float32(nil), n.Grads()...)
			// Check coordinates in every tensor: the first, a middle and the last.
			p := n.Params()
			s := rng.New(5, rng.PurposeBench)
			for _, info := range n.ParamNames() {
				for _, i := range []int{info.Offset, info.Offset + s.Intn(info.Len), info.Offset + info.Len - 1} {
					orig := p[i]
					const h = 1e-3
					p[i] = orig + h
					up := lossRef(t, n, ts, x, target)
					p[i] = orig - h
					down := lossRef(t, n, ts, x, target)
					p[i] = orig
					fd := (up - down) / (2 * h)
					// Central differences in float64 of a piecewise-smooth
					// function: O(h^2) error away from kinks; the tolerance
					// also absorbs float32 rounding of the analytic gradient.
					if math.Abs(float64(grads[i])-fd) > 2e-3*(1+math.Abs(fd)) {
						t.Errorf("%s[%d]: grad %g, finite difference %g", info.Name, i-info.Offset, grads[i], fd)
					}
				}
			}
		})
	}
}

func TestLossGradChunkedEqualsWhole(t *testing.T) {
	n, err := New(Spec{Arch: ArchDSB2D, Dim: 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := maxChunk + 300
	ts, x := randomBatch(8, b, 2)
	_, target := randomBatch(9, b, 2)
	loss, err := n.LossGrad(ts, x, target)
	if err != nil {
		t.Fatal(err)
	}
	if want := lossRef(t, n, ts, x, target); math.Abs(loss-want) > 1e-4*(1+want) {
		t.Fatalf("loss %g, formula %g", loss, want)
	}
	got := append([]float32(nil), n.Grads()...)
	// The gradient of a mean is the weighted mean of the chunk gradients.
	lo, hi := maxChunk, b
	if _, err := n.LossGrad(ts[:lo], x[:lo*2], target[:lo*2]); err != nil {
		t.Fatal(err)
	}
	g1 := append([]float32(nil), n.Grads()...)
	if _, err := n.LossGrad(ts[lo:hi], x[lo*2:hi*2], target[lo*2:hi*2]); err != nil {
		t.Fatal(err)
	}
	for i, g2 := range n.Grads() {
		want := (float64(g1[i])*float64(lo) + float64(g2)*float64(hi-lo)) / float64(b)
		if math.Abs(float64(got[i])-want) > 1e-4*(1+math.Abs(want)) {
			t.Fatalf("grad[%d] = %g, want %g", i, got[i], want)
		}
	}
}

func TestVJPMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range testSpecs {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.spec, 13)
			if err != nil {
				t.Fatal(err)
			}
			d := tc.spec.Dim
			const b = 5
			ts, x := randomBatch(21, b, d)
			_, v := randomBatch(22, b, d)
			out := make([]float32, b*d)
			vjp := make([]float32, b*d)
			for i := range vjp {
				vjp[i] = float32(math.NaN()) // must be overwritten
			}
			gradsBefore := append([]float32(nil), n.Grads()...)
			if err := n.VJP(ts, x, v, out, vjp); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f32bytes(gradsBefore), f32bytes(n.Grads())) {
				t.Fatal("VJP changed Grads()")
			}
			fwd := make([]float32, b*d)
			if err := n.Forward(ts, x, fwd); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f32bytes(fwd), f32bytes(out)) {
				t.Fatal("VJP out differs from Forward")
			}
			for bi := range b {
				for j := range d {
					xp := append([]float32(nil), x...)
					const h = 1e-3
					xp[bi*d+j] = x[bi*d+j] + h
					up := refForward(t, n, ts, xp)
					xp[bi*d+j] = x[bi*d+j] - h
					down := refForward(t, n, ts, xp)
					var fd float64
					for k := range d {
						fd += float64(v[bi*d+k]) * (up[bi*d+k] - down[bi*d+k]) / (2 * h)
					}
					// Same tolerance reasoning as the parameter gradient test.
					if got := float64(vjp[bi*d+j]); math.Abs(got-fd) > 2e-3*(1+math.Abs(fd)) {
						t.Errorf("vjp[%d,%d] = %g, finite difference %g", bi, j, got, fd)
					}
				}
			}
		})
	}
}

func f32bytes(v []float32) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, v)
	return buf.Bytes()
}

func TestArenaAliasing(t *testing.T) {
	n, err := New(Spec{Arch: ArchDSB2D, Dim: 2}, 3)
	if err != nil {
		t.Fatal(err)
	}
	ts, x := randomBatch(1, 4, 2)
	out1 := make([]float32, 8)
	if err := n.Forward(ts, x, out1); err != nil {
		t.Fatal(err)
	}
	params, grads := &n.Params()[0], &n.Grads()[0]
	// Shifting the output bias through the arena shifts the output.
	var bias ParamInfo
	for _, p := range n.ParamNames() {
		if p.Name == "net.2.bias" {
			bias = p
		}
	}
	n.Params()[bias.Offset+1] += 0.5
	out2 := make([]float32, 8)
	if err := n.Forward(ts, x, out2); err != nil {
		t.Fatal(err)
	}
	for b := range 4 {
		if d := out2[2*b+1] - out1[2*b+1]; math.Abs(float64(d)-0.5) > 1e-5 || out2[2*b] != out1[2*b] {
			t.Fatalf("row %d: %v -> %v after bias += 0.5", b, out1[2*b:2*b+2], out2[2*b:2*b+2])
		}
	}
	c, err := n.Clone()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int{4, 1, 3000, 4} {
		ts, x := randomBatch(2, b, 2)
		if _, err := n.LossGrad(ts, x, x); err != nil {
			t.Fatal(err)
		}
	}
	if &n.Params()[0] != params || &n.Grads()[0] != grads {
		t.Fatal("arenas were reallocated")
	}
	// The clone has the same parameters, its own arenas, and ignores writes
	// to the original.
	if !bytes.Equal(f32bytes(c.Params()), f32bytes(n.Params())) {
		t.Fatal("clone parameters differ")
	}
	n.Params()[0] += 1
	outC := make([]float32, 8)
	if err := c.Forward(ts, x, outC); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f32bytes(outC), f32bytes(out2)) || c.Params()[0] == n.Params()[0] {
		t.Fatal("clone is not independent of the original")
	}
	if &c.Grads()[0] == grads || &c.Params()[0] == params {
		t.Fatal("clone shares an arena")
	}
}

func TestParamLayout(t *testing.T) {
	n, err := New(Spec{Arch: ArchDSB2D, Dim: 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	// 2*16+16 + 16*32+32 + 16*16+16 + 16*32+32 + 64*128+128 + 128*128+128 + 128*2+2
	if got, want := n.NumParams(), 26498; got != want {
		t.Fatalf("dsb2d NumParams = %d, want %d", got, want)
	}
	off := 0
	for _, p := range n.ParamNames() {
		size := 1
		for _, s := range p.Shape {
			size *= s
		}
		if p.Offset != off || p.Len != size {
			t.Fatalf("%s: offset %d len %d shape %v, want offset %d", p.Name, p.Offset, p.Len, p.Shape, off)
		}
		off += p.Len
	}
	if off != n.NumParams() || len(n.Params()) != off || len(n.Grads()) != off {
		t.Fatalf("tensors cover %d, arenas %d/%d", off, len(n.Params()), len(n.Grads()))
	}
}

func TestDeterministicInit(t *testing.T) {
	for _, tc := range testSpecs {
		a, err := New(tc.spec, 42)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := New(tc.spec, 42)
		c, _ := New(tc.spec, 43)
		if !bytes.Equal(f32bytes(a.Params()), f32bytes(b.Params())) {
			t.Errorf("%s: same seed, different parameters", tc.name)
		}
		if bytes.Equal(f32bytes(a.Params()), f32bytes(c.Params())) {
			t.Errorf("%s: seeds 42 and 43 give identical parameters", tc.name)
		}
		for _, p := range a.ParamNames() {
			bound := 1 / math.Sqrt(float64(p.Shape[0]))
			if len(p.Shape) == 1 { // bias: fan_in is the weight's first dimension
				continue
			}
			for _, v := range a.Params()[p.Offset : p.Offset+p.Len] {
				if math.Abs(float64(v)) > bound {
					t.Fatalf("%s: %s has %g outside ±%g", tc.name, p.Name, v, bound)
				}
			}
		}
	}
}

func TestBadBatches(t *testing.T) {
	n, err := New(Spec{Arch: ArchMLP, Dim: 2, Hidden: []int{4}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ok := make([]float32, 4)
	cases := []struct {
		name, want string
		call       func() error
	}{
		{"empty", "len(t) = 0", func() error { return n.Forward(nil, nil, nil) }},
		{"short x", "len(x)", func() error { return n.Forward(ok[:2], ok[:3], ok) }},
		{"short out", "len(out)", func() error { return n.Forward(ok[:2], ok, ok[:1]) }},
		{"short target", "len(target)", func() error { _, err := n.LossGrad(ok[:2], ok, ok[:3]); return err }},
		{"short v", "len(v)", func() error { return n.VJP(ok[:2], ok, ok[:1], ok, ok) }},
		{"short vjp", "len(vjp)", func() error { return n.VJP(ok[:2], ok, ok, ok, ok[:1]) }},
	}
	for _, tc := range cases {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want mention of %q", tc.name, err, tc.want)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	cases := []struct {
		spec  Spec
		field string // "" means valid
	}{
		{Spec{Arch: ArchDSB2D, Dim: 2}, ""},
		{Spec{Arch: ArchMLP, Dim: 5, Hidden: []int{256, 256}}, ""},
		{Spec{Arch: "cnn", Dim: 2}, "Arch"},
		{Spec{Arch: ArchMLP, Dim: 0}, "Dim"},
		{Spec{Arch: ArchMLP, Dim: 2, Hidden: []int{4, 0}}, "Hidden[1]"},
		{Spec{Arch: ArchMLP, Dim: 2, TimeEmbed: -1}, "TimeEmbed"},
		{Spec{Arch: ArchDSB2D, Dim: 2, TimeEmbed: -3}, "TimeEmbed"},
		{Spec{Arch: ArchDSB2D, Dim: 2, TimeEmbed: 1}, "TimeEmbed"},
		{Spec{Arch: ArchMLP, Dim: 2, TimeEmbed: 1}, "TimeEmbed"},
		{Spec{Arch: ArchMLP, Dim: 2, TimeEmbed: 2}, ""},
		{Spec{Arch: ArchMLP, Dim: 2, Activation: "gelu"}, "Activation"},
	}
	for _, tc := range cases {
		err := tc.spec.Validate()
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.spec, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%+v: error %v, want one naming %s", tc.spec, err, tc.field)
		}
		if _, nerr := New(tc.spec, 1); (nerr == nil) != (err == nil) {
			t.Errorf("%+v: New error %v disagrees with Validate %v", tc.spec, nerr, err)
		}
	}
	d := Spec{Arch: ArchDSB2D, Dim: 2}.WithDefaults()
	if d.TimeEmbed != 16 || d.Activation != LeakyReLU {
		t.Errorf("dsb2d defaults: %+v", d)
	}
	if m := (Spec{Arch: ArchMLP, Dim: 2}).WithDefaults(); m.TimeEmbed != 0 || m.Activation != SiLU {
		t.Errorf("mlp defaults: %+v", m)
	}
}

func TestTimeFeatures(t *testing.T) {
	// The embedding must separate both DSB step indices (0..N) and SI times
	// in [0, 1]: neighbouring times should differ by a clear margin.
	const embed = 16
	freqs := sinusoidFreqs(embed / 2)
	feat := func(tv float32) []float32 {
		dst := make([]float32, embed)
		timeFeatures(dst, []float32{tv}, embed, freqs)
		return dst
	}
	dist := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			d := float64(a[i] - b[i])
			s += d * d
		}
		return math.Sqrt(s)
	}
	for _, tc := range []struct {
		name       string
		t0, dt     float32
		steps      int
		minSpacing float64
	}{
		{"step indices", 0, 1, 1000, 0.5},
		{"unit interval", 0, 0.01, 100, 0.009},
	} {
		prev := feat(tc.t0)
		for i := 1; i <= tc.steps; i++ {
			cur := feat(tc.t0 + float32(i)*tc.dt)
			for _, v := range cur {
				if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 1 {
					t.Fatalf("%s: feature %g out of [-1, 1]", tc.name, v)
				}
			}
			// The highest frequency is 1, so a step dt moves the embedding
			// by at least about dt while dt is small; step indices move it
			// by much more.
			if d := dist(prev, cur); d < tc.minSpacing {
				t.Fatalf("%s: times %g and %g embed %g apart, want >= %g", tc.name,
					tc.t0+float32(i-1)*tc.dt, tc.t0+float32(i)*tc.dt, d, tc.minSpacing)
			}
			prev = cur
		}
	}
	zero := feat(0)
	for i := range embed / 2 {
		if zero[i] != 0 || zero[embed/2+i] != 1 {
			t.Fatalf("t=0 embeds as %v, want sines 0 and cosines 1", zero)
		}
	}
	raw := make([]float32, 3)
	timeFeatures(raw, []float32{0.5, 7, -2}, 0, nil)
	if raw[0] != 0.5 || raw[1] != 7 || raw[2] != -2 {
		t.Fatalf("TimeEmbed 0 gives %v, want t itself", raw)
	}
}

func TestForwardInPlace(t *testing.T) {
	n, err := New(Spec{Arch: ArchMLP, Dim: 3, Hidden: []int{5}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int{3, maxChunk + 3} { // one chunk and several
		ts, x := randomBatch(6, b, 3)
		want := make([]float32, len(x))
		if err := n.Forward(ts, x, want); err != nil {
			t.Fatal(err)
		}
		if err := n.Forward(ts, x, x); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f32bytes(x), f32bytes(want)) {
			t.Fatalf("B=%d: Forward(t, x, x) differs from Forward into a separate slice", b)
		}
	}
}

// TestForwardMatchesVJPOutput: Forward skips keeping SiLU's sigmoid, which
// must not change a bit of the output that VJP's (keeping) pass computes.
func TestForwardMatchesVJPOutput(t *testing.T) {
	for _, tc := range testSpecs {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.spec, 5)
			if err != nil {
				t.Fatal(err)
			}
			b := maxChunk + 37
			ts, x := randomBatch(9, b, tc.spec.Dim)
			out, vout, vjp := make([]float32, len(x)), make([]float32, len(x)), make([]float32, len(x))
			if err := n.Forward(ts, x, out); err != nil {
				t.Fatal(err)
			}
			if err := n.VJP(ts, x, x, vout, vjp); err != nil {
				t.Fatal(err)
			}
			for i := range out {
				if math.Float32bits(out[i]) != math.Float32bits(vout[i]) {
					t.Fatalf("out[%d]: Forward %g, VJP %g", i, out[i], vout[i])
				}
			}
		})
	}
}

// LossGradTo is the weighted loss with its gradient in the caller's
// buffer: weight 1 gives LossGrad's bits exactly, any weight gives weight
// times LossGrad's loss and gradient, and Grads() is left alone.
func TestLossGradToWeightsIntoBuffer(t *testing.T) {
	specs := []struct {
		name string
		spec Spec
	}{
		{"dsb2d", Spec{Arch: ArchDSB2D, Dim: 2}},
		{"mlp-silu", Spec{Arch: ArchMLP, Dim: 3, Hidden: []int{8, 7}}},
		{"unet", Spec{Arch: ArchUNet, Image: [3]int{1, 8, 8}, Channels: []int{4, 8}, Groups: 2}},
	}
	for _, tc := range specs {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.spec, 4)
			if err != nil {
				t.Fatal(err)
			}
			d := n.Spec().Dim
			const b = 24
			ts, x := randomBatch(10, b, d)
			_, target := randomBatch(11, b, d)
			loss, err := n.LossGrad(ts, x, target)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]float32(nil), n.Grads()...)
			for _, weight := range []float64{1, 0.125, 3} {
				buf := make([]float32, n.NumParams())
				for i := range buf {
					buf[i] = 7 // overwritten, not added to
				}
				sentinel := n.Grads()[0]
				n.Grads()[0] = sentinel + 1
				got, err := n.LossGradTo(ts, x, target, weight, buf)
				if err != nil {
					t.Fatal(err)
				}
				if n.Grads()[0] != sentinel+1 {
					t.Fatalf("weight %g: Grads() was written", weight)
				}
				n.Grads()[0] = sentinel
				if math.Abs(got-weight*loss) > 1e-12*(1+weight*loss) {
					t.Errorf("weight %g: loss %g, want %g", weight, got, weight*loss)
				}
				if weight == 1 {
					if !bytes.Equal(f32bytes(buf), f32bytes(want)) {
						t.Errorf("weight 1: gradient bytes differ from LossGrad's")
					}
					continue
				}
				// float32 sums of differently scaled terms: agree to a
				// relative 1e-4, or 1e-6 of the largest coordinate.
				var largest float64
				for _, g := range want {
					largest = max(largest, weight*math.Abs(float64(g)))
				}
				for i, g := range buf {
					w := weight * float64(want[i])
					if math.Abs(float64(g)-w) > 1e-4*math.Abs(w)+1e-6*largest {
						t.Fatalf("weight %g: grad[%d] = %g, want %g", weight, i, g, w)
					}
				}
			}
			if _, err := n.LossGradTo(ts, x, target, 1, make([]float32, n.NumParams()-1)); err == nil || !strings.Contains(err.Error(), "gradient buffer") {
				t.Errorf("short buffer: err = %v, want a gradient buffer error", err)
			}
		})
	}
}
