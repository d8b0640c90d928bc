//go:build openblas && cgo

package nn

import (
	"os"

	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/gorgonia"

	"github.com/sbtrain/sbtrain/nn/internal/openblas"
)

// OpenBLAS makes the dense layers about three times faster than gonum's
// pure-Go kernels; gorgonia routes every matmul through the installed BLAS.
// Before the first call, the kernels are corrected where OpenBLAS fell back
// to its generic ones (see preferredCore): every process of a run, tests
// included, then computes with the same kernels.
func init() {
	if core := preferredCore(openblas.CoreName(), os.Getenv("OPENBLAS_CORETYPE"), hostVector()); core != "" {
		openblas.UseCore(core)
	}
	gorgonia.Use(netlib.Implementation{})
}

const blasBackend = "OpenBLAS (gonum netlib, cgo)"
