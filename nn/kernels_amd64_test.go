//go:build amd64 && !purego

package nn

var (
	avx2Kernels = kernelSet{"avx2", expAsm, sigmoidAsm, siluAsm, siluFwdAsm, siluGradAsm, tanhAsm, tanhGradAsm, signScaleAsm, adamAsm}
	// Adam has no 16-wide form: the AVX2 one is already exact.
	avx512Kernels = kernelSet{"avx512", exp512, sigmoid512, silu512, siluFwd512, siluGrad512, tanh512, tanhGrad512, signScale512, adamAsm}
)

// kernelSets lists the implementations this machine can run: the Go
// kernels first (the others are compared with them), the assembly called
// directly, and the dispatchers activate uses.
func kernelSets() []kernelSet {
	ks := []kernelSet{goKernels}
	if useAVX2FMA {
		ks = append(ks, avx2Kernels)
	}
	if useAVX512 {
		ks = append(ks, avx512Kernels)
	}
	return append(ks, dispatchKernels)
}

// widePair returns the AVX2 and AVX-512 kernels, which must agree to the
// bit, or ok false where this machine cannot run both.
func widePair() (avx2, avx512 kernelSet, ok bool) {
	return avx2Kernels, avx512Kernels, useAVX2FMA && useAVX512
}
