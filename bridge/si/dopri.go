package si

import (
	"fmt"
	"math"
)

// MethodDopri5 is the adaptive Dormand-Prince 5(4) pair, for the ODE
// sampler and the ODE likelihood.
const MethodDopri5 = "dopri5"

// Default tolerances of the adaptive solver.
const (
	DefaultRTol = 1e-5
	DefaultATol = 1e-6
)

// maxDopriSteps bounds the accepted plus rejected steps of one integration,
// so that a field the tolerances cannot follow ends in an error, not a hang.
const maxDopriSteps = 100000

// Dormand-Prince tableau: c, a (lower triangle), the 5th-order weights b5
// (also the last row of a: first same as last) and the embedded 4th-order b4.
var (
	dpC = [7]float64{0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1}
	dpA = [7][6]float64{
		{},
		{1.0 / 5},
		{3.0 / 40, 9.0 / 40},
		{44.0 / 45, -56.0 / 15, 32.0 / 9},
		{19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
		{9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
		{35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
	}
	dpB5 = [7]float64{35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0}
	dpB4 = [7]float64{5179.0 / 57600, 0, 7571.0 / 16695, 393.0 / 640, -92097.0 / 339200, 187.0 / 2100, 1.0 / 40}
)

// dopri integrates y' = f(t, y) with step-size control on the mixed
// error norm sqrt(mean((err_i / (atol + rtol max(|y_i|, |y'_i|)))^2)) <= 1.
type dopri struct {
	rtol, atol float64
	k          [7][]float64
	yt, yn     []float64
	evals      int
	haveK1     bool
}

func newDopri(n int, rtol, atol float64) (*dopri, error) {
	if rtol == 0 {
		rtol = DefaultRTol
	}
	if atol == 0 {
		atol = DefaultATol
	}
	if !(rtol > 0) || !(atol > 0) || math.IsInf(rtol, 0) || math.IsInf(atol, 0) {
		return nil, fmt.Errorf("dopri5 tolerances rtol %v atol %v: want finite positive numbers", rtol, atol)
	}
	d := &dopri{rtol: rtol, atol: atol, yt: make([]float64, n), yn: make([]float64, n)}
	for i := range d.k {
		d.k[i] = make([]float64, n)
	}
	return d, nil
}

// integrate advances y from t0 to t1 (either direction) in place, starting
// with step |h0| (0 picks one), and returns the last accepted step size for
// the next call.
func (d *dopri) integrate(f rhs, t0, t1 float64, y []float64, h0 float64) (float64, error) {
	span := t1 - t0
	if span == 0 {
		return h0, nil
	}
	dir := math.Copysign(1, span)
	h := math.Abs(h0)
	if h == 0 {
		h = math.Abs(span) / 20
	}
	d.haveK1 = false
	t := t0
	for steps := 0; ; steps++ {
		if steps == maxDopriSteps {
			return 0, fmt.Errorf("dopri5: %d steps without reaching t=%v (at t=%v, step %.3g); loosen rtol/atol", maxDopriSteps, t1, t, h)
		}
		last := false
		if h >= math.Abs(t1-t) {
			h, last = math.Abs(t1-t), true
		}
		hs := dir * h
		errNorm, err := d.step(f, t, hs, y)
		if err != nil {
			return 0, err
		}
		if errNorm <= 1 {
			t += hs
			if last {
				t = t1
			}
			copy(y, d.yn)
			d.k[0], d.k[6] = d.k[6], d.k[0] // first same as last
			d.haveK1 = true
		}
		fac := 5.0
		if errNorm > 0 {
			fac = math.Min(5, math.Max(0.2, 0.9*math.Pow(errNorm, -0.2)))
		}
		if errNorm <= 1 && last {
			return h * fac, nil
		}
		h *= fac
		if errNorm > 1 {
			h = math.Min(h, math.Abs(t1-t)) // a rejected last step is no longer last
		}
		if h < 1e-12 {
			return 0, fmt.Errorf("dopri5: step size %.3g at t=%v underflows; the field is not smooth enough for rtol %v atol %v", h, t, d.rtol, d.atol)
		}
	}
}

// step tries one step of size h from (t, y): it leaves the 5th-order
// solution in yn and the 7th stage in k[6], and returns the error norm.
func (d *dopri) step(f rhs, t, h float64, y []float64) (float64, error) {
	if !d.haveK1 {
		if err := d.eval(f, t, y, d.k[0]); err != nil {
			return 0, err
		}
	}
	for s := 1; s < 7; s++ {
		for i := range y {
			acc := 0.0
			for j := 0; j < s; j++ {
				acc += dpA[s][j] * d.k[j][i]
			}
			d.yt[i] = y[i] + h*acc
		}
		if s == 6 {
			copy(d.yn, d.yt)
		}
		if err := d.eval(f, t+dpC[s]*h, d.yt, d.k[s]); err != nil {
			return 0, err
		}
	}
	var sum float64
	for i := range y {
		var e float64
		for j := 0; j < 7; j++ {
			e += (dpB5[j] - dpB4[j]) * d.k[j][i]
		}
		e *= h
		sc := d.atol + d.rtol*math.Max(math.Abs(y[i]), math.Abs(d.yn[i]))
		sum += (e / sc) * (e / sc)
	}
	n := math.Sqrt(sum / float64(len(y)))
	if math.IsNaN(n) {
		return 0, fmt.Errorf("dopri5 at t=%v: the error estimate is NaN", t)
	}
	// A rejected step keeps k[0]: it is f at the same (t, y).
	d.haveK1 = true
	return n, nil
}

func (d *dopri) eval(f rhs, t float64, y, dy []float64) error {
	d.evals++
	return f(t, y, dy)
}
