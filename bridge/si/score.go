package si

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// EtaScore reads the score from a denoiser: s(t, x) = -eta(t, x)/g(t). It
// is defined where g > 0; at g = 0 it is an error, so the SDEs query it
// only where their eps(t) > 0 (see EpsSchedule).
type EtaScore struct {
	Path Path
	Eta  Field
}

func (s *EtaScore) Dim() int { return s.Eta.Dim() }

func (s *EtaScore) Eval(t, x, out []float32) error {
	if err := s.Eta.Eval(t, x, out); err != nil {
		return err
	}
	return s.scale(t, out, nil)
}

// VJP needs a JacobianField denoiser: v^T ds/dx = -(v^T deta/dx)/g.
func (s *EtaScore) VJP(t, x, v, out, vjp []float32) error {
	j, ok := s.Eta.(JacobianField)
	if !ok {
		return fmt.Errorf("score from %T: the denoiser has no VJP", s.Eta)
	}
	if err := j.VJP(t, x, v, out, vjp); err != nil {
		return err
	}
	return s.scale(t, out, vjp)
}

func (s *EtaScore) scale(t []float32, out, vjp []float32) error {
	d := s.Dim()
	for b, tb := range t {
		g := s.Path.At(float64(tb)).G
		if !(g > 0) {
			return fmt.Errorf("score -eta/g at t=%v: g = %v, the score is not defined by eta there", tb, g)
		}
		for j := b * d; j < (b+1)*d; j++ {
			out[j] = float32(-float64(out[j]) / g)
			if vjp != nil {
				vjp[j] = float32(-float64(vjp[j]) / g)
			}
		}
	}
	return nil
}

// CanFork reports whether the denoiser can fork; without it the samplers
// run this field on one goroutine.
func (s *EtaScore) CanFork() bool { _, ok := s.Eta.(Forker); return ok }

// Fork forks the denoiser when it can; otherwise it returns s itself.
func (s *EtaScore) Fork() Field {
	fk, ok := s.Eta.(Forker)
	if !ok {
		return s
	}
	return &EtaScore{Path: s.Path, Eta: fk.Fork()}
}

// PairVelocity is the paper's velocity from the pair (v, s):
// b(t, x) = v(t, x) - g(t) g'(t) s(t, x), where v = E[a' x0 + b' x1 | x_t = x]
// and s is the score. g g' is finite at the ends for every gamma, so b is
// defined on all of [0, 1].
type PairVelocity struct {
	Path  Path
	V, S  Field
	spare []float32
	vjpS  []float32
}

func (p *PairVelocity) Dim() int { return p.V.Dim() }

func (p *PairVelocity) buf(n int) ([]float32, []float32) {
	if cap(p.spare) < n {
		p.spare, p.vjpS = make([]float32, n), make([]float32, n)
	}
	return p.spare[:n], p.vjpS[:n]
}

func (p *PairVelocity) Eval(t, x, out []float32) error {
	if err := p.V.Eval(t, x, out); err != nil {
		return fmt.Errorf("velocity v: %w", err)
	}
	s, _ := p.buf(len(out))
	if err := p.S.Eval(t, x, s); err != nil {
		return fmt.Errorf("score: %w", err)
	}
	p.combine(t, out, s)
	return nil
}

func (p *PairVelocity) combine(t, out, s []float32) {
	d := p.Dim()
	for b, tb := range t {
		gdg := p.Path.At(float64(tb)).GDG
		for j := b * d; j < (b+1)*d; j++ {
			out[j] = float32(float64(out[j]) - gdg*float64(s[j]))
		}
	}
}

// VJP needs both fields to be JacobianFields.
func (p *PairVelocity) VJP(t, x, v, out, vjp []float32) error {
	jv, ok1 := p.V.(JacobianField)
	js, ok2 := p.S.(JacobianField)
	if !ok1 || !ok2 {
		return fmt.Errorf("pair velocity: %T and %T must both have a VJP", p.V, p.S)
	}
	if err := jv.VJP(t, x, v, out, vjp); err != nil {
		return fmt.Errorf("velocity v: %w", err)
	}
	s, vs := p.buf(len(out))
	if err := js.VJP(t, x, v, s, vs); err != nil {
		return fmt.Errorf("score: %w", err)
	}
	p.combine(t, out, s)
	p.combine(t, vjp, vs)
	return nil
}

// CanFork reports whether both fields can fork.
func (p *PairVelocity) CanFork() bool {
	_, ok1 := p.V.(Forker)
	_, ok2 := p.S.(Forker)
	return ok1 && ok2
}

// Fork forks both fields; without two Forkers it returns p itself.
func (p *PairVelocity) Fork() Field {
	fv, ok1 := p.V.(Forker)
	fs, ok2 := p.S.(Forker)
	if !ok1 || !ok2 {
		return p
	}
	return &PairVelocity{Path: p.Path, V: fv.Fork(), S: fs.Fork()}
}

// GaussianScore is the exact score s(t, x) = -S_t^{-1} (x - m_t) of the
// interpolant between independent Gaussian endpoints, a JacobianField with
// Jacobian -S_t^{-1}. It caches the last t, so it is not safe for
// concurrent use; Fork it.
type GaussianScore struct {
	v     *GaussianVelocity
	haveT bool
	t     float64
	mt    []float64
	prec  *mat.Dense // S_t^{-1}
}

// Score returns the exact score of the same interpolant.
func (v *GaussianVelocity) Score() *GaussianScore { return &GaussianScore{v: v} }

func (s *GaussianScore) Dim() int { return s.v.Dim() }

func (s *GaussianScore) Fork() Field { return &GaussianScore{v: s.v.Fork().(*GaussianVelocity)} }

func (s *GaussianScore) prepare(t float64) error {
	if s.haveT && s.t == t {
		return nil
	}
	mt, st := s.v.Marginal(t)
	var ch mat.Cholesky
	if !ch.Factorize(st) {
		return fmt.Errorf("gaussian score at t=%v: S_t is not positive definite", t)
	}
	var inv mat.SymDense
	if err := ch.InverseTo(&inv); err != nil {
		return fmt.Errorf("gaussian score at t=%v: %w", t, err)
	}
	s.prec = mat.DenseCopyOf(&inv)
	s.haveT, s.t, s.mt = true, t, mt
	return nil
}

func (s *GaussianScore) Eval(t, x, out []float32) error {
	d := s.Dim()
	if len(x) != len(t)*d || len(out) != len(x) {
		return fmt.Errorf("gaussian score: %d times, %d inputs, %d outputs for dimension %d", len(t), len(x), len(out), d)
	}
	for b := range t {
		if err := s.prepare(float64(t[b])); err != nil {
			return err
		}
		for i := 0; i < d; i++ {
			var val float64
			for j := 0; j < d; j++ {
				val -= s.prec.At(i, j) * (float64(x[b*d+j]) - s.mt[j])
			}
			out[b*d+i] = float32(val)
		}
	}
	return nil
}

func (s *GaussianScore) VJP(t, x, vec, out, vjp []float32) error {
	if err := s.Eval(t, x, out); err != nil {
		return err
	}
	d := s.Dim()
	if len(vec) != len(x) || len(vjp) != len(x) {
		return fmt.Errorf("gaussian score vjp: %d vectors, %d outputs for %d inputs", len(vec), len(vjp), len(x))
	}
	for b := range t {
		if err := s.prepare(float64(t[b])); err != nil {
			return err
		}
		for j := 0; j < d; j++ {
			var v float64
			for i := 0; i < d; i++ {
				v -= float64(vec[b*d+i]) * s.prec.At(i, j)
			}
			vjp[b*d+j] = float32(v)
		}
	}
	return nil
}

// ScoreError is VelocityError's relative L2 error for a learned score
// against the closed form, on the same held-out draws of rho_t.
func ScoreError(learned Field, exact *GaussianVelocity, times []float64, n int, seed uint64) (float64, []float64, error) {
	return fieldError(learned, exact.Score(), exact, times, n, seed)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// ModelFields turns trained networks into what the samplers and the
// likelihoods read: the drift b and the score s (nil without a second
// network). first learned b, or v when velocity is VelocityV (then
// b = v - g g' s); second learned eta (s = -eta/g) or, with FieldScore, s.
func ModelFields(p Path, first, second Field, field, velocity string) (b, score Field, err error) {
	if second != nil {
		switch field {
		case "", FieldEta:
			score = &EtaScore{Path: p, Eta: second}
		case FieldScore:
			score = second
		default:
			return nil, nil, fmt.Errorf("si field %q: want %q or %q", field, FieldEta, FieldScore)
		}
	}
	switch velocity {
	case "", VelocityB:
		b = first
	case VelocityV:
		if second == nil || field != FieldScore {
			return nil, nil, fmt.Errorf("si velocity %q needs the score network (field %q)", VelocityV, FieldScore)
		}
		b = &PairVelocity{Path: p, V: first, S: second}
	default:
		return nil, nil, fmt.Errorf("si velocity %q: want %q or %q", velocity, VelocityB, VelocityV)
	}
	return b, score, nil
}
