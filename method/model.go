package method

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/nn"
)

// Model is a trained bridge, whichever the method: it carries prior draws to
// the data side and names the networks that make it up.
type Model interface {
	// Generate maps the prior points start (n rows) to the data side;
	// noise is keyed by seed, so equal calls give equal bytes. With paths,
	// every intermediate state is kept for plots.
	Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error)
	// Nets are the networks to save, with the weights used for sampling.
	Nets() []RoleNet
}

// Generated is the output of one Generate call.
type Generated struct {
	End   []float32   // rows of the data dimension
	Paths [][]float32 // Paths[k]: every row at the k-th time; nil unless asked
}

// RoleNet is a network and its role in the method (backward, forward,
// velocity, denoiser); the role names its safetensors file.
type RoleNet struct {
	Role string
	Net  *nn.Net
}

// DSBModel samples with the backward network: X_N ~ prior, then the chain
// X_k = B(k+1, X_{k+1}) + sqrt(2 gamma_{k+1}) Z down to X_0.
type DSBModel struct {
	Sched             dsb.Schedule
	Dim               int
	Backward, Forward *nn.Net // sampling weights (EMA when trained with it)
	// Denoise ends the chain on its last transition's mean (see
	// dsb.SampleOptions.Denoise).
	Denoise bool
}

// Generate runs the backward chain from start.
func (m *DSBModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	mean := &dsb.NetMean{Net: m.Backward, Dir: dsb.Backward, Sched: m.Sched, Dim: m.Dim}
	out, err := dsb.SampleContext(ctx, mean, m.Sched, m.Dim, start, dsb.SampleOptions{Seed: seed, Path: paths, Denoise: m.Denoise})
	if err != nil {
		return nil, fmt.Errorf("dsb sample: %w", err)
	}
	g := &Generated{End: out.End}
	if paths {
		// The chain runs from k = N down to 0; plots read prior to data.
		for k := len(out.Path) - 1; k >= 0; k-- {
			g.Paths = append(g.Paths, out.Path[k])
		}
	}
	return g, nil
}

// Nets are the backward and forward networks.
func (m *DSBModel) Nets() []RoleNet {
	nets := []RoleNet{{Role: "backward", Net: m.Backward}}
	if m.Forward != nil {
		nets = append(nets, RoleNet{Role: "forward", Net: m.Forward})
	}
	return nets
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

// DSBModelOf freezes the networks of r with their sampling weights (the
// EMA when one is kept); r keeps its own.
func DSBModelOf(r *dsb.Result) (*DSBModel, error) {
	m := &DSBModel{Sched: r.Chain.Sched, Dim: r.Chain.Dim}
	var err error
	if m.Backward, err = samplingNet(r.B, r.BEMA); err != nil {
		return nil, fmt.Errorf("backward net: %w", err)
	}
	if r.F != nil {
		if m.Forward, err = samplingNet(r.F, r.FEMA); err != nil {
			return nil, fmt.Errorf("forward net: %w", err)
		}
	}
	return m, nil
}

// samplingNet copies net and gives it the EMA weights when there are any.
func samplingNet(net *nn.Net, ema []float32) (*nn.Net, error) {
	if net == nil {
		return nil, fmt.Errorf("not trained")
	}
	cp, err := net.Clone()
	if err != nil {
		return nil, err
	}
	if ema != nil {
		copy(cp.Params(), ema)
	}
	return cp, nil
}
