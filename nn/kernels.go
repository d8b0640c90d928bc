package nn

import "math"

// Elementwise float32 kernels for the activations: exp, sigmoid, SiLU and
// tanh with their gradients, and the sign-selected scaling of ReLU and
// LeakyReLU. On amd64 with AVX-512 (F, BW, DQ and VL) they run as 16-wide
// assembly (kernels_avx512_amd64.s), with AVX2 and FMA as 8-wide assembly
// (kernels_amd64.s); elsewhere, with the purego tag, or on older CPUs, the
// Go functions in this file run instead. All compute the same algorithm
// with the same constants, so they agree to within the bounds below (the
// assembly fuses some multiply-adds, the Go code rounds each operation).
// The two assembly widths do the same operations per lane and give the
// same bits for every input, NaN payloads included: training must not
// depend on which machines of a cluster have AVX-512.
//
// Accuracy: the bounds TestKernelAccuracy holds every implementation to,
// as a relative error |got-want|/|want| against float64 math, over every
// 257th float32 bit pattern (all exponents, both signs) plus the special
// values and the thresholds; in brackets the worst seen (stride 61, about
// 70 million values), in ulps of want rounded to float32:
//
//	exp      1.2e-7   (8.2e-8, 1 ulp)   want = math.Exp(x)
//	sigmoid  2.0e-7   (1.7e-7, 2 ulp)   want = 1/(1+math.Exp(-x))
//	SiLU     2.5e-7   (2.2e-7, 3 ulp)   want = x/(1+math.Exp(-x))
//	tanh     1.8e-7   (1.5e-7, 1 ulp)   want = math.Tanh(x)
//
// The assembly and the Go kernels give the same bits for all but about
// one value in 2000, and then differ by at most 2 ulps where the result is
// normal.
//
// Results below the smallest normal float32 (2^-126) are subnormals, not
// flushed to zero; there the bound is absolute instead, one subnormal ulp
// (2^-149), times 1+|x| for SiLU. Exp saturates to +Inf above
// 88.72283 (the largest x whose exp rounds to a finite float32) and to 0
// below -103.97 (where exp rounds to 0); NaN in gives NaN out, and
// exp(±Inf) = +Inf, 0; sigmoid(±Inf) = 1, 0; tanh(±Inf) = ±1; tanh keeps
// the sign of ±0. The gradient kernels and signScale only multiply and
// add in the order of the scalar formulas, so they are exactly rounded
// IEEE float32 arithmetic in both implementations.
//
// Every kernel reads its inputs at index i before writing index i, so an
// output may be the very same slice as an input (in place), but must not
// overlap one at an offset.

// Constants of exp(x) = 2^n e^r: n = round(x log2 e), r = x - n ln2 with
// ln2 split in two (Cody and Waite) so that n*ln2Hi is exact, and e^r by
// Cephes' expf polynomial on |r| <= ln2/2.
const (
	expHi      = 89   // exp(89) overflows: clamping there keeps 2^n representable as two factors
	expLo      = -104 // exp(-104) rounds to 0
	log2e      = 1.44269504088896341
	ln2Hi      = 0.693359375 // 9 significant bits: n*ln2Hi is exact for |n| <= 2^15
	ln2Lo      = -2.12194440e-4
	roundMagic = 12582912 // 1.5 * 2^23: adding it rounds a float32 below 2^22 to an integer
	expP0      = 1.9875691500e-4
	expP1      = 1.3981999507e-3
	expP2      = 8.3334519073e-3
	expP3      = 4.1665795894e-2
	expP4      = 1.6666665459e-1
	expP5      = 5.0000001201e-1
)

// Constants of tanh: below tanhSmall Cephes' tanhf odd polynomial, where
// (1-e^-2|x|)/(1+e^-2|x|) would lose relative accuracy to cancellation.
const (
	tanhSmall = 0.625
	tanhP0    = -5.70498872745e-3
	tanhP1    = 2.06390887954e-2
	tanhP2    = -5.37397155531e-2
	tanhP3    = 1.33314422036e-1
	tanhP4    = -3.33332819422e-1
)

const signMask = 1 << 31

// exp32 is e^x in float32, the scalar form of the assembly's EXP8.
func exp32(x float32) float32 {
	// NaN fails both comparisons and flows through to the result.
	if x > expHi {
		x = expHi
	}
	if x < expLo {
		x = expLo
	}
	t := float32(x*log2e) + roundMagic
	n := t - roundMagic
	r := x - n*ln2Hi
	r = r - n*ln2Lo
	p := float32(expP0)
	p = p*r + expP1
	p = p*r + expP2
	p = p*r + expP3
	p = p*r + expP4
	p = p*r + expP5
	p = p*(r*r) + r
	p = p + 1
	// 2^n as two normal factors, since n spans [-150, 129]: the first
	// product is exact, the second rounds once, into the subnormals if
	// need be, or to +Inf.
	ni := int32(math.Float32bits(t) - math.Float32bits(roundMagic))
	n1 := ni >> 1
	n2 := ni - n1
	return p * math.Float32frombits(uint32(n1+127)<<23) * math.Float32frombits(uint32(n2+127)<<23)
}

// sigmoid32 is 1/(1+e^-x), computed from e = e^-|x| as 1/(1+e) for
// x >= 0 and e/(1+e) for x < 0, so exp never overflows and the far
// negative tail comes out as subnormals rather than 1/Inf = 0.
func sigmoid32(x float32) float32 {
	xb := math.Float32bits(x)
	e := exp32(math.Float32frombits(xb | signMask))
	// Branch-free select of the numerator: the signs are random.
	neg := uint32(int32(xb) >> 31)
	num := math.Float32frombits(math.Float32bits(1) ^ ((math.Float32bits(e) ^ math.Float32bits(1)) & neg))
	return num / (1 + e)
}

// tanh32 is tanh(x): an odd polynomial for |x| < tanhSmall, else
// (1-e)/(1+e) with e = e^-2|x|; both on |x|, then the sign of x put back,
// which also keeps tanh(-0) = -0.
func tanh32(x float32) float32 {
	xb := math.Float32bits(x)
	ax := math.Float32frombits(xb &^ signMask)
	e := exp32(-2 * ax)
	big := (1 - e) / (1 + e)
	z := ax * ax
	p := float32(tanhP0)
	p = p*z + tanhP1
	p = p*z + tanhP2
	p = p*z + tanhP3
	p = p*z + tanhP4
	small := p*z*ax + ax
	// A select, not a branch: which side of tanhSmall is random.
	var m uint32
	if ax < tanhSmall {
		m = ^uint32(0)
	}
	mag := math.Float32bits(big) ^ ((math.Float32bits(small) ^ math.Float32bits(big)) & m)
	return math.Float32frombits(mag | xb&signMask)
}

// expGo sets dst[i] = e^x[i].
func expGo(dst, x []float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = exp32(v)
	}
}

// sigmoidGo sets dst[i] = sigmoid(x[i]).
func sigmoidGo(dst, x []float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = sigmoid32(v)
	}
}

// siluGo sets s[i] = sigmoid(z[i]) and a[i] = z[i]*s[i].
func siluGo(a, s, z []float32) {
	a, s = a[:len(z)], s[:len(z)]
	for i, v := range z {
		si := sigmoid32(v)
		s[i] = si
		a[i] = v * si
	}
}

// siluFwdGo sets a[i] = z[i]*sigmoid(z[i]), the a of siluGo to the bit,
// for passes that run no backward and so need no sigmoid kept.
func siluFwdGo(a, z []float32) {
	a = a[:len(z)]
	for i, v := range z {
		a[i] = v * sigmoid32(v)
	}
}

// siluGradGo sets g[i] *= s*(1+z*(1-s)) with s = s[i] = sigmoid(z[i]):
// the derivative of z*sigmoid(z). The conversions forbid fused
// multiply-adds, so every platform and the assembly round alike.
func siluGradGo(g, z, s []float32) {
	g, s = g[:len(z)], s[:len(z)]
	for i, v := range z {
		si := s[i]
		g[i] *= si * float32(1+float32(v*(1-si)))
	}
}

// tanhGo sets dst[i] = tanh(x[i]).
func tanhGo(dst, x []float32) {
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = tanh32(v)
	}
}

// tanhGradGo sets g[i] *= 1-a[i]^2 with a = tanh(z).
func tanhGradGo(g, a []float32) {
	g = g[:len(a)]
	for i, v := range a {
		g[i] *= 1 - float32(v*v)
	}
}

// signScaleGo sets dst[i] = src[i] * f where f is neg if z[i]'s sign bit
// is set and 1 otherwise: ReLU and LeakyReLU forward (src = z) and
// backward (dst = src = g). A table lookup instead of a branch matters:
// the signs of pre-activations are random, and mispredicted branches made
// these loops as slow as the matrix multiplies.
func signScaleGo(dst, src, z []float32, neg float32) {
	dst, src = dst[:len(z)], src[:len(z)]
	factor := [2]float32{1, neg}
	for i, v := range z {
		dst[i] = src[i] * factor[math.Float32bits(v)>>31]
	}
}

// adamCoef holds one Adam step's scalars: b1, b2 and their complements,
// lr/(1-b1^t), sqrt(1-b2^t) and eps.
type adamCoef struct {
	b1, c1, b2, c2, stepSize, sqrtBC2, eps float64
}

// adamGo is Adam.Step's update, per element in float64:
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g; p -= step m / (sqrt(v)/sqrtBC2 + eps),
// with m and v stored back as float32. The conversions forbid fused
// multiply-adds, so that every platform, and the assembly (which does the
// same IEEE operations in the same order, exactly rounded), gives the same
// bits: replicas stay bit-identical whichever kernel each one runs.
func adamGo(params, grads, m, v []float32, c adamCoef) {
	grads, m, v = grads[:len(params)], m[:len(params)], v[:len(params)]
	for i, g32 := range grads {
		g := float64(g32)
		mi := float64(c.b1*float64(m[i])) + float64(c.c1*g)
		vi := float64(c.b2*float64(v[i])) + float64(float64(c.c2*g)*g)
		m[i] = float32(mi)
		v[i] = float32(vi)
		denom := math.Sqrt(vi)/c.sqrtBC2 + c.eps
		params[i] = float32(float64(params[i]) - float64(c.stepSize*mi)/denom)
	}
}
