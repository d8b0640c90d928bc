package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/sbtrain/sbtrain/internal/cpuset"
	"github.com/sbtrain/sbtrain/nn"
)

// addCPUsFlag adds --cpus, the CPUs a process binds itself to; `local` and
// `bench allreduce` give each child its share.
func addCPUsFlag(fs *flag.FlagSet) *string {
	return fs.String("cpus", "", "bind this process to these CPUs, a list like 0-3,6; empty leaves placement to the scheduler")
}

// bindCPUs binds this process to the --cpus list, if one was given. Where
// the OS cannot bind, it warns and runs unbound: binding is a speed-up.
func bindCPUs(list string) error {
	if list == "" {
		return nil
	}
	cpus, err := cpuset.Parse(list)
	if err != nil {
		return usagef("--cpus: %v", err)
	}
	if err := cpuset.Bind(cpus); errors.Is(err, cpuset.ErrUnsupported) {
		slog.Warn("running unbound", "cpus", list, "err", err)
		return nil
	} else if err != nil {
		return usagef("--cpus: %v", err)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The runtime sized GOMAXPROCS before the bind; the simulation
		// pools start one goroutine per GOMAXPROCS, which must be the
		// CPUs this process now has.
		runtime.GOMAXPROCS(len(cpus))
	}
	if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
		// OpenBLAS sized its pool for every core at load; more threads
		// than bound CPUs would only contend.
		nn.SetBLASThreads(len(cpus))
	}
	return nil
}

// childThreads is how many threads a child process should run: the CPUs
// of its share, or, unbound, its part of the machine.
func childThreads(share []int, children int) int {
	if share != nil {
		return len(share)
	}
	return max(1, allowedCPUs()/children)
}

// cpuShares splits the CPUs this process may use among n children with
// cpuset.Share; all nil when bind is false.
func cpuShares(n int, bind bool) ([][]int, error) {
	shares := make([][]int, n)
	if !bind {
		return shares, nil
	}
	allowed, err := cpuset.Allowed()
	if err != nil {
		return nil, fmt.Errorf("split CPUs among %d processes: %w", n, err)
	}
	for i := range shares {
		shares[i] = cpuset.Share(allowed, i, n)
	}
	return shares, nil
}

// allowedCPUs is how many CPUs this process may run on.
func allowedCPUs() int {
	if set, err := cpuset.Allowed(); err == nil && len(set) > 0 {
		return len(set)
	}
	return runtime.NumCPU()
}
