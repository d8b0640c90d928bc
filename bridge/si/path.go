package si

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Path names accepted by NewPath.
const (
	PathLinear         = "linear"           // a = 1-t, b = t
	PathTrig           = "trig"             // a = sqrt(1-g^2) cos(pi t/2), b = sqrt(1-g^2) sin(pi t/2)
	PathEncDec         = "encdec"           // a = cos^2(pi t) on [0,1/2), b = cos^2(pi t) on (1/2,1], g = sin^2(pi t)
	PathOneSidedLinear = "one-sided-linear" // x0 ~ N(0, I) plays the latent, g = 0, a = 1-t, b = t
	PathOneSidedTrig   = "one-sided-trig"   // x0 ~ N(0, I), g = 0, a = cos(pi t/2), b = sin(pi t/2)
	// PathMirror is the mirror interpolant x_t = x + g(t) z with x drawn
	// once from rho1 (rho0 = rho1): a = 0, b = 1, for denoising and score
	// learning.
	PathMirror = "mirror"
)

// Gamma names accepted by NewPath; c is the scale.
const (
	GammaSqrt = "sqrt" // g = sqrt(c t(1-t))
	GammaQuad = "quad" // g = c t(1-t)
	GammaSin2 = "sin2" // g = c sin^2(pi t)
	GammaNone = "none" // g = 0
)

var (
	pathNames  = []string{PathLinear, PathTrig, PathEncDec, PathOneSidedLinear, PathOneSidedTrig, PathMirror}
	gammaNames = []string{GammaSqrt, GammaQuad, GammaSin2, GammaNone}
)

// Coefs are the interpolant coefficients and their time derivatives at one t.
// DG is +-Inf at t = 0 and t = 1 for the sqrt gamma; GDG = g g' stays finite
// there and is what the closed forms and the trig path use.
type Coefs struct {
	A, B, G    float64
	DA, DB, DG float64
	GDG        float64
}

// Path is an interpolant x_t = a(t) x0 + b(t) x1 + g(t) z. It is a small
// value; the zero Path is invalid, build one with NewPath.
type Path struct {
	name  string
	gamma string
	scale float64
}

// NewPath validates a (path, gamma, scale) combination. An empty gamma picks
// the path's natural one: sin2 for encdec, none for one-sided paths, sqrt
// otherwise; scale 0 means 1.
func NewPath(name, gamma string, scale float64) (Path, error) {
	if name == "encoding-decoding" {
		name = PathEncDec
	}
	if !slices.Contains(pathNames, name) {
		return Path{}, fmt.Errorf("si path %q: want one of %s", name, strings.Join(pathNames, ", "))
	}
	if gamma == "" {
		switch name {
		case PathEncDec:
			gamma = GammaSin2
		case PathOneSidedLinear, PathOneSidedTrig:
			gamma = GammaNone
		default:
			gamma = GammaSqrt
		}
	}
	if !slices.Contains(gammaNames, gamma) {
		return Path{}, fmt.Errorf("si gamma %q: want one of %s", gamma, strings.Join(gammaNames, ", "))
	}
	if scale == 0 {
		scale = 1
	}
	if scale < 0 || math.IsNaN(scale) || math.IsInf(scale, 0) {
		return Path{}, fmt.Errorf("si gamma scale %v: want a finite positive number", scale)
	}
	p := Path{name: name, gamma: gamma, scale: scale}
	switch name {
	case PathOneSidedLinear, PathOneSidedTrig:
		if gamma != GammaNone {
			return Path{}, fmt.Errorf("si path %q with gamma %q: a one-sided path has no latent z, want gamma %q", name, gamma, GammaNone)
		}
	case PathMirror:
		if gamma == GammaNone {
			return Path{}, fmt.Errorf("si path %q with gamma %q: the mirror interpolant is x + g z, want a gamma > 0", name, gamma)
		}
	case PathEncDec:
		// At t = 1/2 both a and b vanish: without noise x_t would be 0.
		if gamma == GammaNone {
			return Path{}, fmt.Errorf("si path %q with gamma %q: encoding-decoding passes through pure noise at t=1/2, want a gamma > 0", name, gamma)
		}
	case PathTrig:
		// sqrt(1-g^2) must stay real and smooth.
		if m := p.maxGamma(); m >= 1 {
			return Path{}, fmt.Errorf("si path %q with gamma %q scale %v: max g = %.3g, the trig path needs g < 1 (sqrt and quad: scale < 4; sin2: scale < 1)", name, gamma, scale, m)
		}
	}
	return p, nil
}

// MustPath is NewPath for constant arguments in tests and examples.
func MustPath(name, gamma string, scale float64) Path {
	p, err := NewPath(name, gamma, scale)
	if err != nil {
		panic(err)
	}
	return p
}

func (p Path) Name() string   { return p.name }
func (p Path) Gamma() string  { return p.gamma }
func (p Path) Scale() float64 { return p.scale }

// OneSided reports whether x0 is the Gaussian latent itself (no extra z).
func (p Path) OneSided() bool { return p.name == PathOneSidedLinear || p.name == PathOneSidedTrig }

// Mirror reports whether x0 = x1 is one draw of rho1 (rho0 is unused).
func (p Path) Mirror() bool { return p.name == PathMirror }

// HasNoise reports whether g > 0 inside (0, 1), i.e. whether eta and the
// score are defined.
func (p Path) HasNoise() bool { return p.gamma != GammaNone }

func (p Path) String() string {
	if p.gamma == GammaNone {
		return p.name
	}
	return fmt.Sprintf("%s/%s(c=%g)", p.name, p.gamma, p.scale)
}

func (p Path) maxGamma() float64 {
	switch p.gamma {
	case GammaSqrt:
		return math.Sqrt(p.scale / 4)
	case GammaQuad:
		return p.scale / 4
	case GammaSin2:
		return p.scale
	}
	return 0
}

// gammaAt returns g, g' and g g'.
func (p Path) gammaAt(t float64) (g, dg, gdg float64) {
	c := p.scale
	switch p.gamma {
	case GammaSqrt:
		u := t * (1 - t)
		if u <= 0 {
			// g' = c(1-2t) / (2g) diverges at the ends; g g' = c(1-2t)/2 does not.
			return 0, math.Copysign(math.Inf(1), 1-2*t), c * (1 - 2*t) / 2
		}
		g = math.Sqrt(c * u)
		dg = c * (1 - 2*t) / (2 * g)
		return g, dg, c * (1 - 2*t) / 2
	case GammaQuad:
		g = c * t * (1 - t)
		dg = c * (1 - 2*t)
		return g, dg, g * dg
	case GammaSin2:
		s, co := math.Sincos(math.Pi * t)
		g = c * s * s
		dg = c * 2 * math.Pi * s * co
		return g, dg, g * dg
	}
	return 0, 0, 0
}

// At evaluates the coefficients at t in [0, 1].
func (p Path) At(t float64) Coefs {
	g, dg, gdg := p.gammaAt(t)
	c := Coefs{G: g, DG: dg, GDG: gdg}
	switch p.name {
	case PathLinear, PathOneSidedLinear:
		c.A, c.DA = 1-t, -1
		c.B, c.DB = t, 1
	case PathTrig, PathOneSidedTrig:
		s, co := math.Sincos(math.Pi * t / 2)
		r := math.Sqrt(1 - g*g)
		dr := -gdg / r
		c.A = r * co
		c.B = r * s
		c.DA = dr*co - r*math.Pi/2*s
		c.DB = dr*s + r*math.Pi/2*co
	case PathMirror:
		c.B = 1
	case PathEncDec:
		// Albergo, Boffi & Vanden-Eijnden (2023), encoding-decoding
		// interpolant: I = cos^2(pi t) (1_[0,1/2)(t) x0 + 1_(1/2,1](t) x1).
		// cos^2 has zero slope at t = 1/2, so a and b are C^1 there.
		s, co := math.Sincos(math.Pi * t)
		cos2 := co * co
		dcos2 := -2 * math.Pi * s * co
		switch {
		case t < 0.5:
			c.A, c.DA = cos2, dcos2
		case t > 0.5:
			c.B, c.DB = cos2, dcos2
		}
	}
	return c
}
