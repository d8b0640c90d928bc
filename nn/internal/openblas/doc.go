// Package openblas links the binary against OpenBLAS (with the openblas
// build tag and cgo), which gonum's netlib BLAS wrapper calls but leaves
// to its user to link, and sets OpenBLAS's thread count. It is a package
// of its own because package nn holds Go assembly, and a cgo package
// cannot: every cgo call of nn lives here.
package openblas
