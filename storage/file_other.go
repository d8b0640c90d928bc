//go:build !unix

package storage

import (
	"fmt"
	"io/fs"
	"sync"
)

func fileVersion(fi fs.FileInfo) string {
	return fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano())
}

// keyLocks serialise PutIfMatch within this process only: without
// flock(2), two processes swapping one key on this platform can race.
var keyLocks sync.Map

func lockKey(dst string) (unlock func(), err error) {
	v, _ := keyLocks.LoadOrStore(dst, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock, nil
}
