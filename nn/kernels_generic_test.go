//go:build !amd64 || purego

package nn

func kernelSets() []kernelSet { return []kernelSet{goKernels, dispatchKernels} }
