// Package cpuset binds a process to CPUs. Worker processes that share one
// machine (a local cluster, the all-reduce benchmark) run faster bound:
// unbound, the scheduler keeps moving them between cores, and every move
// leaves a loopback TCP sender's packets and cache lines on the old core.
// MPI launchers bind ranks to cores for the same reason.
package cpuset

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported is Bind's error where the OS offers no CPU affinity;
// callers carry on unbound.
var ErrUnsupported = errors.New("binding to CPUs is supported on Linux only")

// maxCPU bounds the CPU numbers Parse accepts; it matches the kernel's
// default CPU mask size.
const maxCPU = 1024

// Share returns the CPUs worker i of n gets out of all: a contiguous block
// of len(all)/n CPUs, rounded so that the blocks cover all, while there are
// at least as many CPUs as workers; otherwise CPU i mod len(all), so that
// neighbours in rank order, which are neighbours on a ring, sit on
// different cores and run at the same time.
func Share(all []int, i, n int) []int {
	if len(all) == 0 || n < 1 || i < 0 || i >= n {
		return nil
	}
	if n > len(all) {
		return []int{all[i%len(all)]}
	}
	return slices.Clone(all[i*len(all)/n : (i+1)*len(all)/n])
}

// Format writes cpus as a list of numbers and ranges, like "0-3,6".
func Format(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			fmt.Fprintf(&b, "-%d", cpus[j])
		}
		i = j + 1
	}
	return b.String()
}

// Parse reads a list like "0-3,6" (the kernel's cpulist format) into
// ascending, distinct CPU numbers.
func Parse(s string) ([]int, error) {
	var cpus []int
	for _, item := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
		a, errA := strconv.Atoi(lo)
		b, errB := a, error(nil)
		if isRange {
			b, errB = strconv.Atoi(hi)
		}
		if errA != nil || errB != nil || a < 0 || b < a || b >= maxCPU {
			return nil, fmt.Errorf("cpu list %q: item %q: want N or N-M with 0 <= N <= M < %d", s, item, maxCPU)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}
