// Package experiment owns one run in one process, end to end: it turns a
// config into distributions, networks and the training method
// (method.Method), trains it by driving method.State with this process
// owning every shard, evaluates the result against held-out data and
// closed forms after each iteration and at the end, and writes what people
// look at (metrics.json, PNG plots, safetensors networks). The CLI's train,
// sample and eval commands are thin shells around it, and the distributed
// run (package job) reuses its builders, metrics and evaluation so both
// report the same figures.
package experiment

import (
	"fmt"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/nn"
)

// Setup is a validated config with its distributions built.
type Setup struct {
	Config      *config.Config
	Data, Prior dataset.Distribution
	Dim         int
	Net         nn.Spec
}

// Prepare builds and cross-checks everything a config names; its errors name
// the config field (data, prior, model) that is wrong.
func Prepare(cfg *config.Config) (*Setup, error) {
	data, err := dataset.New(datasetSpec(cfg.Data))
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	prior, err := dataset.New(datasetSpec(cfg.Prior))
	if err != nil {
		return nil, fmt.Errorf("prior: %w", err)
	}
	if data.Dim() != prior.Dim() {
		return nil, fmt.Errorf("prior: dimension %d differs from data dimension %d (set prior.dim)", prior.Dim(), data.Dim())
	}
	spec := nn.Spec{
		Arch:       cfg.Model.Arch,
		Dim:        data.Dim(),
		Hidden:     cfg.Model.Hidden,
		TimeEmbed:  cfg.Model.TimeEmbed,
		Activation: nn.Activation(cfg.Model.Activation),
		Channels:   cfg.Model.Channels,
		Groups:     cfg.Model.Groups,
	}
	if spec.Arch == nn.ArchUNet {
		shape, err := imageShape(cfg.Model, data)
		if err != nil {
			return nil, err
		}
		spec.Image = shape
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return &Setup{Config: cfg, Data: data, Prior: prior, Dim: data.Dim(), Net: spec}, nil
}

func datasetSpec(d config.Dataset) dataset.Spec {
	return dataset.Spec{
		Name: d.Name, Dim: d.Dim, Mean: d.Mean, Var: d.Var, Cov: d.Cov,
		Noise: d.Noise, Scale: d.Scale, Path: d.Path, Jitter: d.Jitter,
	}
}

// imageShape is the unet's input shape: the data's own when it is an image
// dataset, else model.image, whose product must be the data dimension.
func imageShape(m config.Model, data dataset.Distribution) ([3]int, error) {
	if img, ok := data.(interface{ Shape() [3]int }); ok && len(m.Image) == 0 {
		return img.Shape(), nil
	}
	if len(m.Image) != 3 {
		return [3]int{}, fmt.Errorf("model.image: arch unet needs the image shape [C, H, W] when the data (%s, dimension %d) is not an image dataset", data.Name(), data.Dim())
	}
	shape := [3]int{m.Image[0], m.Image[1], m.Image[2]}
	if n := shape[0] * shape[1] * shape[2]; n != data.Dim() {
		return [3]int{}, fmt.Errorf("model.image: %dx%dx%d = %d values, but the data (%s) has dimension %d", shape[0], shape[1], shape[2], n, data.Name(), data.Dim())
	}
	return shape, nil
}
