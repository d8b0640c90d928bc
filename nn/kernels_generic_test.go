//go:build !amd64 || purego

package nn

func kernelSets() []kernelSet { return []kernelSet{goKernels, dispatchKernels} }

func widePair() (avx2, avx512 kernelSet, ok bool) { return kernelSet{}, kernelSet{}, false }
