package nn

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
)

// unetSpecs: two and three levels, one level (no down or up path), several
// input channels on a non-square image, groups other than the default,
// and an image wide enough for row-tap convolutions.
var unetSpecs = []struct {
	name string
	spec Spec
}{
	{"c8-16-8x8", Spec{Arch: ArchUNet, Image: [3]int{1, 8, 8}, Channels: []int{8, 16}}},
	{"c4-8-8-g2-8x8", Spec{Arch: ArchUNet, Image: [3]int{1, 8, 8}, Channels: []int{4, 8, 8}, Groups: 2, TimeEmbed: 6}},
	{"c3in-l1-4x6", Spec{Arch: ArchUNet, Image: [3]int{3, 4, 6}, Channels: []int{4}, Groups: 2}},
	{"c2in-4-8-g4-4x8", Spec{Arch: ArchUNet, Image: [3]int{2, 4, 8}, Channels: []int{4, 8}, Groups: 4, TimeEmbed: 5}},
	{"c4-8-4x16", Spec{Arch: ArchUNet, Image: [3]int{1, 4, 16}, Channels: []int{4, 8}, Groups: 2}}, // row-tap convolutions at 4x16
}

func mustNet(t testing.TB, spec Spec, seed uint64) *Net {
	t.Helper()
	n, err := New(spec, seed)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestUNetSmallLayout pins unet-small: its parameter count, the torch
// names and shapes in state_dict order, and the validated defaults.
func TestUNetSmallLayout(t *testing.T) {
	n := mustNet(t, Spec{Arch: ArchUNet, Image: [3]int{1, 28, 28}, Channels: []int{32, 64, 64}}, 1)
	if got := n.NumParams(); got != 444833 {
		t.Fatalf("unet-small has %d parameters, want 444833", got)
	}
	s := n.Spec()
	if s.Dim != 784 || s.Groups != 8 || s.TimeEmbed != 32 || s.Activation != SiLU {
		t.Fatalf("defaults: %+v", s)
	}
	info := n.ParamNames()
	want := []struct {
		name  string
		shape string
	}{
		{"time_embed.0.weight", "[128 32]"},
		{"time_embed.0.bias", "[128]"},
		{"time_embed.2.weight", "[128 128]"},
		{"time_embed.2.bias", "[128]"},
		{"inc.weight", "[32 1 3 3]"},
		{"inc.bias", "[32]"},
		{"down.0.norm1.weight", "[32]"},
		{"down.0.norm1.bias", "[32]"},
		{"down.0.conv1.weight", "[32 32 3 3]"},
		{"down.0.conv1.bias", "[32]"},
		{"down.0.temb.weight", "[32 128]"},
		{"down.0.temb.bias", "[32]"},
		{"down.0.norm2.weight", "[32]"},
		{"down.0.norm2.bias", "[32]"},
		{"down.0.conv2.weight", "[32 32 3 3]"},
		{"down.0.conv2.bias", "[32]"},
		{"down.1.norm1.weight", "[32]"},
	}
	for i, w := range want {
		if info[i].Name != w.name || fmt.Sprint(info[i].Shape) != w.shape {
			t.Fatalf("tensor %d = %s %v, want %s %s", i, info[i].Name, info[i].Shape, w.name, w.shape)
		}
	}
	shapes := map[string]string{}
	off := 0
	for _, p := range info {
		if p.Offset != off {
			t.Fatalf("%s at offset %d, want %d (arena not contiguous)", p.Name, p.Offset, off)
		}
		off += p.Len
		shapes[p.Name] = fmt.Sprint(p.Shape)
	}
	for name, shape := range map[string]string{
		"down.1.skip.weight":   "[64 32 1 1]",
		"downsample.0.weight":  "[32 32 3 3]",
		"downsample.1.weight":  "[64 64 3 3]",
		"mid.conv1.weight":     "[64 64 3 3]",
		"up.0.norm1.weight":    "[128]",
		"up.0.skip.weight":     "[64 128 1 1]",
		"up.1.conv1.weight":    "[32 96 3 3]",
		"up.2.skip.weight":     "[32 64 1 1]",
		"up.2.temb.weight":     "[32 128]",
		"out_norm.weight":      "[32]",
		"out_conv.weight":      "[1 32 3 3]",
		"out_conv.bias":        "[1]",
		"down.0.skip.weight":   "",
		"mid.skip.weight":      "",
		"time_embed.1.weight":  "",
		"downsample.2.weight":  "",
		"up.3.norm1.weight":    "",
		"down.1.conv1.weight":  "[64 32 3 3]",
		"down.1.norm2.weight":  "[64]",
		"up.0.conv1.weight":    "[64 128 3 3]",
		"up.1.skip.weight":     "[32 96 1 1]",
		"up.1.norm1.bias":      "[96]",
		"out_norm.bias":        "[32]",
		"time_embed.2.bias":    "[128]",
		"mid.temb.weight":      "[64 128]",
		"downsample.1.bias":    "[64]",
		"up.2.conv2.weight":    "[32 32 3 3]",
		"down.0.conv1.weight":  "[32 32 3 3]",
		"up.2.norm1.weight":    "[64]",
		"up.0.temb.bias":       "[64]",
		"mid.norm1.weight":     "[64]",
		"inc.weight":           "[32 1 3 3]",
		"time_embed.0.weight":  "[128 32]",
		"up.1.conv2.weight":    "[32 32 3 3]",
		"up.0.conv2.weight":    "[64 64 3 3]",
		"down.1.conv2.weight":  "[64 64 3 3]",
		"down.1.temb.weight":   "[64 128]",
		"up.1.temb.weight":     "[32 128]",
		"downsample.0.bias":    "[32]",
		"out_conv.weight.fake": "",
	} {
		if got := shapes[name]; got != shape {
			t.Errorf("%s: shape %q, want %q", name, got, shape)
		}
	}
	// GroupNorm starts at the identity, as in torch.
	p := n.Params()
	for _, pi := range info {
		v := p[pi.Offset : pi.Offset+pi.Len]
		switch {
		case strings.HasSuffix(pi.Name, "norm1.weight"), strings.HasSuffix(pi.Name, "norm2.weight"), pi.Name == "out_norm.weight":
			for _, x := range v {
				if x != 1 {
					t.Fatalf("%s: %g, want 1", pi.Name, x)
				}
			}
		case strings.Contains(pi.Name, "norm"):
			for _, x := range v {
				if x != 0 {
					t.Fatalf("%s: %g, want 0", pi.Name, x)
				}
			}
		}
	}
}

// TestUNetInit checks torch's bounds, determinism in the seed and
// independence between seeds.
func TestUNetInit(t *testing.T) {
	spec := unetSpecs[0].spec
	a, b, c := mustNet(t, spec, 3), mustNet(t, spec, 3), mustNet(t, spec, 4)
	same, diff := true, 0
	for i := range a.Params() {
		same = same && a.Params()[i] == b.Params()[i]
		if a.Params()[i] != c.Params()[i] {
			diff++
		}
	}
	if !same {
		t.Fatal("same seed gave different parameters")
	}
	if diff < a.NumParams()/2 {
		t.Fatalf("seeds 3 and 4 share %d of %d parameters", a.NumParams()-diff, a.NumParams())
	}
	for _, p := range a.ParamNames() {
		if strings.Contains(p.Name, "norm") {
			continue
		}
		fan := 1
		for _, s := range p.Shape[1:] {
			fan *= s
		}
		if len(p.Shape) == 1 { // a bias: the fan-in of its weight
			w := a.ParamNames()
			for _, q := range w {
				if q.Name == strings.TrimSuffix(p.Name, "bias")+"weight" {
					fan = q.Len / q.Shape[0]
				}
			}
		}
		bound := 1 / math.Sqrt(float64(fan))
		m := maxAbs(a.Params()[p.Offset : p.Offset+p.Len])
		if m > bound || (p.Len >= 64 && m < 0.8*bound) {
			t.Errorf("%s: max |w| = %g, want just under %g", p.Name, m, bound)
		}
	}
}

// TestUNetForwardMatchesReference holds the fused forward pass to the
// float64 NCHW reimplementation, for batches within one chunk and across
// several.
func TestUNetForwardMatchesReference(t *testing.T) {
	for _, tc := range unetSpecs {
		for _, batch := range []int{1, 3, unetChunk + 3} {
			t.Run(fmt.Sprintf("%s/b%d", tc.name, batch), func(t *testing.T) {
				n := mustNet(t, tc.spec, 5)
				randomizeNorms(n, 6)
				d := n.Spec().Dim
				ts, x := randomBatch(7, batch, d)
				out := make([]float32, len(x))
				if err := n.Forward(ts, x, out); err != nil {
					t.Fatal(err)
				}
				want := refUNet(tc.spec, refParams(n), ts, f64(x))
				scale := 1.0
				for _, v := range want {
					scale = max(scale, math.Abs(v))
				}
				for i := range want {
					if !closeTo(float64(out[i]), want[i], scale) {
						t.Fatalf("out[%d] = %g, reference %g (scale %g)", i, out[i], want[i], scale)
					}
				}
			})
		}
	}
}

// randomizeNorms moves the GroupNorm affine parameters off their identity
// start, so that their gradients and their effect on the rest are tested.
func randomizeNorms(n *Net, seed uint64) {
	s := rng.New(seed, rng.PurposeBench, 9)
	for _, p := range n.ParamNames() {
		if !strings.Contains(p.Name, "norm") {
			continue
		}
		for i := range p.Len {
			n.Params()[p.Offset+i] += float32(0.3 * s.Norm())
		}
	}
}

func refLoss(spec Spec, p map[string][]float64, ts []float32, x []float64, target []float32) float64 {
	y := refUNet(spec, p, ts, x)
	var l float64
	for i, v := range y {
		r := v - float64(target[i])
		l += r * r
	}
	return l / float64(len(ts))
}

// TestUNetGradMatchesFiniteDifferences checks LossGrad's parameter
// gradient and VJP against central differences of the float64 reference,
// on random coordinates of every tensor kind.
func TestUNetGradMatchesFiniteDifferences(t *testing.T) {
	const h = 1e-3
	for ci, tc := range unetSpecs {
		t.Run(tc.name, func(t *testing.T) {
			n := mustNet(t, tc.spec, 11)
			randomizeNorms(n, 12)
			d := n.Spec().Dim
			batch := 3
			ts, x := randomBatch(13, batch, d)
			_, target := randomBatch(14, batch, d)
			if _, err := n.LossGrad(ts, x, target); err != nil {
				t.Fatal(err)
			}
			grads := append([]float32(nil), n.Grads()...)
			p := refParams(n)
			xs := f64(x)
			gscale := maxAbs(grads)
			s := rng.New(15, rng.PurposeBench, uint64(ci))
			info := n.ParamNames()
			coords := 300
			if testing.Short() {
				coords = 60
			}
			for k := range coords {
				// Every tensor first, then random ones.
				pi := info[k%len(info)]
				if k >= len(info) {
					pi = info[s.Intn(len(info))]
				}
				j := s.Intn(pi.Len)
				v := p[pi.Name]
				orig := v[j]
				v[j] = orig + h
				lp := refLoss(tc.spec, p, ts, xs, target)
				v[j] = orig - h
				lm := refLoss(tc.spec, p, ts, xs, target)
				v[j] = orig
				fd := (lp - lm) / (2 * h)
				got := float64(grads[pi.Offset+j])
				if math.Abs(got-fd) > 2e-3*math.Abs(fd)+2e-4*gscale {
					t.Errorf("d loss/d %s[%d]: LossGrad %g, finite differences %g (scale %g)", pi.Name, j, got, fd, gscale)
				}
			}

			_, v := randomBatch(16, batch, d)
			out := make([]float32, len(x))
			vjp := make([]float32, len(x))
			before := append([]float32(nil), n.Grads()...)
			if err := n.VJP(ts, x, v, out, vjp); err != nil {
				t.Fatal(err)
			}
			for i := range before {
				if n.Grads()[i] != before[i] {
					t.Fatal("VJP changed Grads()")
				}
			}
			vscale := maxAbs(vjp)
			dot := func(xs []float64) float64 {
				y := refUNet(tc.spec, p, ts, xs)
				var s float64
				for i, yi := range y {
					s += yi * float64(v[i])
				}
				return s
			}
			for k := range 40 {
				i := s.Intn(len(x))
				if k < batch {
					i = k*d + s.Intn(d) // every sample
				}
				orig := xs[i]
				xs[i] = orig + h
				fp := dot(xs)
				xs[i] = orig - h
				fm := dot(xs)
				xs[i] = orig
				fd := (fp - fm) / (2 * h)
				if math.Abs(float64(vjp[i])-fd) > 2e-3*math.Abs(fd)+2e-4*vscale {
					t.Errorf("vjp[%d] = %g, finite differences %g (scale %g)", i, vjp[i], fd, vscale)
				}
			}
		})
	}
}

// TestUNetChunkedLossGrad: a batch spanning chunks has the batch-weighted
// mean of its chunks' losses and gradients.
func TestUNetChunkedLossGrad(t *testing.T) {
	spec := unetSpecs[3].spec
	n := mustNet(t, spec, 21)
	d := n.Spec().Dim
	B := unetChunk + 5
	ts, x := randomBatch(22, B, d)
	_, target := randomBatch(23, B, d)
	whole, err := n.LossGrad(ts, x, target)
	if err != nil {
		t.Fatal(err)
	}
	gWhole := append([]float32(nil), n.Grads()...)
	want := make([]float64, n.NumParams())
	var wantLoss float64
	for _, r := range [][2]int{{0, 7}, {7, B}} {
		l, err := n.LossGrad(ts[r[0]:r[1]], x[r[0]*d:r[1]*d], target[r[0]*d:r[1]*d])
		if err != nil {
			t.Fatal(err)
		}
		w := float64(r[1]-r[0]) / float64(B)
		wantLoss += w * l
		for i, g := range n.Grads() {
			want[i] += w * float64(g)
		}
	}
	if !closeTo(whole, wantLoss, 0) {
		t.Fatalf("loss %g, want %g", whole, wantLoss)
	}
	scale := maxAbs(gWhole)
	for i := range want {
		if !closeTo(float64(gWhole[i]), want[i], scale) {
			t.Fatalf("grad %s: %g, want %g", paramLabel(n)(i), gWhole[i], want[i])
		}
	}
}

// TestUNetRepeatable: the workspace carries nothing between calls, and a
// clone computes the same.
func TestUNetRepeatable(t *testing.T) {
	n := mustNet(t, unetSpecs[0].spec, 31)
	d := n.Spec().Dim
	ts, x := randomBatch(32, 5, d)
	_, target := randomBatch(33, 5, d)
	l1, _ := n.LossGrad(ts, x, target)
	g1 := append([]float32(nil), n.Grads()...)
	big, bx := randomBatch(34, 9, d)
	if _, err := n.LossGrad(big, bx, bx); err != nil {
		t.Fatal(err)
	}
	c, err := n.Clone()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Net{n, c} {
		l2, _ := m.LossGrad(ts, x, target)
		if l2 != l1 {
			t.Fatalf("loss %g then %g", l1, l2)
		}
		for i, g := range m.Grads() {
			if g != g1[i] {
				t.Fatalf("grad %d: %g then %g", i, g1[i], g)
			}
		}
	}
	// In place: out aliases x.
	want := make([]float32, len(x))
	if err := n.Forward(ts, x, want); err != nil {
		t.Fatal(err)
	}
	if err := n.Forward(ts, x, x); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if x[i] != want[i] {
			t.Fatalf("in-place out[%d] = %g, want %g", i, x[i], want[i])
		}
	}
	if _, err := NewGraph(n, 2); err == nil {
		t.Fatal("NewGraph accepted a unet")
	}
}

func TestUNetSpecValidate(t *testing.T) {
	ok := Spec{Arch: ArchUNet, Image: [3]int{1, 28, 28}, Channels: []int{32, 64, 64}}
	mod := func(f func(*Spec)) Spec {
		s := ok.WithDefaults()
		s.Dim = 0
		f(&s)
		return s
	}
	cases := []struct {
		name  string
		spec  Spec
		field string
	}{
		{"unet-small", ok, ""},
		{"dim given", mod(func(s *Spec) { s.Dim = 784 }), ""},
		{"dim wrong", mod(func(s *Spec) { s.Dim = 785 }), "Dim"},
		{"no channels", mod(func(s *Spec) { s.Channels = nil }), "Channels"},
		{"zero channel", mod(func(s *Spec) { s.Channels = []int{32, 0} }), "Channels[1]"},
		{"negative channel", mod(func(s *Spec) { s.Channels = []int{-8} }), "Channels[0]"},
		{"channel vs groups", mod(func(s *Spec) { s.Channels = []int{32, 60} }), "Groups"},
		{"groups", mod(func(s *Spec) { s.Groups = -1 }), "Groups"},
		{"H not divisible", mod(func(s *Spec) { s.Image = [3]int{1, 30, 28} }), "Image H"},
		{"W not divisible", mod(func(s *Spec) { s.Image = [3]int{1, 28, 26}; s.Channels = []int{8, 8, 8} }), "Image H, W"},
		{"image zero", mod(func(s *Spec) { s.Image = [3]int{0, 28, 28} }), "Image[0]"},
		{"activation", mod(func(s *Spec) { s.Activation = ReLU }), "Activation"},
		{"time embed", mod(func(s *Spec) { s.TimeEmbed = 1 }), "TimeEmbed"},
		{"one level odd", mod(func(s *Spec) { s.Image = [3]int{1, 7, 5}; s.Channels = []int{8} }), ""},
	}
	for _, tc := range cases {
		err := tc.spec.Validate()
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%s: error %v, want one naming %s", tc.name, err, tc.field)
		}
		if _, nerr := New(tc.spec, 1); (nerr == nil) != (err == nil) {
			t.Errorf("%s: New error %v disagrees with Validate %v", tc.name, nerr, err)
		}
	}
}

// TestUNetLayerTimes: timing off reports nothing; on, every kind is charged
// and the kinds add up to no more than the wall time of the calls.
func TestUNetLayerTimes(t *testing.T) {
	n := mustNet(t, unetSpecs[0].spec, 41)
	d := n.Spec().Dim
	ts, x := randomBatch(42, 4, d)
	if _, err := n.LossGrad(ts, x, x); err != nil {
		t.Fatal(err)
	}
	if n.LayerTimes() != nil {
		t.Fatal("LayerTimes with timing off")
	}
	n.SetLayerTiming(true)
	if _, err := n.LossGrad(ts, x, x); err != nil {
		t.Fatal(err)
	}
	lt := n.LayerTimes()
	for _, k := range kindNames {
		if lt[k] <= 0 {
			t.Errorf("kind %s: %v", k, lt[k])
		}
	}
	n.SetLayerTiming(false)
	if n.LayerTimes() != nil {
		t.Fatal("LayerTimes after turning timing off")
	}
	dense := mustNet(t, Spec{Arch: ArchMLP, Dim: 2}, 1)
	dense.SetLayerTiming(true)
	if dense.LayerTimes() != nil {
		t.Fatal("dense nets are not timed")
	}
}

// TestUNetThreadCountInvariant: the work split over goroutines changes no
// bit of the loss, the gradients or the VJP.
func TestUNetThreadCountInvariant(t *testing.T) {
	n := mustNet(t, unetSpecs[0].spec, 51)
	randomizeNorms(n, 52)
	d := n.Spec().Dim
	ts, x := randomBatch(53, 5, d)
	_, target := randomBatch(54, 5, d)
	run := func(procs int) (float64, []float32, []float32) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		l, err := n.LossGrad(ts, x, target)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, len(x))
		vjp := make([]float32, len(x))
		if err := n.VJP(ts, x, target, out, vjp); err != nil {
			t.Fatal(err)
		}
		return l, append([]float32(nil), n.Grads()...), vjp
	}
	l1, g1, v1 := run(1)
	for _, procs := range []int{2, 3, 8} {
		l, g, v := run(procs)
		if l != l1 {
			t.Fatalf("GOMAXPROCS %d: loss %g, with 1: %g", procs, l, l1)
		}
		for i := range g {
			if g[i] != g1[i] {
				t.Fatalf("GOMAXPROCS %d: grad %s = %g, with 1: %g", procs, paramLabel(n)(i), g[i], g1[i])
			}
		}
		for i := range v {
			if v[i] != v1[i] {
				t.Fatalf("GOMAXPROCS %d: vjp[%d] = %g, with 1: %g", procs, i, v[i], v1[i])
			}
		}
	}
}
