package nn

// The GroupNorm and bias row kernels, over rows of c floats with per-channel
// vectors of c floats: gnSums, gnAffine, gnBack, colSumRows and addRows
// dispatch to these Go forms or to AVX2+FMA assembly (on amd64 without
// purego, c a multiple of 8). The first three fuse multiply-adds there and
// so may differ in the last bit; the sums are exact alike.
// The choice depends only on c, so a result never depends on how a pass
// was split over threads.

// gnSumsGo adds, per channel j, sum_r a[r,j] to p1[j] and sum_r a[r,j]*b[r,j]
// to p2[j].
func gnSumsGo(p1, p2, a, b []float32, c, rows int) {
	p1, p2 = p1[:c], p2[:c]
	for r := range rows {
		ra, rb := a[r*c:(r+1)*c], b[r*c:(r+1)*c]
		ra, rb = ra[:len(p1)], rb[:len(p1)]
		for j, v := range ra {
			p1[j] += v
			p2[j] += v * rb[j]
		}
	}
}

// gnAffineGo writes z = (x - mu) sc + beta, per channel.
func gnAffineGo(z, x, mu, sc, beta []float32, c, rows int) {
	mu, sc, beta = mu[:c], sc[:c], beta[:c]
	for r := range rows {
		row, out := x[r*c:(r+1)*c], z[r*c:(r+1)*c]
		row, out = row[:len(mu)], out[:len(mu)]
		for j, v := range row {
			out[j] = (v-mu[j])*sc[j] + beta[j]
		}
	}
}

// gnBackGo writes dx = k1 d + k2 (x - mu) + k4 per channel, or with add
// adds it onto dx.
func gnBackGo(dx, x, d, k1, k2, mu, k4 []float32, c, rows int, add bool) {
	k1, k2, mu, k4 = k1[:c], k2[:c], mu[:c], k4[:c]
	for r := range rows {
		row, drow, out := x[r*c:(r+1)*c], d[r*c:(r+1)*c], dx[r*c:(r+1)*c]
		row, drow, out = row[:len(k1)], drow[:len(k1)], out[:len(k1)]
		if add {
			for j, v := range row {
				out[j] += k1[j]*drow[j] + k2[j]*(v-mu[j]) + k4[j]
			}
		} else {
			for j, v := range row {
				out[j] = k1[j]*drow[j] + k2[j]*(v-mu[j]) + k4[j]
			}
		}
	}
}

// colSumRowsGo adds each of rows rows of c floats of m onto dst, in row
// order; the assembly adds in the same order, so both give the same bits.
func colSumRowsGo(dst, m []float32, c, rows int) {
	dst = dst[:c]
	for r := range rows {
		row := m[r*c : (r+1)*c]
		row = row[:len(dst)]
		for j, v := range row {
			dst[j] += v
		}
	}
}

// addRowsGo adds v (c floats) onto each of rows rows of dst; exact like
// the assembly.
func addRowsGo(dst, v []float32, c, rows int) {
	v = v[:c]
	for r := range rows {
		row := dst[r*c : (r+1)*c]
		row = row[:len(v)]
		for j, x := range v {
			row[j] += x
		}
	}
}
