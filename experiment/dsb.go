package experiment

import (
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/config"
)

// DSBOptions maps the config onto the DSB trainer's options.
func (s *Setup) DSBOptions() (dsb.Options, error) {
	c := s.Config
	ref := dsb.Reference{Kind: dsb.ReferenceKind(c.DSB.Reference), Var: c.DSB.OUVar}
	if c.DSB.OUMean != 0 {
		ref.Mu = make([]float64, s.Dim)
		for i := range ref.Mu {
			ref.Mu[i] = c.DSB.OUMean
		}
	}
	o := dsb.Options{
		Data: s.Data, Prior: s.Prior, Dim: s.Dim,
		N: c.DSB.Steps, GammaMin: c.DSB.GammaMin, GammaMax: c.DSB.GammaMax,
		Reference:       ref,
		Net:             s.Net,
		Iterations:      c.DSB.Iterations,
		StepsPerPhase:   c.Train.Steps,
		Batch:           c.Train.Batch,
		Hyper:           phaseHyper(c.Train),
		CacheSize:       c.DSB.CacheSize,
		Shards:          c.DSB.CacheShards,
		Refresh:         c.DSB.CacheRefresh,
		WarmStart:       c.DSB.WarmStart,
		Denoise:         c.DSB.Denoise,
		PosteriorTarget: c.DSB.PosteriorTarget,
		Seed:            c.Seed,
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("dsb: %w", err)
	}
	return o, nil
}

// schedule is the DSB time grid of the config.
func (s *Setup) schedule() (dsb.Schedule, error) {
	return dsb.NewSchedule(s.Config.DSB.Steps, s.Config.DSB.GammaMin, s.Config.DSB.GammaMax)
}

// phaseHyper is the optimiser of a DSB or DSBM phase; a cosine schedule
// decays over each phase's steps.
func phaseHyper(t config.Train) dsb.Hyper {
	h := dsb.Hyper{LR: t.LR, EMADecay: t.EMADecay, GradClip: t.GradClip}
	if t.LRSchedule == "cosine" {
		h.CosineSteps = t.Steps
	}
	return h
}
