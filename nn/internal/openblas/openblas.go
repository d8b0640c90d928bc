//go:build openblas && cgo

package openblas

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int num_threads);
// int openblas_get_num_threads(void);
import "C"

// SetNumThreads sets how many threads OpenBLAS's own pool may use for one
// call (n < 1 is taken as 1). The setting is process-wide.
func SetNumThreads(n int) { C.openblas_set_num_threads(C.int(max(n, 1))) }

// NumThreads is the thread count OpenBLAS currently uses for one call.
func NumThreads() int { return int(C.openblas_get_num_threads()) }
