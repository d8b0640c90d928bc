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
// and anywhere with --bind=false; --cpus narrows what there is to share,
// for `local` itself and for its trainers, bound or not.
func TestLocalBindsTrainers(t *testing.T) {
	const workers = 3
	allowed, err := cpuset.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	last := allowed[len(allowed)-1:]
	for _, tc := range []struct {
		bind bool
		cpus []int // --cpus; nil leaves it out
	}{
		{bind: true},
		{bind: false},
		{bind: true, cpus: last},
		{bind: false, cpus: last},
	} {
		t.Run(fmt.Sprintf("bind=%v,cpus=%s", tc.bind, cpuset.Format(tc.cpus)), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			extra := []string{"--bind=" + strconv.FormatBool(tc.bind)}
			pool := allowed
			if tc.cpus != nil {
				extra = append(extra, "--cpus", cpuset.Format(tc.cpus))
				pool = tc.cpus
			}
			p := startProc(t, "local", dir, localArgs(writeClusterConfig(t, 3), "file://"+filepath.Join(dir, "store"), out, workers, extra...)...)
			p.logDirs = []string{filepath.Join(out, "logs")}
			waitThreadsOn(t, "local", p.cmd.Process.Pid, cpuset.Format(pool))
			for i := range workers {
				want := cpuset.Format(pool)
				if tc.bind {
					want = cpuset.Format(cpuset.Share(pool, i, workers))
				}
				pid := waitChildPID(t, p.cmd.Process.Pid, 30*time.Second, "--id", fmt.Sprintf("trainer-%d", i))
				waitThreadsOn(t, fmt.Sprintf("trainer-%d", i), pid, want)
			}
			p.kill()
		})
	}
}

// waitThreadsOn waits until every thread of pid may run on the CPUs want
// and no others: a process binds right after parsing its flags.
func waitThreadsOn(t *testing.T, name string, pid int, want string) {
	t.Helper()
	var got map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; {
		got = threadCPUs(t, pid)
		if allEqual(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !allEqual(got, want) {
		t.Fatalf("%s (pid %d): thread CPU lists %v, want all %q", name, pid, got, want)
	}
	t.Logf("%s: %d threads on CPUs %s", name, len(got), want)
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

// `train --cpus` runs every thread on the CPUs it names.
func TestTrainBindsToCPUs(t *testing.T) {
	allowed, err := cpuset.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	last := cpuset.Format(allowed[len(allowed)-1:])
	dir := t.TempDir()
	p := startProc(t, "train", dir, "train", "--cpus", last, "--out", filepath.Join(dir, "out"), "--quiet")
	waitThreadsOn(t, "train", p.cmd.Process.Pid, last)
	p.kill()
}

// `bench local` times `train`, `local --workers 1` on one CPU and `local`
// at each worker count, and compares every row with the first two.
func TestBenchLocalCommand(t *testing.T) {
	allowed, err := cpuset.Allowed()
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "bench local", t.TempDir(), "bench", "local", "--config", writeClusterConfig(t, 3),
		"--workers", "2", "--steps", "30", "--iterations", "1")
	p.waitOK(procTimeout())
	out := p.out.String()
	row := regexp.MustCompile(`(?m)^\s+(train|local)\s+(\d+)\s+(\S+)\s+(\d+)\s+([\d.]+)x\s+([\d.]+)x\s`)
	rows := row.FindAllStringSubmatch(out, -1)
	want := [][3]string{
		{"train", "1", cpuset.Format(allowed)},
		{"local", "1", cpuset.Format(allowed[:1])},
		{"local", "2", cpuset.Format(allowed)},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), out)
	}
	for i, w := range want {
		r := rows[i]
		if [3]string{r[1], r[2], r[3]} != w {
			t.Errorf("row %d is %s %s on CPUs %s, want %v", i, r[1], r[2], r[3], w)
		}
		if sps, _ := strconv.Atoi(r[4]); sps <= 0 {
			t.Errorf("row %d: %s samples/s, want > 0", i, r[4])
		}
	}
	if rows[0][5] != "1.00" || rows[1][6] != "1.00" {
		t.Errorf("train vs train %sx and one CPU vs one CPU %sx, want 1.00x each:\n%s", rows[0][5], rows[1][6], out)
	}
}
