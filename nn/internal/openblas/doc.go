// Package openblas links the binary against OpenBLAS (with the openblas
// build tag and cgo), which gonum's netlib BLAS wrapper calls but leaves
// to its user to link. It is a package of its own, imported for that side
// effect, because package nn holds Go assembly and a cgo package cannot.
package openblas
