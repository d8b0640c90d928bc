//go:build unix

package storage

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// processAlive is the default LeaseOptions.ProcessAlive: only a process on
// this host that signal 0 reports missing is known dead. EPERM means it
// exists under another user; any other host cannot be checked from here.
func processAlive(host string, pid int) bool {
	self, err := os.Hostname()
	if err != nil || self == "" || host != self || pid <= 0 {
		return true
	}
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	return !zombie(pid)
}

// zombie says whether pid has exited but was not reaped (state Z in
// /proc): signal 0 still finds it, yet it will never renew a lease. This
// happens to a killed coordinator whose parent does not wait for it, e.g.
// in a container whose init does not reap.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
