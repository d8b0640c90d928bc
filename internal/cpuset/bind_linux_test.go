package cpuset

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// threadAffinities maps each thread of this process to its CPU list.
func threadAffinities(t *testing.T) map[int]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) != nil {
			continue
		}
		out[tid] = Format(cpusOf(&set))
	}
	return out
}

func TestBindEveryThread(t *testing.T) {
	allowed, err := Allowed()
	if err != nil || len(allowed) == 0 {
		t.Fatalf("Allowed() = %v, %v", allowed, err)
	}
	t.Cleanup(func() {
		var all unix.CPUSet
		for _, c := range allowed {
			all.Set(c)
		}
		if err := bindThreads(&all); err != nil {
			t.Errorf("restore binding: %v", err)
		}
	})
	// Threads parked in syscalls and locked goroutines are threads too.
	release := make(chan struct{})
	defer close(release)
	for range 3 {
		startLockedThread(release)
	}
	one := allowed[len(allowed)-1:]
	if err := Bind(one); err != nil {
		t.Fatal(err)
	}
	for tid, got := range threadAffinities(t) {
		if got != Format(one) {
			t.Errorf("thread %d runs on CPUs %s, want %s", tid, got, Format(one))
		}
	}
	// A thread started after Bind inherits it.
	startLockedThread(release)
	for tid, got := range threadAffinities(t) {
		if got != Format(one) {
			t.Errorf("after a new thread: thread %d runs on CPUs %s, want %s", tid, got, Format(one))
		}
	}
}

// startLockedThread starts a goroutine that holds an OS thread of its own
// until release is closed, and returns once it holds it.
func startLockedThread(release <-chan struct{}) {
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(ready)
		<-release
	}()
	<-ready
}

func TestBindRejects(t *testing.T) {
	allowed, err := Allowed()
	if err != nil {
		t.Fatal(err)
	}
	outside := allowed[len(allowed)-1] + 1
	for _, tc := range []struct {
		cpus []int
		want string
	}{
		{nil, "empty CPU list"},
		{[]int{outside}, "CPU " + strconv.Itoa(outside) + " is not among"},
	} {
		err := Bind(tc.cpus)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Bind(%v) = %v, want an error containing %q", tc.cpus, err, tc.want)
		}
	}
	for tid, got := range threadAffinities(t) {
		if got != Format(allowed) {
			t.Errorf("a refused Bind changed thread %d to CPUs %s, want %s", tid, got, Format(allowed))
		}
	}
}
