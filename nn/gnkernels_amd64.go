//go:build amd64 && !purego

package nn

//go:noescape
func gnSumsAVX2(p1, p2, a, b *float32, c, rows int)

//go:noescape
func gnAffineAVX2(z, x, mu, sc, beta *float32, c, rows int)

//go:noescape
func gnBackAVX2(dx, x, d, k1, k2, mu, k4 *float32, c, rows, add int)

// gnVec reports whether rows of c floats go through the assembly.
func gnVec(c int) bool { return useAVX2FMA && c > 0 && c%8 == 0 }

func gnSums(p1, p2, a, b []float32, c, rows int) {
	if !gnVec(c) || rows == 0 {
		gnSumsGo(p1, p2, a, b, c, rows)
		return
	}
	_, _, _, _ = p1[c-1], p2[c-1], a[rows*c-1], b[rows*c-1]
	gnSumsAVX2(&p1[0], &p2[0], &a[0], &b[0], c, rows)
}

func gnAffine(z, x, mu, sc, beta []float32, c, rows int) {
	if !gnVec(c) || rows == 0 {
		gnAffineGo(z, x, mu, sc, beta, c, rows)
		return
	}
	_, _, _, _, _ = z[rows*c-1], x[rows*c-1], mu[c-1], sc[c-1], beta[c-1]
	gnAffineAVX2(&z[0], &x[0], &mu[0], &sc[0], &beta[0], c, rows)
}

func gnBack(dx, x, d, k1, k2, mu, k4 []float32, c, rows int, add bool) {
	if !gnVec(c) || rows == 0 {
		gnBackGo(dx, x, d, k1, k2, mu, k4, c, rows, add)
		return
	}
	_, _, _ = dx[rows*c-1], x[rows*c-1], d[rows*c-1]
	_, _, _, _ = k1[c-1], k2[c-1], mu[c-1], k4[c-1]
	a := 0
	if add {
		a = 1
	}
	gnBackAVX2(&dx[0], &x[0], &d[0], &k1[0], &k2[0], &mu[0], &k4[0], c, rows, a)
}

//go:noescape
func colSumAVX2(dst, m *float32, c, rows int)

//go:noescape
func addRowsAVX2(dst, v *float32, c, rows int)

func colSumRows(dst, m []float32, c, rows int) {
	if !gnVec(c) || rows == 0 {
		colSumRowsGo(dst, m, c, rows)
		return
	}
	_, _ = dst[c-1], m[rows*c-1]
	colSumAVX2(&dst[0], &m[0], c, rows)
}

func addRows(dst, v []float32, c, rows int) {
	if !gnVec(c) || rows == 0 {
		addRowsGo(dst, v, c, rows)
		return
	}
	_, _ = dst[rows*c-1], v[c-1]
	addRowsAVX2(&dst[0], &v[0], c, rows)
}
