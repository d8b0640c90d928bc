//go:build openblas && cgo

package nn

import "github.com/sbtrain/sbtrain/nn/internal/openblas"

// SetBLASThreads sets how many threads OpenBLAS's own pool may use for one
// call (n < 1 is taken as 1). The setting is process-wide.
func SetBLASThreads(n int) { openblas.SetNumThreads(n) }

// BLASThreads is the thread count OpenBLAS currently uses for one call.
func BLASThreads() int { return openblas.NumThreads() }
