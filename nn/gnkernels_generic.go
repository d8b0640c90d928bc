//go:build !amd64 || purego

package nn

func gnSums(p1, p2, a, b []float32, c, rows int) { gnSumsGo(p1, p2, a, b, c, rows) }

func gnAffine(z, x, mu, sc, beta []float32, c, rows int) { gnAffineGo(z, x, mu, sc, beta, c, rows) }

func gnBack(dx, x, d, k1, k2, mu, k4 []float32, c, rows int, add bool) {
	gnBackGo(dx, x, d, k1, k2, mu, k4, c, rows, add)
}

func colSumRows(dst, m []float32, c, rows int) { colSumRowsGo(dst, m, c, rows) }

func addRows(dst, v []float32, c, rows int) { addRowsGo(dst, v, c, rows) }
