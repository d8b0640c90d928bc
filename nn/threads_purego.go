//go:build !openblas || !cgo

package nn

// SetBLASThreads does nothing with the pure-Go BLAS: gonum's kernels run on
// the calling goroutine, so the only parallelism is the caller's.
func SetBLASThreads(n int) {}

// BLASThreads is 1 with the pure-Go BLAS: one call uses one goroutine.
func BLASThreads() int { return 1 }

func blasCore() string { return "" }
