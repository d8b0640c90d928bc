//go:build amd64 && !purego

package nn

// The AVX-512 kernels (kernels_avx512_amd64.s) take any n > 0: they mask
// the last n%16 lanes themselves, so the wrappers only check lengths.

//go:noescape
func expAVX512(dst, x *float32, n int)

//go:noescape
func sigmoidAVX512(dst, x *float32, n int)

//go:noescape
func siluAVX512(a, s, z *float32, n int)

//go:noescape
func siluFwdAVX512(a, z *float32, n int)

//go:noescape
func siluGradAVX512(grad, z, s *float32, n int)

//go:noescape
func tanhAVX512(dst, x *float32, n int)

//go:noescape
func tanhGradAVX512(grad, a *float32, n int)

//go:noescape
func signScaleAVX512(dst, src, z *float32, n int, neg float32)

func exp512(dst, x []float32) {
	if n := len(x); n > 0 {
		_ = dst[n-1]
		expAVX512(&dst[0], &x[0], n)
	}
}

func sigmoid512(dst, x []float32) {
	if n := len(x); n > 0 {
		_ = dst[n-1]
		sigmoidAVX512(&dst[0], &x[0], n)
	}
}

func silu512(a, s, z []float32) {
	if n := len(z); n > 0 {
		_, _ = a[n-1], s[n-1]
		siluAVX512(&a[0], &s[0], &z[0], n)
	}
}

func siluFwd512(a, z []float32) {
	if n := len(z); n > 0 {
		_ = a[n-1]
		siluFwdAVX512(&a[0], &z[0], n)
	}
}

func siluGrad512(g, z, s []float32) {
	if n := len(z); n > 0 {
		_, _ = g[n-1], s[n-1]
		siluGradAVX512(&g[0], &z[0], &s[0], n)
	}
}

func tanh512(dst, x []float32) {
	if n := len(x); n > 0 {
		_ = dst[n-1]
		tanhAVX512(&dst[0], &x[0], n)
	}
}

func tanhGrad512(g, a []float32) {
	if n := len(a); n > 0 {
		_ = g[n-1]
		tanhGradAVX512(&g[0], &a[0], n)
	}
}

func signScale512(dst, src, z []float32, neg float32) {
	if n := len(z); n > 0 {
		_, _ = dst[n-1], src[n-1]
		signScaleAVX512(&dst[0], &src[0], &z[0], n, neg)
	}
}
