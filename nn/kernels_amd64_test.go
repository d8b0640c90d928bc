//go:build amd64 && !purego

package nn

// kernelSets lists the implementations this machine can run: the Go
// kernels first (the others are compared with them), the assembly called
// directly, and the dispatchers activate uses.
func kernelSets() []kernelSet {
	ks := []kernelSet{goKernels}
	if useAVX2FMA {
		ks = append(ks, kernelSet{"avx2", expAsm, sigmoidAsm, siluAsm, siluGradAsm, tanhAsm, tanhGradAsm, signScaleAsm, adamAsm})
	}
	return append(ks, dispatchKernels)
}
