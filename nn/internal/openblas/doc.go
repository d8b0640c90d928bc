// Package openblas links the binary against OpenBLAS (with the openblas
// build tag and cgo), which gonum's netlib BLAS wrapper calls but leaves
// to its user to link, and holds the few calls sbtrain makes into the
// library itself: its thread count and its kernel set. It is a package of
// its own because package nn holds Go assembly, which a cgo package
// cannot.
package openblas
