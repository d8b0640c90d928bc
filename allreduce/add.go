package allreduce

import "unsafe"

// addInto adds the little-endian float32s in src to dst.
func addInto(dst []float32, src []byte) {
	if len(dst) == 0 {
		return
	}
	_ = src[4*len(dst)-1]
	addFloat32(dst, unsafe.Slice((*float32)(unsafe.Pointer(&src[0])), len(dst)))
}

// addFloat32Go is the portable kernel, and the reference the assembly is
// tested against: IEEE float32 additions one element at a time.
func addFloat32Go(dst, src []float32) {
	s := src[:len(dst)]
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		d := dst[i : i+8 : i+8]
		x := s[i : i+8 : i+8]
		d[0] += x[0]
		d[1] += x[1]
		d[2] += x[2]
		d[3] += x[3]
		d[4] += x[4]
		d[5] += x[5]
		d[6] += x[6]
		d[7] += x[7]
	}
	for ; i < len(dst); i++ {
		dst[i] += s[i]
	}
}

// addInt64 sets dst[i] += src[i], wrapping on overflow.
func addInt64(dst, src []int64) {
	s := src[:len(dst)]
	for i := range dst {
		dst[i] += s[i]
	}
}

// maxInt64 sets dst[i] = max(dst[i], src[i]).
func maxInt64(dst, src []int64) {
	s := src[:len(dst)]
	for i := range dst {
		dst[i] = max(dst[i], s[i])
	}
}
