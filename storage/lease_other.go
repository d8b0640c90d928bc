//go:build !unix

package storage

// processAlive is the default LeaseOptions.ProcessAlive where processes
// cannot be probed: every holder counts as alive until its lease expires.
func processAlive(host string, pid int) bool { return true }
