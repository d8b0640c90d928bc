//go:build unix

package storage

import (
	"errors"
	"os"
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
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
