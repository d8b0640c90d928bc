package si

import (
	"context"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// VelocityErrorTimes is the grid the acceptance metric averages over:
// t = 0.05, 0.10, ..., 0.95.
func VelocityErrorTimes() []float64 {
	ts := make([]float64, 19)
	for i := range ts {
		ts[i] = 0.05 * float64(i+1)
	}
	return ts
}

// VelocityError compares a learned velocity to the exact one of a Gaussian
// interpolant. For each t it draws n points x ~ rho_t = N(m_t, S_t) from the
// streams (seed, PurposeHeldOut, k, i) and computes the relative L2 error
// e(t) = sqrt( sum_i |bhat(t,x_i) - b(t,x_i)|^2 / sum_i |b(t,x_i)|^2 ).
// It returns the plain average of e over times, and e per time. Times are
// evaluated on one goroutine per core when both fields are [Forker]s.
func VelocityError(learned Field, exact *GaussianVelocity, times []float64, n int, seed uint64) (float64, []float64, error) {
	return fieldError(learned, exact, exact, times, n, seed)
}

// fieldError compares learned with the exact field want on draws of the
// marginals of g's interpolant.
func fieldError(learned, want Field, exact *GaussianVelocity, times []float64, n int, seed uint64) (float64, []float64, error) {
	d := exact.Dim()
	if learned.Dim() != d {
		return 0, nil, fmt.Errorf("field error: learned field has dimension %d, exact %d", learned.Dim(), d)
	}
	if n <= 0 || len(times) == 0 {
		return 0, nil, fmt.Errorf("field error: %d points at %d times, want both > 0", n, len(times))
	}
	perT := make([]float64, len(times))
	// One time is one piece of work; each worker has its own fields and
	// buffers, and the average is summed in time order afterwards.
	w := par.Size(0, len(times))
	learners := forkFields(learned, w)
	w = len(learners)
	exacts := forkFields(want, w)
	if len(exacts) < w {
		learners, w = learners[:len(exacts)], len(exacts)
	}
	type buffers struct {
		tb, x, got, want []float32
		buf              []float64
	}
	bufs := make([]buffers, w)
	for i := range bufs {
		bufs[i] = buffers{make([]float32, n), make([]float32, n*d), make([]float32, n*d), make([]float32, n*d), make([]float64, d)}
	}
	err := par.Do(context.Background(), w, len(times), func(_ context.Context, wk, k int) error {
		t, bf := times[k], bufs[wk]
		mt, st := exact.Marginal(t)
		rhoT, err := NewGaussian(mt, st)
		if err != nil {
			return fmt.Errorf("velocity error at t=%v: %w", t, err)
		}
		for i := 0; i < n; i++ {
			s := rng.New(seed, rng.PurposeHeldOut, uint64(k), uint64(i))
			rhoT.Sample(&s, bf.buf)
			for j, v := range bf.buf {
				bf.x[i*d+j] = float32(v)
			}
			bf.tb[i] = float32(t)
		}
		if err := learners[wk].Eval(bf.tb, bf.x, bf.got); err != nil {
			return fmt.Errorf("velocity error at t=%v: %w", t, err)
		}
		if err := exacts[wk].Eval(bf.tb, bf.x, bf.want); err != nil {
			return fmt.Errorf("velocity error at t=%v: %w", t, err)
		}
		var num, den float64
		for i := range bf.got {
			diff := float64(bf.got[i]) - float64(bf.want[i])
			num += diff * diff
			den += float64(bf.want[i]) * float64(bf.want[i])
		}
		perT[k] = math.Sqrt(num / den)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	var mean float64
	for _, e := range perT {
		mean += e / float64(len(times))
	}
	return mean, perT, nil
}
