//go:build openblas && cgo

package openblas

// #cgo LDFLAGS: -lopenblas
// #include <stdlib.h>
//
// void openblas_set_num_threads(int num_threads);
// int openblas_get_num_threads(void);
// char* openblas_get_corename(void);
//
// // A DYNAMIC_ARCH build chooses its kernels once, as it loads, into
// // gotoblas. These two are its internals, declared weak so that a build
// // without them still links and simply keeps its kernels.
// extern void *gotoblas __attribute__((weak));
// extern void gotoblas_dynamic_init(void) __attribute__((weak));
//
// static int sbtrain_use_core(const char *name) {
// 	if (&gotoblas == NULL || gotoblas_dynamic_init == NULL) return 0;
// 	setenv("OPENBLAS_CORETYPE", name, 1);
// 	gotoblas = NULL;
// 	gotoblas_dynamic_init();
// 	return 1;
// }
import "C"

import "unsafe"

// SetThreads sets how many threads OpenBLAS's own pool may use for one
// call (n < 1 is taken as 1). The setting is process-wide.
func SetThreads(n int) { C.openblas_set_num_threads(C.int(max(n, 1))) }

// Threads is the thread count OpenBLAS currently uses for one call.
func Threads() int { return int(C.openblas_get_num_threads()) }

// CoreName is the kernel set OpenBLAS runs (for example "SkylakeX",
// "Haswell", or "Prescott" for a CPU model it does not know).
func CoreName() string { return C.GoString(C.openblas_get_corename()) }

// UseCore makes OpenBLAS set itself up again with the named kernel set, as
// if OPENBLAS_CORETYPE had been set when it loaded. It must run before the
// first BLAS call. It reports false, changing nothing, for a build of
// OpenBLAS that picks its kernels at compile time.
func UseCore(name string) bool {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.sbtrain_use_core(cs) == 1
}
