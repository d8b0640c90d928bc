package nn

import (
	"runtime"
	"sync"
)

// maxWorkers bounds the goroutines one pass splits its elementwise work
// over; the GEMMs get their threads from the BLAS.
const maxWorkers = 8

// exec is what a unet pass carries besides its data: the layer timer and
// the workers that share the non-GEMM work (im2col, GroupNorm, SiLU) and
// the row-tap GEMMs when GOMAXPROCS > 1. Work is cut by image or by element
// range, and every output element is computed by the same arithmetic
// whatever the cut, so results do not depend on the number of threads. A
// nil exec runs everything on the calling goroutine, untimed. The closures
// handed to the workers are the passes' only allocations (a unet-small
// step at batch 128: about 4,900 small ones, 290 KB, with two threads; 960,
// 97 KB, with one); the workspaces are reused.
type exec struct {
	prof layerTimer
	gn   []*gnScratch // per worker
	pg   []float64    // per image: GroupNorm parameter-gradient partials
}

func newExec(maxC int) *exec {
	e := &exec{}
	for range maxWorkers {
		e.gn = append(e.gn, newGNScratch(maxC))
	}
	return e
}

func (e *exec) timer() *layerTimer {
	if e == nil {
		return nil
	}
	return &e.prof
}

func (e *exec) mark(kind int) { e.timer().mark(kind) }

// run calls f(worker, lo, hi) on pieces of [0, n) covering it, in parallel.
func (e *exec) run(n int, f func(worker, lo, hi int)) {
	w := 1
	if e != nil {
		w = min(runtime.GOMAXPROCS(0), maxWorkers, n)
	}
	if w <= 1 {
		f(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(w - 1)
	for i := 1; i < w; i++ {
		go func() {
			defer wg.Done()
			f(i, i*n/w, (i+1)*n/w)
		}()
	}
	f(0, 0, n/w)
	wg.Wait()
}

// gnScratch returns worker i's GroupNorm scratch.
func (e *exec) gnScratch(i, c int) *gnScratch {
	if e == nil {
		return newGNScratch(c)
	}
	return e.gn[i]
}

// siluRange is the element count below which SiLU is not split.
const siluRange = 1 << 14

// silu is activate(SiLU, a, sig, z) split over the workers.
func (e *exec) silu(a, sig, z []float32) {
	n := len(z)
	e.run((n+siluRange-1)/siluRange, func(_, lo, hi int) {
		l, h := lo*siluRange, min(hi*siluRange, n)
		activate(SiLU, a[l:h], sig[l:h], z[l:h])
	})
	e.mark(kindSiLU)
}

// siluGrad is activateGrad(SiLU, g, z, a, sig) split over the workers.
func (e *exec) siluGrad(g, z, a, sig []float32) {
	n := len(g)
	e.run((n+siluRange-1)/siluRange, func(_, lo, hi int) {
		l, h := lo*siluRange, min(hi*siluRange, n)
		activateGrad(SiLU, g[l:h], z[l:h], a[l:h], sig[l:h])
	})
	e.mark(kindSiLU)
}
