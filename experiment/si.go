package experiment

import (
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/si"
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

// samplerOptions maps the config's sampler choice.
func (s *Setup) samplerOptions() si.SampleOptions {
	c := s.Config.SI
	return si.SampleOptions{Method: c.Sampler, Steps: c.SamplerSteps, Eps: c.Epsilon, EpsSchedule: c.EpsSchedule, RTol: c.RTol, ATol: c.ATol}
}

// newSIModel is the model of this config around its networks.
func (s *Setup) newSIModel(p si.Path) *SIModel {
	return &SIModel{Path: p, Sampler: s.samplerOptions(), Field: s.Config.SI.Field, Kind: s.Config.SI.Velocity}
}
