package nn

import "golang.org/x/sys/cpu"

// BLAS names the matrix-multiply backend this binary was built with, and
// for OpenBLAS the kernel set it runs.
func BLAS() string {
	if core := blasCore(); core != "" {
		return blasBackend + ", " + core + " kernels"
	}
	return blasBackend
}

// genericOpenBLASCore is the kernel set OpenBLAS falls back to for an x86
// CPU model it does not recognise, whatever the CPU's vector units: on a
// virtual machine that reports a plain "Intel Xeon Processor" with AVX-512,
// its SSE3 kernels make matrix products about 9 times slower.
const genericOpenBLASCore = "Prescott"

// cpuVector is what of the CPU's vector units OpenBLAS's kernels need.
type cpuVector struct{ avx512, avx2 bool }

func hostVector() cpuVector {
	return cpuVector{
		avx512: cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL,
		avx2:   cpu.X86.HasAVX2 && cpu.X86.HasFMA,
	}
}

// preferredCore is the kernel set OpenBLAS should run when it picked its
// generic ones (current) on a CPU that has AVX-512 or AVX2: "SkylakeX" or
// "Haswell", else "". It is "" with the pure-Go BLAS (current "") and
// whenever OPENBLAS_CORETYPE is set (env), so a user's choice, or a
// machine's that avoids kernels known to fail on it, always stands.
func preferredCore(current, env string, v cpuVector) string {
	if env != "" || current != genericOpenBLASCore {
		return ""
	}
	switch {
	case v.avx512:
		return "SkylakeX"
	case v.avx2:
		return "Haswell"
	}
	return ""
}
