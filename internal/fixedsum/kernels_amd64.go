//go:build amd64 && !purego

package fixedsum

import "golang.org/x/sys/cpu"

// useAVX2 selects the 4-wide (conversion) and 8-wide (max) kernels;
// cpu.X86.HasAVX2 already requires the OS to save the YMM state.
var useAVX2 = cpu.X86.HasAVX2

// accumulateAVX2 sets acc[i] += bits(float64(t[i])*scale + magic) - bits(magic)
// for i < n, n a multiple of 8.
//
//go:noescape
func accumulateAVX2(acc *int64, t *float32, n int, scale float64)

// maxAbsAVX2 stores in out the lane-wise max of bits(t[i]) & 0x7fffffff
// over i < n, n a multiple of 8.
//
//go:noescape
func maxAbsAVX2(t *float32, n int, out *[8]uint32)

// accumulate adds round(t*scale) to acc, with |t*scale| < 2^termBits.
func accumulate(acc []int64, t []float32, scale float64) {
	t = t[:len(acc)]
	n := len(acc) &^ 7
	if !useAVX2 || n == 0 {
		accumulateGo(acc, t, scale)
		return
	}
	accumulateAVX2(&acc[0], &t[0], n, scale)
	accumulateGo(acc[n:], t[n:], scale)
}

// maxAbsBits is the largest |v| of t as float32 bits.
func maxAbsBits(t []float32) int64 {
	n := len(t) &^ 7
	if !useAVX2 || n == 0 {
		return maxAbsBitsGo(t)
	}
	var lanes [8]uint32
	maxAbsAVX2(&t[0], n, &lanes)
	m := uint32(maxAbsBitsGo(t[n:]))
	for _, l := range lanes {
		m = max(m, l)
	}
	return int64(m)
}
