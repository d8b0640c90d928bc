package nn

import (
	"math"
	"testing"
)

// wideInputs returns the special values, pseudo-random pre-activations,
// pseudo-random bit patterns (NaN payloads and subnormals included) and
// every stride-th float32 bit pattern, both signs and all exponents.
func wideInputs(stride uint64) []float32 {
	xs := specialInputs()
	xs = append(xs, kernelInputs(5000, 3)...)
	s := uint32(0x9e3779b9)
	for range 5000 {
		s ^= s << 13
		s ^= s >> 17
		s ^= s << 5
		xs = append(xs, math.Float32frombits(s))
	}
	for b := uint64(0); b < 1<<32; b += stride {
		xs = append(xs, math.Float32frombits(uint32(b)))
	}
	return xs
}

// TestKernelAVX512MatchesAVX2 holds the 16-wide kernels to the 8-wide
// ones' bits, NaN payloads included, on every input: a cluster may mix
// machines with and without AVX-512, and a run's results must not depend
// on which. The chunks are an odd length so that both tails are used.
// -short takes every 65537th bit pattern instead of every 257th.
func TestKernelAVX512MatchesAVX2(t *testing.T) {
	k2, k5, ok := widePair()
	if !ok {
		t.Skip("this machine cannot run both the AVX2 and the AVX-512 kernels")
	}
	stride := uint64(257)
	if testing.Short() {
		stride = 65537
	}
	xs := wideInputs(stride)
	// Every float32 where exp's result is subnormal or near overflow,
	// where the 2^n scaling rounds: EXP8 does it with two multiplies,
	// EXP16 with one VSCALEFPS.
	for _, r := range [][2]float32{{-86, -105}, {88, 89.5}} {
		for v := r[0]; v != r[1]; v = math.Nextafter32(v, r[1]) {
			xs = append(xs, v)
		}
	}
	const chunk = 4093
	g := kernelInputs(chunk, 9)
	type out struct{ a, b []float32 }
	newOut := func() out { return out{make([]float32, chunk), make([]float32, chunk)} }
	o2, o5 := newOut(), newOut()
	type op struct {
		name string
		run  func(k kernelSet, o out, x []float32)
	}
	ops := []op{
		{"exp", func(k kernelSet, o out, x []float32) { k.exp(o.a, x) }},
		{"sigmoid", func(k kernelSet, o out, x []float32) { k.sigmoid(o.a, x) }},
		{"silu", func(k kernelSet, o out, x []float32) { k.silu(o.a, o.b, x) }},
		{"siluFwd", func(k kernelSet, o out, x []float32) { k.siluFwd(o.a, x) }},
		{"tanh", func(k kernelSet, o out, x []float32) { k.tanh(o.a, x) }},
		// The gradients take x as z (and as a for tanh); s is the
		// sigmoid of a shifted x, and once x itself, so that s spans
		// every bit pattern too.
		{"siluGrad", func(k kernelSet, o out, x []float32) {
			copy(o.a, g)
			sigmoidGo(o.b[:len(x)], x[1:])
			k.siluGrad(o.a[:len(x)-1], x[:len(x)-1], o.b[:len(x)-1])
		}},
		{"siluGradRawS", func(k kernelSet, o out, x []float32) {
			copy(o.a, g)
			k.siluGrad(o.a[:len(x)], g[:len(x)], x)
		}},
		{"tanhGrad", func(k kernelSet, o out, x []float32) {
			copy(o.a, g)
			k.tanhGrad(o.a[:len(x)], x)
		}},
		{"leaky", func(k kernelSet, o out, x []float32) { k.signScale(o.a, x, x, leakySlope) }},
		{"reluGrad", func(k kernelSet, o out, x []float32) {
			copy(o.a, g)
			k.signScale(o.a[:len(x)], o.a[:len(x)], x, 0)
		}},
	}
	differ := 0
	for lo := 0; lo < len(xs); lo += chunk {
		x := xs[lo:min(lo+chunk, len(xs))]
		if len(x) < 2 {
			x = xs[lo-1:]
		}
		for _, o := range ops {
			o.run(k2, o2, x)
			o.run(k5, o5, x)
			for i := range x {
				if math.Float32bits(o2.a[i]) != math.Float32bits(o5.a[i]) ||
					o.name == "silu" && math.Float32bits(o2.b[i]) != math.Float32bits(o5.b[i]) {
					if differ < 20 {
						t.Errorf("%s(%g = %#08x): avx2 %#08x %#08x, avx512 %#08x %#08x", o.name, x[i], math.Float32bits(x[i]),
							math.Float32bits(o2.a[i]), math.Float32bits(o2.b[i]), math.Float32bits(o5.a[i]), math.Float32bits(o5.b[i]))
					}
					differ++
				}
			}
		}
	}
	if differ > 0 {
		t.Errorf("%d results differ between avx2 and avx512", differ)
	}
	t.Logf("%d inputs, %d kernels: avx2 and avx512 agree bitwise", len(xs), len(ops))
}

// TestSiluFwdMatchesSilu: the forward-only SiLU gives each
// implementation's silu a to the bit, so Net.Forward, which uses it,
// agrees with LossGrad's and VJP's forward passes.
func TestSiluFwdMatchesSilu(t *testing.T) {
	stride := uint64(4099)
	if testing.Short() {
		stride = 65537
	}
	xs := wideInputs(stride)
	a, s, f := make([]float32, len(xs)), make([]float32, len(xs)), make([]float32, len(xs))
	for _, k := range kernelSets() {
		k.silu(a, s, xs)
		k.siluFwd(f, xs)
		for i := range xs {
			if math.Float32bits(a[i]) != math.Float32bits(f[i]) {
				t.Fatalf("%s: siluFwd(%g) = %#08x, silu gives %#08x", k.name, xs[i], math.Float32bits(f[i]), math.Float32bits(a[i]))
			}
		}
	}
}
