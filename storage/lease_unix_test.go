//go:build unix

package storage

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// exitedPID returns the pid of a process that has run and been reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	// Any short-lived program will do; true starts faster than this test
	// binary, the fallback.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if p, err := exec.LookPath("true"); err == nil {
		cmd = exec.Command(p)
	}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

func TestProcessAlive(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	dead := exitedPID(t)
	cases := []struct {
		name string
		host string
		pid  int
		want bool
	}{
		{"this process", host, os.Getpid(), true},
		{"parent process", host, os.Getppid(), true},
		{"exited process", host, dead, false},
		{"exited pid on another host", host + "-other", dead, true},
		{"no pid", host, 0, true},
		{"no host", "", dead, true},
	}
	for _, tc := range cases {
		if got := processAlive(tc.host, tc.pid); got != tc.want {
			t.Errorf("%s: processAlive(%q, %d) = %v, want %v", tc.name, tc.host, tc.pid, got, tc.want)
		}
	}
}

// TestLeaseAfterKill: when every process of a run was killed, the same
// command started again on the same host gets the lease at once, with the
// default process check and no operator.
func TestLeaseAfterKill(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		now := time.Now().UTC()
		writeLease(t, s, "demo", LeaseInfo{
			Holder: "coordinator@127.0.0.1:7946", Acquired: now.Format(time.RFC3339), Token: "killed",
			Renewed: now.Format(time.RFC3339Nano), TTLSeconds: 15, Host: host, PID: exitedPID(t),
		})
		log, logs := newTestLogger(t)
		l, err := AcquireLease(context.Background(), s, "demo", "coordinator@127.0.0.1:7946", LeaseOptions{Logger: log})
		if err != nil {
			t.Fatalf("restart after kill: %v", err)
		}
		if !strings.Contains(logs.String(), "is gone") {
			t.Errorf("takeover not logged with its reason:\n%s", logs)
		}
		if cur, err := ReadLease(context.Background(), s, "demo"); err != nil || cur != l.Info {
			t.Errorf("lease now %+v, %v", cur, err)
		}
	})
}

// TestProcessAliveZombie: a holder that exited but was never reaped (its
// parent does not wait) still answers signal 0, yet is dead.
func TestProcessAliveZombie(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	p, err := exec.LookPath("true")
	if err != nil {
		t.Skipf("no true: %v", err)
	}
	cmd := exec.Command(p)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	for i := 0; i < 200 && !zombie(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !zombie(pid) {
		t.Fatalf("child %d did not become a zombie within 2 s", pid)
	}
	if processAlive(host, pid) {
		t.Errorf("processAlive(%q, %d) = true for an unreaped exited process", host, pid)
	}
	if !processAlive(host, os.Getpid()) || zombie(os.Getpid()) {
		t.Error("this live process counts as dead")
	}
}
