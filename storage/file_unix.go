//go:build unix

package storage

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// fileVersion names one write of a file: a write renames a fresh file into
// place, so the inode changes with each, and size and nanosecond mtime
// guard against an inode number being reused.
func fileVersion(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%x-%x-%x", st.Ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano())
}

// lockKey holds an exclusive flock(2) on a lock file beside dst, so that
// PutIfMatch's compare and swap is one step for every process on the host
// (and on a network file system with working locks).
func lockKey(dst string) (unlock func(), err error) {
	f, err := os.OpenFile(lockPath(dst), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil // closing releases the lock
}
