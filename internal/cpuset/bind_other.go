//go:build !linux

package cpuset

import "runtime"

// Allowed returns CPUs 0..NumCPU-1: without an affinity call, every CPU
// is assumed usable.
func Allowed() ([]int, error) {
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus, nil
}

// Bind is not available on this OS.
func Bind(cpus []int) error { return ErrUnsupported }
