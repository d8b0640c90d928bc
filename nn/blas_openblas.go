//go:build openblas && cgo

package nn

import (
	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/gorgonia"

	_ "github.com/sbtrain/sbtrain/nn/internal/openblas" // links -lopenblas (threads_openblas.go uses it too)
)

// OpenBLAS makes the dense layers about three times faster than gonum's
// pure-Go kernels; gorgonia routes every matmul through the installed BLAS.
func init() { gorgonia.Use(netlib.Implementation{}) }

const blasBackend = "OpenBLAS (gonum netlib, cgo)"
