// Package eval owns how results are measured: distances between point clouds
// (sliced Wasserstein-2, MMD with a mixture of RBF bandwidths, energy
// distance), sample moments, closed forms for Gaussian Schrödinger bridges,
// and PNG plots of samples, trajectories and loss curves. For images it
// owns a small LeNet-style classifier trained from a seed (its penultimate
// features give a Fréchet distance, its predictions a class histogram)
// and the pictures that replace scatter plots: sample grids, trajectory
// strips, animated chains (GIF) and source/result pairs.
//
// Point clouds are row-major float32 (Cloud), the layout dataset.Draw and the
// samplers produce; all arithmetic is done in float64. Every random choice
// (projection directions, subsamples) comes from an rng stream the caller
// passes, and parallel work is cut into fixed chunks whose partial results
// are summed in order, so a value depends on its inputs, never on the number
// of cores.
package eval

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Cloud is n points of dimension Dim, row-major: point i is
// Data[i*Dim : (i+1)*Dim].
type Cloud struct {
	Data []float32
	Dim  int
}

// Len is the number of points.
func (c Cloud) Len() int {
	if c.Dim <= 0 {
		return 0
	}
	return len(c.Data) / c.Dim
}

// Row returns point i.
func (c Cloud) Row(i int) []float32 { return c.Data[i*c.Dim : (i+1)*c.Dim] }

// Check reports an empty or malformed cloud, or a non-finite coordinate;
// name says which cloud in the error.
func (c Cloud) Check(name string) error {
	if c.Dim < 1 {
		return fmt.Errorf("%s cloud: dim = %d, want >= 1", name, c.Dim)
	}
	if len(c.Data)%c.Dim != 0 {
		return fmt.Errorf("%s cloud: %d values is not a whole number of %d-dimensional points", name, len(c.Data), c.Dim)
	}
	if len(c.Data) == 0 {
		return fmt.Errorf("%s cloud is empty", name)
	}
	for i, v := range c.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%s cloud: point %d coordinate %d is %v", name, i/c.Dim, i%c.Dim, v)
		}
	}
	return nil
}

// checkPair checks both clouds and that they live in the same space.
func checkPair(x, y Cloud) error {
	if err := x.Check("first"); err != nil {
		return err
	}
	if err := y.Check("second"); err != nil {
		return err
	}
	if x.Dim != y.Dim {
		return fmt.Errorf("clouds have dimensions %d and %d, want equal", x.Dim, y.Dim)
	}
	return nil
}

// float64s returns the points as float64 rows in one flat slice.
func float64s(c Cloud) []float64 {
	out := make([]float64, len(c.Data))
	for i, v := range c.Data {
		out[i] = float64(v)
	}
	return out
}

// parallel runs fn(i) for i in [0, n) on up to GOMAXPROCS goroutines and
// returns when all are done. fn must write only to its own index's slot.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
