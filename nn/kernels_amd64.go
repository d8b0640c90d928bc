//go:build amd64 && !purego

package nn

import "golang.org/x/sys/cpu"

// useAVX2FMA selects the assembly kernels; cpu.X86.HasAVX2 already
// requires the OS to save the YMM state.
var useAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// useAVX512 selects the 16-wide kernels over the 8-wide ones, where the
// OS saves the ZMM and mask state (cpu.X86.HasAVX512F checks). They give
// the same bits, so the choice only changes speed.
var useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL

// The AVX2 kernels take n > 0, a multiple of 8.

//go:noescape
func expAVX2(dst, x *float32, n int)

//go:noescape
func sigmoidAVX2(dst, x *float32, n int)

//go:noescape
func siluAVX2(a, s, z *float32, n int)

//go:noescape
func siluFwdAVX2(a, z *float32, n int)

//go:noescape
func siluGradAVX2(grad, z, s *float32, n int)

//go:noescape
func tanhAVX2(dst, x *float32, n int)

//go:noescape
func tanhGradAVX2(grad, a *float32, n int)

//go:noescape
func signScaleAVX2(dst, src, z *float32, n int, neg float32)

//go:noescape
func adamAVX2(params, grads, m, v *float32, n int, b1, c1, b2, c2, stepSize, sqrtBC2, eps float64)

// Each wrapper runs the assembly on the whole blocks of 8 and the last
// len%8 elements through a padded copy, not through the Go kernel, so that
// an element's result does not depend on where it sits in the slice
// (sampling relies on a sample's output not depending on its batch). The
// wrappers call the assembly directly: through a func value the padded
// arrays would escape to the heap.

func expAsm(dst, x []float32) {
	n := len(x)
	if n == 0 {
		return
	}
	_ = dst[n-1]
	m := n &^ 7
	if m > 0 {
		expAVX2(&dst[0], &x[0], m)
	}
	if m < n {
		var bd, bx [8]float32
		copy(bx[:], x[m:])
		expAVX2(&bd[0], &bx[0], 8)
		copy(dst[m:n], bd[:])
	}
}

func sigmoidAsm(dst, x []float32) {
	n := len(x)
	if n == 0 {
		return
	}
	_ = dst[n-1]
	m := n &^ 7
	if m > 0 {
		sigmoidAVX2(&dst[0], &x[0], m)
	}
	if m < n {
		var bd, bx [8]float32
		copy(bx[:], x[m:])
		sigmoidAVX2(&bd[0], &bx[0], 8)
		copy(dst[m:n], bd[:])
	}
}

func siluAsm(a, s, z []float32) {
	n := len(z)
	if n == 0 {
		return
	}
	_, _ = a[n-1], s[n-1]
	m := n &^ 7
	if m > 0 {
		siluAVX2(&a[0], &s[0], &z[0], m)
	}
	if m < n {
		var ba, bs, bz [8]float32
		copy(bz[:], z[m:])
		siluAVX2(&ba[0], &bs[0], &bz[0], 8)
		copy(a[m:n], ba[:])
		copy(s[m:n], bs[:])
	}
}

func siluFwdAsm(a, z []float32) {
	n := len(z)
	if n == 0 {
		return
	}
	_ = a[n-1]
	m := n &^ 7
	if m > 0 {
		siluFwdAVX2(&a[0], &z[0], m)
	}
	if m < n {
		var ba, bz [8]float32
		copy(bz[:], z[m:])
		siluFwdAVX2(&ba[0], &bz[0], 8)
		copy(a[m:n], ba[:])
	}
}

func siluGradAsm(g, z, s []float32) {
	n := len(z)
	if n == 0 {
		return
	}
	_, _ = g[n-1], s[n-1]
	m := n &^ 7
	if m > 0 {
		siluGradAVX2(&g[0], &z[0], &s[0], m)
	}
	if m < n {
		var bg, bz, bs [8]float32
		copy(bg[:], g[m:n])
		copy(bz[:], z[m:])
		copy(bs[:], s[m:n])
		siluGradAVX2(&bg[0], &bz[0], &bs[0], 8)
		copy(g[m:n], bg[:])
	}
}

func tanhAsm(dst, x []float32) {
	n := len(x)
	if n == 0 {
		return
	}
	_ = dst[n-1]
	m := n &^ 7
	if m > 0 {
		tanhAVX2(&dst[0], &x[0], m)
	}
	if m < n {
		var bd, bx [8]float32
		copy(bx[:], x[m:])
		tanhAVX2(&bd[0], &bx[0], 8)
		copy(dst[m:n], bd[:])
	}
}

func tanhGradAsm(g, a []float32) {
	n := len(a)
	if n == 0 {
		return
	}
	_ = g[n-1]
	m := n &^ 7
	if m > 0 {
		tanhGradAVX2(&g[0], &a[0], m)
	}
	if m < n {
		var bg, ba [8]float32
		copy(bg[:], g[m:n])
		copy(ba[:], a[m:])
		tanhGradAVX2(&bg[0], &ba[0], 8)
		copy(g[m:n], bg[:])
	}
}

func signScaleAsm(dst, src, z []float32, neg float32) {
	n := len(z)
	if n == 0 {
		return
	}
	_, _ = dst[n-1], src[n-1]
	m := n &^ 7
	if m > 0 {
		signScaleAVX2(&dst[0], &src[0], &z[0], m, neg)
	}
	if m < n {
		var bd, bs, bz [8]float32
		copy(bs[:], src[m:n])
		copy(bz[:], z[m:])
		signScaleAVX2(&bd[0], &bs[0], &bz[0], 8, neg)
		copy(dst[m:n], bd[:])
	}
}

// The dispatchers that activate and activateGrad call.

func expVec(dst, x []float32) {
	switch {
	case useAVX512:
		exp512(dst, x)
	case useAVX2FMA:
		expAsm(dst, x)
	default:
		expGo(dst, x)
	}
}

func sigmoidVec(dst, x []float32) {
	switch {
	case useAVX512:
		sigmoid512(dst, x)
	case useAVX2FMA:
		sigmoidAsm(dst, x)
	default:
		sigmoidGo(dst, x)
	}
}

func siluVec(a, s, z []float32) {
	switch {
	case useAVX512:
		silu512(a, s, z)
	case useAVX2FMA:
		siluAsm(a, s, z)
	default:
		siluGo(a, s, z)
	}
}

func siluFwdVec(a, z []float32) {
	switch {
	case useAVX512:
		siluFwd512(a, z)
	case useAVX2FMA:
		siluFwdAsm(a, z)
	default:
		siluFwdGo(a, z)
	}
}

func siluGradVec(g, z, s []float32) {
	switch {
	case useAVX512:
		siluGrad512(g, z, s)
	case useAVX2FMA:
		siluGradAsm(g, z, s)
	default:
		siluGradGo(g, z, s)
	}
}

func tanhVec(dst, x []float32) {
	switch {
	case useAVX512:
		tanh512(dst, x)
	case useAVX2FMA:
		tanhAsm(dst, x)
	default:
		tanhGo(dst, x)
	}
}

func tanhGradVec(g, a []float32) {
	switch {
	case useAVX512:
		tanhGrad512(g, a)
	case useAVX2FMA:
		tanhGradAsm(g, a)
	default:
		tanhGradGo(g, a)
	}
}

func signScaleVec(dst, src, z []float32, neg float32) {
	switch {
	case useAVX512:
		signScale512(dst, src, z, neg)
	case useAVX2FMA:
		signScaleAsm(dst, src, z, neg)
	default:
		signScaleGo(dst, src, z, neg)
	}
}

// adamAsm runs the assembly on blocks of 4 (float64 lanes) and the Go
// kernel on the rest: the two give the same bits.
func adamAsm(params, grads, m, v []float32, c adamCoef) {
	n := len(params)
	if n == 0 {
		return
	}
	_, _, _ = grads[n-1], m[n-1], v[n-1]
	k := n &^ 3
	if k > 0 {
		adamAVX2(&params[0], &grads[0], &m[0], &v[0], k, c.b1, c.c1, c.b2, c.c2, c.stepSize, c.sqrtBC2, c.eps)
	}
	adamGo(params[k:], grads[k:n], m[k:n], v[k:n], c)
}

func adamVec(params, grads, m, v []float32, c adamCoef) {
	if useAVX2FMA {
		adamAsm(params, grads, m, v, c)
	} else {
		adamGo(params, grads, m, v, c)
	}
}
