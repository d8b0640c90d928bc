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
	}
	if p, err := si.NewPath(o.Path, o.Gamma, o.GammaScale); err != nil {
		return o, fmt.Errorf("si.path/si.gamma: %w", err)
	} else if p.OneSided() {
		o.Rho0 = nil // the latent N(0, I) plays the prior
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
}

// Generate integrates from start at t = 0.
func (m *SIModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	opts := m.Sampler
	opts.Seed, opts.Trajectory = seed, paths
	var eta si.Field
	if m.Denoiser != nil {
		eta = si.NewNetField(m.Denoiser)
	}
	out, err := si.Sample(ctx, m.Path, si.NewNetField(m.Velocity), eta, start, opts)
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
	return si.SampleOptions{Method: c.Sampler, Steps: c.SamplerSteps, Eps: c.Epsilon}
}

// ModelFromSI wraps a trained interpolant for sampling.
func (s *Setup) ModelFromSI(r *si.Result) (*SIModel, error) {
	m := &SIModel{Path: r.Path, Velocity: r.Velocity.Net, Sampler: s.samplerOptions()}
	if r.Denoiser != nil {
		m.Denoiser = r.Denoiser.Net
	}
	return m, nil
}
