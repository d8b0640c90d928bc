package cpuset

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Allowed returns the CPUs this process may run on, ascending.
func Allowed() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("read CPU affinity: %w", err)
	}
	return cpusOf(&set), nil
}

// cpusOf lists the CPUs in set, ascending.
func cpusOf(set *unix.CPUSet) []int {
	var cpus []int
	for c := range maxCPU {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// Bind restricts every thread of this process, and the threads it starts
// later, to cpus, each of which must be allowed now: binding narrows, it
// never widens.
func Bind(cpus []int) error {
	allowed, err := Allowed()
	if err != nil {
		return err
	}
	if len(cpus) == 0 {
		return errors.New("bind to CPUs: empty CPU list")
	}
	var want unix.CPUSet
	for _, c := range cpus {
		if !slices.Contains(allowed, c) {
			return fmt.Errorf("bind to CPUs %s: CPU %d is not among this process's allowed CPUs %s", Format(cpus), c, Format(allowed))
		}
		want.Set(c)
	}
	if err := bindThreads(&want); err != nil {
		return fmt.Errorf("bind to CPUs %s: %w", Format(cpus), err)
	}
	return nil
}

// bindThreads sets the affinity of every thread of this process to want.
// Threads started later inherit it from the thread that starts them; the
// passes repeat until none is left unbound, which catches a thread started
// by one not yet bound.
func bindThreads(want *unix.CPUSet) error {
	for range 10 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("list threads: %w", err)
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var got unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &got); err != nil {
				continue // the thread has exited
			}
			if got == *want {
				continue
			}
			if err := unix.SchedSetaffinity(tid, want); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return errors.New("threads kept appearing unbound")
}
