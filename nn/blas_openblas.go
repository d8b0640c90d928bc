//go:build openblas && cgo

package nn

// #cgo LDFLAGS: -lopenblas
// #include <stdlib.h>
// #include <string.h>
// #include <strings.h>
//
// extern void *gotoblas;
// extern void gotoblas_dynamic_init(void);
// extern char *openblas_get_corename(void);
//
// // Debian's OpenBLAS 0.3.21 is built with DYNAMIC_ARCH, and on CPUs it
// // does not know (Sapphire Rapids under KVM, for one) it falls back to its
// // Prescott kernels: SSE3, about a fifth of the AVX-512 kernels' speed.
// // When the library took that fallback and OPENBLAS_CORETYPE is unset,
// // choose the kernels from the CPU's features and let the library set
// // itself up again; nothing has called it yet at package init.
// static void sbtrain_pick_coretype(void) {
// 	if (getenv("OPENBLAS_CORETYPE") != NULL) return;
// 	if (strcasecmp(openblas_get_corename(), "prescott") != 0) return;
// 	__builtin_cpu_init();
// 	const char *want = NULL;
// 	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
// 	    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
// 		want = "SkylakeX";
// 	} else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
// 		want = "Haswell";
// 	}
// 	if (want == NULL) return;
// 	setenv("OPENBLAS_CORETYPE", want, 0);
// 	gotoblas = NULL;
// 	gotoblas_dynamic_init();
// }
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/gorgonia"
)

// OpenBLAS makes the dense layers about three times faster than gonum's
// pure-Go kernels; gorgonia routes every matmul through the installed BLAS.
func init() {
	C.sbtrain_pick_coretype()
	gorgonia.Use(netlib.Implementation{})
	blasBackend = "OpenBLAS (gonum netlib, cgo), " + C.GoString(C.openblas_get_corename()) + " kernels"
}

var blasBackend = "OpenBLAS (gonum netlib, cgo)"
