package si

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Diffusion schedules eps(t) of the generative SDEs
// dX = (b +- eps(t) s) dt + sqrt(2 eps(t)) dW.
const (
	EpsConstant = "constant" // eps(t) = eps
	EpsGamma    = "gamma"    // eps(t) = eps g(t)/max g: eps(t) s = -eps eta/max g stays finite at the ends
	EpsGamma2   = "gamma2"   // eps(t) = eps (g(t)/max g)^2: the score term and the noise vanish at the ends
)

// Sampling directions.
const (
	DirectionForward = "forward" // from rho0 at t = 0 to rho1 at t = 1
	DirectionReverse = "reverse" // from rho1 at t = 1 to rho0 at t = 0
)

var epsNames = []string{EpsConstant, EpsGamma, EpsGamma2}

// EpsSchedule is eps(t) with its treatment of the ends. The score
// s = -eta/g is undefined where g = 0, so eps(t) is taken as 0 outside
// [tmin, 1-tmin] and wherever g(t) = 0: the SDE there is the probability
// flow ODE, which carries the same marginals, and the sampler ends with
// plain drift steps instead of a diverging score. Build one with
// NewEpsSchedule.
type EpsSchedule struct {
	kind string
	eps  float64
	path Path
	gmax float64
	tmin float64
}

// NewEpsSchedule validates (kind, eps, tmin) for path p; "" is constant and
// tmin 0 means DefaultScoreTMin. Eps must be finite and >= 0; the gamma
// schedules need a path with noise when eps > 0.
func NewEpsSchedule(kind string, eps float64, p Path, tmin float64) (EpsSchedule, error) {
	if kind == "" {
		kind = EpsConstant
	}
	if !slices.Contains(epsNames, kind) {
		return EpsSchedule{}, fmt.Errorf("eps schedule %q: want one of %s", kind, strings.Join(epsNames, ", "))
	}
	if eps < 0 || math.IsNaN(eps) || math.IsInf(eps, 0) {
		return EpsSchedule{}, fmt.Errorf("eps %v: want a finite number >= 0", eps)
	}
	if tmin == 0 {
		tmin = DefaultScoreTMin
	}
	if !(tmin > 0 && tmin < 0.5) {
		return EpsSchedule{}, fmt.Errorf("score tmin %v: want in (0, 0.5)", tmin)
	}
	if eps > 0 && !p.HasNoise() {
		return EpsSchedule{}, fmt.Errorf("eps %v needs a path with gamma > 0, %s has none", eps, p)
	}
	return EpsSchedule{kind: kind, eps: eps, path: p, gmax: p.maxGamma(), tmin: tmin}, nil
}

// Kind is the schedule's name; Eps its scale.
func (e EpsSchedule) Kind() string { return e.kind }
func (e EpsSchedule) Eps() float64 { return e.eps }

// Zero reports whether eps(t) = 0 everywhere: the SDE is the ODE.
func (e EpsSchedule) Zero() bool { return e.eps == 0 }

// At is eps(t), 0 outside [tmin, 1-tmin] and where g(t) = 0.
func (e EpsSchedule) At(t float64) float64 {
	if e.eps == 0 || t < e.tmin || t > 1-e.tmin {
		return 0
	}
	g := e.path.At(t).G
	if g <= 0 {
		return 0
	}
	switch e.kind {
	case EpsGamma:
		return e.eps * g / e.gmax
	case EpsGamma2:
		r := g / e.gmax
		return e.eps * r * r
	}
	return e.eps
}
