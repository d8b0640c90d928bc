package experiment

import (
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsbm"
	"github.com/sbtrain/sbtrain/config"
)

// DSBMOptions maps the config onto the DSBM trainer's options.
func (s *Setup) DSBMOptions() (dsbm.Options, error) {
	c := s.Config
	o := dsbm.Options{
		Data: s.Data, Prior: s.Prior, Dim: s.Dim,
		Sigma: c.DSBM.Sigma, Eps: c.DSBM.Eps, Steps: c.DSBM.Steps,
		First:         dsbm.Coupling(c.DSBM.FirstCoupling),
		Net:           s.Net,
		Iterations:    c.DSBM.Iterations,
		StepsPerPhase: c.Train.Steps,
		Batch:         c.Train.Batch,
		Hyper:         phaseHyper(c.Train),
		CacheSize:     c.DSBM.CacheSize,
		Shards:        c.DSBM.CacheShards,
		Refresh:       c.DSBM.CacheRefresh,
		WarmStart:     c.DSBM.WarmStart,
		WarmLR:        c.DSBM.WarmLR,
		Denoise:       c.DSBM.Denoise,
		DenoiseCache:  c.DSBM.DenoiseCache,
		ScaledDrift:   c.DSBM.ScaledDrift,
		SampleSteps:   c.DSBM.SampleSteps,
		EndOnBackward: c.DSBM.LastPhase == config.LastPhaseBackward,
		Seed:          c.Seed,
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("dsbm: %w", err)
	}
	return o, nil
}

// dsbmChain is the chain the config describes, for sampling.
func (s *Setup) dsbmChain() (*dsbm.Chain, error) {
	o, err := s.DSBMOptions()
	if err != nil {
		return nil, err
	}
	return o.Chain()
}
