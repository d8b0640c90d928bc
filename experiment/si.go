package experiment

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/nn"
)

// SIOptions maps the config onto the interpolant trainer's options.
func (s *Setup) SIOptions() (si.Options, error) {
	c := s.Config
	o := si.Options{
		Rho0: s.Prior, Rho1: s.Data,
		Path: c.SI.Path, Gamma: c.SI.Gamma, GammaScale: c.SI.GammaScale,
		Net:        s.Net,
		TrainEta:   c.SI.TrainDenoiser,
		Batch:      c.Train.Batch,
		LR:         c.Train.LR,
		Steps:      c.Train.Steps,
		EMADecay:   c.Train.EMADecay,
		ClipNorm:   c.Train.GradClip,
		LRSchedule: c.Train.LRSchedule,
		Seed:       c.Seed,
		Antithetic: c.Train.Batch%2 == 0,
		Field:      c.SI.Field,
		Velocity:   c.SI.Velocity,
	}
	if c.SI.Antithetic != nil {
		o.Antithetic = *c.SI.Antithetic
	}
	if p, err := si.NewPath(o.Path, o.Gamma, o.GammaScale); err != nil {
		return o, fmt.Errorf("si.path/si.gamma: %w", err)
	} else if p.OneSided() || p.Mirror() {
		o.Rho0 = nil // the latent N(0, I) plays the prior; the mirror starts from the data
	}
	return o, nil
}

func (s *Setup) path() (si.Path, error) {
	return si.NewPath(s.Config.SI.Path, s.Config.SI.Gamma, s.Config.SI.GammaScale)
}

// SIModel integrates the learned velocity (ODE) or velocity and score (SDE)
// from t = 0 to t = 1.
type SIModel struct {
	Path               si.Path
	Velocity, Denoiser *nn.Net // EMA weights; Denoiser nil unless trained
	Sampler            si.SampleOptions
	// Field and Kind say what the networks learned (si.field and
	// si.velocity): the denoiser net holds eta or the score, the velocity
	// net b or v.
	Field, Kind string
}

// Fields are the drift b and the score s (nil without a second network)
// the samplers and likelihoods read.
func (m *SIModel) Fields() (b, score si.Field, err error) {
	var second si.Field
	if m.Denoiser != nil {
		second = si.NewNetField(m.Denoiser)
	}
	return si.ModelFields(m.Path, si.NewNetField(m.Velocity), second, m.Field, m.Kind)
}

// Generate integrates from start at t = 0.
func (m *SIModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	opts := m.Sampler
	opts.Seed, opts.Trajectory = seed, paths
	b, score, err := m.Fields()
	if err != nil {
		return nil, err
	}
	var eta si.Field
	if es, ok := score.(*si.EtaScore); ok {
		eta = es.Eta // Sample forms -eta/g itself, as it always has
	} else {
		opts.Score = score
	}
	out, err := si.Sample(ctx, m.Path, b, eta, start, opts)
	if err != nil {
		return nil, fmt.Errorf("si sample: %w", err)
	}
	return &Generated{End: out.X, Paths: out.States}, nil
}

// Nets are the velocity and, when trained, the denoiser.
func (m *SIModel) Nets() []RoleNet {
	nets := []RoleNet{{Role: "velocity", Net: m.Velocity}}
	if m.Denoiser != nil {
		nets = append(nets, RoleNet{Role: "denoiser", Net: m.Denoiser})
	}
	return nets
}

// samplerOptions maps the config's sampler choice.
func (s *Setup) samplerOptions() si.SampleOptions {
	c := s.Config.SI
	return si.SampleOptions{Method: c.Sampler, Steps: c.SamplerSteps, Eps: c.Epsilon, EpsSchedule: c.EpsSchedule, RTol: c.RTol, ATol: c.ATol}
}

// newSIModel is the model of this config around its networks.
func (s *Setup) newSIModel(p si.Path) *SIModel {
	return &SIModel{Path: p, Sampler: s.samplerOptions(), Field: s.Config.SI.Field, Kind: s.Config.SI.Velocity}
}

// ModelFromSI wraps a trained interpolant for sampling.
func (s *Setup) ModelFromSI(r *si.Result) (*SIModel, error) {
	m := s.newSIModel(r.Path)
	m.Velocity = r.Velocity.Net
	if r.Denoiser != nil {
		m.Denoiser = r.Denoiser.Net
	}
	return m, nil
}
