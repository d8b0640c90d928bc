//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/internal/cpuset"
)

// Each trainer of `local` runs with every thread on its share of the CPUs,
// and anywhere with --bind=false.
func TestLocalBindsTrainers(t *testing.T) {
	const workers = 3
	allowed, err := cpuset.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	for _, bind := range []bool{true, false} {
		t.Run(fmt.Sprintf("bind=%v", bind), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			p := startProc(t, "local", dir, localArgs(writeClusterConfig(t, 3), "file://"+filepath.Join(dir, "store"), out, workers,
				"--bind="+strconv.FormatBool(bind))...)
			p.logDirs = []string{filepath.Join(out, "logs")}
			for i := range workers {
				want := cpuset.Format(allowed)
				if bind {
					want = cpuset.Format(cpuset.Share(allowed, i, workers))
				}
				pid := waitChildPID(t, p.cmd.Process.Pid, 30*time.Second, "--id", fmt.Sprintf("trainer-%d", i))
				// The trainer binds right after parsing its flags; wait
				// for that, then every thread must be on its share.
				var got map[string]string
				for deadline := time.Now().Add(10 * time.Second); ; {
					got = threadCPUs(t, pid)
					if allEqual(got, want) || time.Now().After(deadline) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if !allEqual(got, want) {
					t.Fatalf("trainer-%d (pid %d): thread CPU lists %v, want all %q", i, pid, got, want)
				}
				t.Logf("trainer-%d: %d threads on CPUs %s", i, len(got), want)
			}
			p.kill()
		})
	}
}

func allEqual(m map[string]string, want string) bool {
	for _, v := range m {
		if v != want {
			return false
		}
	}
	return len(m) > 0
}

// `bench allreduce` runs its workers as real processes, bound or not, and
// reports a correct sum on every row against a median reference.
func TestBenchAllReduceCommand(t *testing.T) {
	const workers = 3
	shares, err := cpuShares(workers, true)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, s := range shares {
		parts = append(parts, cpuset.Format(s))
	}
	row := regexp.MustCompile(`^\s+(\d+)\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+(\d+)\s`)
	for _, tc := range []struct {
		bind      bool
		placement string
	}{
		{true, "bound to CPUs " + strings.Join(parts, " | ")},
		{false, "unbound"},
	} {
		t.Run(fmt.Sprintf("bind=%v", tc.bind), func(t *testing.T) {
			p := startProc(t, "bench allreduce", t.TempDir(), "bench", "allreduce", "--workers", strconv.Itoa(workers),
				"--sizes", "4KiB:16KiB", "--tcp-bytes", "8MiB", "--tcp-runs", "3", "--max-iters", "5",
				"--bind="+strconv.FormatBool(tc.bind))
			p.waitOK(procTimeout())
			outText := p.out.String()
			if !strings.Contains(outText, tc.placement+")") {
				t.Errorf("header does not say %q:\n%s", tc.placement, outText)
			}
			if !strings.Contains(outText, "the median of 3 transfers") {
				t.Errorf("reference is not the median of 3 transfers:\n%s", outText)
			}
			sizes := map[string]bool{}
			for _, line := range strings.Split(outText, "\n") {
				m := row.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				sizes[m[1]] = true
				if bus, _ := strconv.ParseFloat(m[2], 64); bus <= 0 || m[3] != "0" {
					t.Errorf("row %q: want busbw > 0 and #wrong 0", line)
				}
			}
			for _, s := range []string{"4096", "8192", "16384"} {
				if !sizes[s] {
					t.Errorf("no row for %s bytes:\n%s", s, outText)
				}
			}
		})
	}
}
