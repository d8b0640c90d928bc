package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// childPID finds the one child of parent whose command line holds args in
// a row: a trainer of a local run, by its --id. Only parent's children are
// searched, so no other process can match.
func childPID(t *testing.T, parent int, args ...string) int {
	t.Helper()
	found := childPIDs(t, parent, args...)
	if len(found) != 1 {
		t.Fatalf("want one child of pid %d with arguments %q, found %v", parent, args, found)
	}
	return found[0]
}

// waitChildPID is childPID for a child that may not have started yet.
func waitChildPID(t *testing.T, parent int, timeout time.Duration, args ...string) int {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		found := childPIDs(t, parent, args...)
		if len(found) == 1 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("want one child of pid %d with arguments %q within %v, found %v", parent, args, timeout, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func childPIDs(t *testing.T, parent int, args ...string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone since the listing
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if containsRun(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), args) {
			found = append(found, pid)
		}
	}
	return found
}

// threadCPUs maps each thread of pid to the CPU list it may run on, as the
// kernel reports it in Cpus_allowed_list.
func threadCPUs(t *testing.T, pid int) map[string]string {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("threads of pid %d: %v", pid, err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		status, err := os.ReadFile(filepath.Join(dir, task.Name(), "status"))
		if err != nil {
			continue // the thread has exited
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				out[task.Name()] = strings.TrimSpace(v)
			}
		}
	}
	return out
}
