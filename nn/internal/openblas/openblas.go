//go:build openblas && cgo

package openblas

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int num_threads);
// int openblas_get_num_threads(void);
// char* openblas_get_corename(void);
import "C"

// SetThreads sets how many threads OpenBLAS's own pool may use for one
// call (n < 1 is taken as 1). The setting is process-wide.
func SetThreads(n int) { C.openblas_set_num_threads(C.int(max(n, 1))) }

// Threads is the thread count OpenBLAS currently uses for one call.
func Threads() int { return int(C.openblas_get_num_threads()) }

// CoreName is the kernel set OpenBLAS chose for this CPU at load time
// (for example "SkylakeX", "Haswell", or "Prescott" for a CPU model it
// does not know).
func CoreName() string { return C.GoString(C.openblas_get_corename()) }
