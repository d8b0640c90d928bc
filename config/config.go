// Package config owns the run configuration: the YAML a user writes, decoded
// strictly (unknown fields and wrong types are errors), completed with
// defaults, and validated with errors that name the offending field. The same
// file drives a one-process `sbtrain train`, a local cluster and a Kubernetes
// job, so it is the contract between all of them. Its Hash identifies a
// config, and FieldDigests lets two processes name the fields in which
// theirs differ.
package config

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Methods.
const (
	MethodDSB  = "dsb"
	MethodSI   = "si"
	MethodDSBM = "dsbm"
)

// Config is one run.
type Config struct {
	// Name labels the run in logs, plots and storage keys.
	Name   string `yaml:"name" json:"name"`
	Method string `yaml:"method" json:"method"`
	Seed   uint64 `yaml:"seed" json:"seed"`
	// Data is the distribution generation ends at (DSB: X_0; SI: x_1).
	Data Dataset `yaml:"data" json:"data"`
	// Prior is where generation starts (DSB: X_N; SI: x_0). Any dataset:
	// bridging two data sets is transfer.
	Prior Dataset `yaml:"prior" json:"prior"`
	Model Model   `yaml:"model" json:"model"`
	Train Train   `yaml:"train" json:"train"`
	DSB   DSB     `yaml:"dsb" json:"dsb"`
	SI    SI      `yaml:"si" json:"si"`
	// DSBM is left out of the YAML and the hash unless set, so that the
	// hashes of DSB and SI runs stay what they were.
	DSBM DSBM `yaml:"dsbm,omitempty" json:"dsbm,omitzero"`
	Eval Eval `yaml:"eval" json:"eval"`
}

// Dataset names a distribution; the fields mirror dataset.Spec.
type Dataset struct {
	Name   string      `yaml:"name" json:"name"`
	Dim    int         `yaml:"dim,omitempty" json:"dim,omitempty"`
	Mean   []float64   `yaml:"mean,omitempty" json:"mean,omitempty"`
	Var    []float64   `yaml:"var,omitempty" json:"var,omitempty"`
	Cov    [][]float64 `yaml:"cov,omitempty" json:"cov,omitempty"`
	Noise  float64     `yaml:"noise,omitempty" json:"noise,omitempty"`
	Scale  float64     `yaml:"scale,omitempty" json:"scale,omitempty"`
	Path   string      `yaml:"path,omitempty" json:"path,omitempty"`
	Jitter float64     `yaml:"jitter,omitempty" json:"jitter,omitempty"`
	// Image datasets (mnist, fashion-mnist, idx, png): the idx labels and
	// optional test files, a class filter and a downscale factor.
	Labels     string `yaml:"labels,omitempty" json:"labels,omitempty"`
	TestPath   string `yaml:"test_path,omitempty" json:"test_path,omitempty"`
	TestLabels string `yaml:"test_labels,omitempty" json:"test_labels,omitempty"`
	Classes    []int  `yaml:"classes,omitempty" json:"classes,omitempty"`
	Downscale  int    `yaml:"downscale,omitempty" json:"downscale,omitempty"`
}

// Model is the network architecture, for every network of the run.
type Model struct {
	Arch       string `yaml:"arch" json:"arch"` // mlp, dsb2d or unet
	Hidden     []int  `yaml:"hidden,omitempty" json:"hidden,omitempty"`
	TimeEmbed  int    `yaml:"time_embed" json:"time_embed"`
	Activation string `yaml:"activation" json:"activation"`
	// Channels are the unet's feature channels, one per resolution level.
	Channels []int `yaml:"channels,omitempty" json:"channels,omitempty"`
	// Groups is the unet's GroupNorm group count; every channel count must
	// be a multiple of it.
	Groups int `yaml:"groups,omitempty" json:"groups,omitempty"`
	// Image is the unet's input shape [C, H, W]. Image datasets give it;
	// it must be set for data given as flat vectors (points files,
	// Gaussians), and its product must equal the data dimension.
	Image []int `yaml:"image,omitempty" json:"image,omitempty"`
}

// Train is the optimiser and step budget of each phase.
type Train struct {
	Batch    int     `yaml:"batch" json:"batch"`
	LR       float64 `yaml:"lr" json:"lr"`
	Steps    int     `yaml:"steps" json:"steps"` // per phase
	EMADecay float64 `yaml:"ema_decay" json:"ema_decay"`
	GradClip float64 `yaml:"grad_clip" json:"grad_clip"` // 0: off
	// LRSchedule is constant, or cosine decay to 0 over each phase.
	LRSchedule string `yaml:"lr_schedule" json:"lr_schedule"`
}

// DSB is the Schrödinger-bridge schedule and IPF budget.
type DSB struct {
	Steps        int     `yaml:"steps" json:"steps"` // N, even
	GammaMin     float64 `yaml:"gamma_min" json:"gamma_min"`
	GammaMax     float64 `yaml:"gamma_max" json:"gamma_max"`
	Reference    string  `yaml:"reference" json:"reference"` // "ou" or "brownian"
	OUMean       float64 `yaml:"ou_mean" json:"ou_mean"`
	OUVar        float64 `yaml:"ou_var" json:"ou_var"`
	Iterations   int     `yaml:"iterations" json:"iterations"` // IPF iterations
	CacheSize    int     `yaml:"cache_size" json:"cache_size"`
	CacheShards  int     `yaml:"cache_shards" json:"cache_shards"`
	CacheRefresh int     `yaml:"cache_refresh" json:"cache_refresh"` // steps between cache generations
	WarmStart    bool    `yaml:"warm_start" json:"warm_start"`
	// Denoise ends every sample on the mean of the chain's last transition
	// instead of adding its noise, as the paper's image samples do: the
	// last step's noise (sqrt(2 gamma_1), 0.14 at gamma 0.01) is speckle
	// on an image. Training is the same; the points then lack the chain's
	// last noise, so the Gaussian closed forms keep it off. Left out of the
	// encoding when unset, so configs without it keep their hashes.
	Denoise bool `yaml:"denoise,omitempty" json:"denoise,omitempty"`
	// PosteriorTarget makes backward phase 1 regress on the reference's
	// posterior mean E[X_k | X_{k+1}, X_0] in place of X_k (dsb.Chain.
	// PosteriorTarget): the same minimiser without the transition's noise.
	// Omitted when unset, so configs without it keep their hashes.
	PosteriorTarget bool `yaml:"posterior_target,omitempty" json:"posterior_target,omitempty"`
}

// DSBM is the bridge-matching reference and IMF budget.
type DSBM struct {
	Sigma         float64 `yaml:"sigma" json:"sigma"`                   // Brownian reference scale on [0, 1]
	FirstCoupling string  `yaml:"first_coupling" json:"first_coupling"` // "ref" or "ind"
	Steps         int     `yaml:"steps" json:"steps"`                   // N, Euler-Maruyama steps
	Eps           float64 `yaml:"eps" json:"eps"`                       // training times are U[eps, 1-eps]
	Iterations    int     `yaml:"iterations" json:"iterations"`         // IMF iterations, a backward and a forward phase each (see last_phase)
	CacheSize     int     `yaml:"cache_size" json:"cache_size"`         // endpoint pairs per cache generation
	CacheShards   int     `yaml:"cache_shards" json:"cache_shards"`
	CacheRefresh  int     `yaml:"cache_refresh" json:"cache_refresh"` // steps between cache generations
	WarmStart     bool    `yaml:"warm_start" json:"warm_start"`
	// Denoise drops the noise of the sampler's last Euler-Maruyama step, as
	// dsb.denoise does; the backward drift's last step already lands on its
	// estimate of the data point. Omitted when unset, so configs without
	// it keep their hashes.
	Denoise bool `yaml:"denoise,omitempty" json:"denoise,omitempty"`
	// DenoiseCache drops the same noise from the last step of the cache's
	// simulations (dsbm.Chain.DenoiseCache), so the pairs each phase trains
	// on have clean images at their simulated end, as the data and the
	// samples do. Omitted when unset, so configs without it keep their
	// hashes.
	DenoiseCache bool `yaml:"denoise_cache,omitempty" json:"denoise_cache,omitempty"`
	// ScaledDrift makes the nets learn sqrt(t) v_b and sqrt(1-t) v_f
	// (dsbm.Chain.ScaledDrift): targets whose noise is of one size at every
	// time. Omitted when unset, so configs without it keep their hashes.
	ScaledDrift bool `yaml:"scaled_drift,omitempty" json:"scaled_drift,omitempty"`
	// SampleSteps are the Euler-Maruyama steps of evaluation and `sbtrain
	// sample`; 0 (omitted) means dsbm.steps. The drifts are trained in
	// continuous time, so a finer sampler needs no retraining, while the
	// cache keeps the cheaper dsbm.steps.
	SampleSteps int `yaml:"sample_steps,omitempty" json:"sample_steps,omitempty"`
	// LastPhase is the direction the run ends on: forward (the default,
	// omitted) or backward, which drops the last iteration's forward phase
	// (dsbm.Options.EndOnBackward). Generation and transfer sample with the
	// backward drift alone, so that phase's time is better spent on the
	// others.
	LastPhase string `yaml:"last_phase,omitempty" json:"last_phase,omitempty"`
	// WarmLR is the peak learning rate of the warm-started phases (IMF
	// iteration 2 on), in place of train.lr; 0 (omitted, so configs
	// without it keep their hashes) keeps train.lr. It needs warm_start.
	WarmLR float64 `yaml:"warm_lr,omitempty" json:"warm_lr,omitempty"`
}

// DSBM last phases.
const (
	LastPhaseForward  = "forward"
	LastPhaseBackward = "backward"
)

// SI is the interpolant and its samplers.
type SI struct {
	Path            string  `yaml:"path" json:"path"`   // see SIPaths
	Gamma           string  `yaml:"gamma" json:"gamma"` // see SIGammas; empty: the path's natural one
	GammaScale      float64 `yaml:"gamma_scale" json:"gamma_scale"`
	TrainDenoiser   bool    `yaml:"train_denoiser" json:"train_denoiser"`
	Sampler         string  `yaml:"sampler" json:"sampler"` // heun, rk4, sde
	SamplerSteps    int     `yaml:"sampler_steps" json:"sampler_steps"`
	Epsilon         float64 `yaml:"epsilon" json:"epsilon"`       // SDE noise level; 0 is the ODE
	Divergence      string  `yaml:"divergence" json:"divergence"` // auto, exact, hutchinson
	Probes          int     `yaml:"probes" json:"probes"`         // Hutchinson probes per point
	LikelihoodSteps int     `yaml:"likelihood_steps" json:"likelihood_steps"`

	// The rest of the paper; each is left out of the config's encoding
	// when unset, so runs that do not use them keep their hashes.
	Field       string  `yaml:"field,omitempty" json:"field,omitempty"`               // eta (default) or score: what the second network learns
	Velocity    string  `yaml:"velocity,omitempty" json:"velocity,omitempty"`         // b (default) or v: b = v - g g' s, needs field score
	Antithetic  *bool   `yaml:"antithetic,omitempty" json:"antithetic,omitempty"`     // +z/-z pairs; default on for an even batch
	EpsSchedule string  `yaml:"eps_schedule,omitempty" json:"eps_schedule,omitempty"` // constant (default), gamma, gamma2
	RTol        float64 `yaml:"rtol,omitempty" json:"rtol,omitempty"`                 // dopri5 tolerances; 0: the solver's defaults
	ATol        float64 `yaml:"atol,omitempty" json:"atol,omitempty"`
	// LikelihoodEstimator scores the held-out points: ode (default), or
	// sde (also the SDE model's Feynman-Kac estimate, from likelihood_paths
	// reverse paths per point; needs the score).
	LikelihoodEstimator string `yaml:"likelihood_estimator,omitempty" json:"likelihood_estimator,omitempty"`
	LikelihoodPaths     int    `yaml:"likelihood_paths,omitempty" json:"likelihood_paths,omitempty"`
}

// Eval sizes the held-out evaluation.
type Eval struct {
	Samples      int `yaml:"samples" json:"samples"`
	Likelihood   int `yaml:"likelihood_points" json:"likelihood_points"` // SI: held-out points scored; 0: skip
	Trajectories int `yaml:"trajectories" json:"trajectories"`           // drawn in trajectories.png
	// FinalOnly evaluates the finished model only, not the model after
	// every IPF or IMF iteration: an image evaluation samples thousands of
	// chains, minutes each time.
	FinalOnly bool `yaml:"final_only,omitempty" json:"final_only,omitempty"`
	// SkipForward leaves out a bridge's forward figures (data to prior):
	// a generative run from N(0, I), or a transfer scored one way, needs
	// only the backward samples, and the forward chains cost as much again.
	SkipForward bool `yaml:"skip_forward,omitempty" json:"skip_forward,omitempty"`
}

//go:embed default.yaml
var defaultYAML []byte

// Default is the embedded run: a toy 2D bridge that finishes in a few
// minutes on a laptop.
func Default() (*Config, error) { return Parse(defaultYAML, "default config") }

// DefaultYAML is the embedded default config, for users to copy and edit.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Load reads, decodes, completes and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, path)
}

// Parse decodes YAML strictly; source names the input in errors.
func Parse(b []byte, source string) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: empty file", source)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// yaml.v3 lists one problem per line; keep the error on one line.
			return nil, fmt.Errorf("config %s: %s", source, oneLine(strings.Join(te.Errors, "; ")))
		}
		if strings.Contains(err.Error(), "\n") {
			return nil, fmt.Errorf("config %s: %s", source, oneLine(err.Error()))
		}
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: more than one YAML document", source)
	}
	if err := rejectExplicitZeros(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	return &c, nil
}

// oneLine escapes the newlines that quoted input values bring into an
// error, so that a bad config always reads as one line.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", `\n`) }

// SetDefaults fills every field the user left zero.
func (c *Config) SetDefaults() {
	if c.Name == "" {
		c.Name = "run"
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	m := &c.Model
	if m.Arch == "" {
		m.Arch = "mlp"
	}
	if m.Arch == "mlp" && len(m.Hidden) == 0 {
		m.Hidden = []int{256, 256}
	}
	if m.Arch == "dsb2d" && m.TimeEmbed == 0 {
		m.TimeEmbed = 16
	}
	if m.Arch == "unet" {
		if len(m.Channels) == 0 {
			m.Channels = []int{32, 64, 64}
		}
		setInt(&m.Groups, 8)
		setInt(&m.TimeEmbed, 32)
	}
	if m.Activation == "" {
		if m.Arch == "dsb2d" {
			m.Activation = "leakyrelu"
		} else {
			m.Activation = "silu"
		}
	}
	t := &c.Train
	setInt(&t.Batch, 256)
	setFloat(&t.LR, 1e-4)
	setInt(&t.Steps, 1000)
	setFloat(&t.EMADecay, 0.999)
	if t.LRSchedule == "" {
		t.LRSchedule = "constant"
	}
	d := &c.DSB
	setInt(&d.Steps, 20)
	setFloat(&d.GammaMin, 0.01)
	if d.GammaMax == 0 {
		d.GammaMax = d.GammaMin
	}
	if d.Reference == "" {
		d.Reference = "ou"
	}
	setFloat(&d.OUVar, 1)
	setInt(&d.Iterations, 10)
	setInt(&d.CacheSize, 10000)
	setInt(&d.CacheShards, 8)
	setInt(&d.CacheRefresh, 100)
	if c.Method == MethodDSBM {
		b := &c.DSBM
		setFloat(&b.Sigma, 1)
		if b.FirstCoupling == "" {
			b.FirstCoupling = "ref"
		}
		setInt(&b.Steps, 20)
		setFloat(&b.Eps, 1e-3)
		setInt(&b.Iterations, 5)
		setInt(&b.CacheSize, 10000)
		setInt(&b.CacheShards, 8)
		setInt(&b.CacheRefresh, 78)
	}
	s := &c.SI
	if s.Path == "" {
		s.Path = "linear"
	}
	setFloat(&s.GammaScale, 1)
	if s.Sampler == "" {
		s.Sampler = "heun"
	}
	setInt(&s.SamplerSteps, 100)
	if s.Divergence == "" {
		s.Divergence = "auto"
	}
	setInt(&s.Probes, 1)
	setInt(&s.LikelihoodSteps, 100)
	e := &c.Eval
	setInt(&e.Samples, 5000)
	setInt(&e.Trajectories, 64)
}

func setInt(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

func setFloat(p *float64, v float64) {
	if *p == 0 {
		*p = v
	}
}

// SIPaths are the interpolant paths bridge/si builds ("encoding-decoding"
// is another name of encdec); SIGammas its noise schedules g(t), none being
// g = 0. One-sided paths take gamma none, encdec any other.
var (
	SIPaths  = []string{"linear", "trig", "encdec", "encoding-decoding", "one-sided-linear", "one-sided-trig", "mirror"}
	SIGammas = []string{"sqrt", "quad", "sin2", "none"}
)

// Upper bounds of the sizes. They sit far above any run this program can
// train in memory, and exist so that a typo such as 1e12 fails at once,
// naming the field, instead of as an out-of-memory crash minutes later.
const (
	MaxBatch         = 1 << 20
	MaxSteps         = 1 << 30 // train.steps, dsb.cache_refresh
	MaxDSBSteps      = 10_000  // dsb.steps, time steps N of a chain
	MaxIterations    = 1000    // dsb.iterations, dsbm.iterations: 2 phases each, phases are numbered up to 9999
	MaxCacheSize     = 1 << 26 // dsb.cache_size, trajectories per cache generation
	MaxCacheShards   = 1 << 16
	MaxCachePairs    = 1 << 31 // dsb.cache_size × dsb.steps, the training pairs of one cache
	MaxSamples       = 1 << 24 // eval.samples, and sbtrain sample --n
	MaxLikelihood    = 1 << 20 // eval.likelihood_points
	MaxTrajectories  = 1 << 14 // eval.trajectories
	MaxSamplerSteps  = 1 << 20 // si.sampler_steps, si.likelihood_steps
	MaxProbes        = 1 << 10 // si.probes
	MaxDim           = 1 << 16 // data.dim, prior.dim
	MaxHidden        = 1 << 16 // each model.hidden width
	MaxHiddenLayers  = 64
	MaxTimeEmbed     = 1 << 12
	maxNameBytes     = 128
	nameCharsMessage = "1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
)

// namePattern is the run ids the store accepts (storage.ValidateRunID): the
// name is the default run id, so a name the store refuses is refused here.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate checks what the config can check alone; the dataset and network
// packages check their own specs again when they are built.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch c.Method {
	case MethodDSB, MethodSI, MethodDSBM:
	case "":
		bad("method", "missing, want %q, %q or %q", MethodDSB, MethodSI, MethodDSBM)
	default:
		bad("method", "%q, want %q, %q or %q", c.Method, MethodDSB, MethodSI, MethodDSBM)
	}
	if !namePattern.MatchString(c.Name) {
		bad("name", "%q: want %s (it names the run in the store)", c.Name, nameCharsMessage)
	}
	var nonFinite []namedFloat
	for _, f := range c.floats() {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			nonFinite = append(nonFinite, f)
		}
	}
	if n := len(nonFinite); n > 0 {
		// One is enough to fix; a covariance full of NaN is one mistake.
		more := ""
		if n > 1 {
			more = fmt.Sprintf(" (and %d more non-finite numbers)", n-1)
		}
		bad(nonFinite[0].name, "%v, want a finite number%s", nonFinite[0].v, more)
	}
	c.Data.validate("data", bad)
	c.Prior.validate("prior", bad)

	switch c.Model.Arch {
	case "mlp", "dsb2d":
	case "unet":
		c.Model.validateUNet(bad)
	default:
		bad("model.arch", "%q, want mlp, dsb2d or unet", c.Model.Arch)
	}
	if len(c.Model.Hidden) > MaxHiddenLayers {
		bad("model.hidden", "%d layers, want at most %d", len(c.Model.Hidden), MaxHiddenLayers)
	}
	for i, h := range c.Model.Hidden {
		if h <= 0 || h > MaxHidden {
			bad(fmt.Sprintf("model.hidden[%d]", i), "%d, want 1..%d", h, MaxHidden)
		}
	}
	if c.Model.TimeEmbed < 0 || c.Model.TimeEmbed%2 != 0 || c.Model.TimeEmbed > MaxTimeEmbed {
		bad("model.time_embed", "%d, want an even number in 0..%d", c.Model.TimeEmbed, MaxTimeEmbed)
	}
	switch c.Model.Activation {
	case "leakyrelu", "silu", "relu", "tanh":
	default:
		bad("model.activation", "%q, want leakyrelu, silu, relu or tanh", c.Model.Activation)
	}

	t := c.Train
	boundedInt(bad, "train.batch", t.Batch, MaxBatch)
	boundedInt(bad, "train.steps", t.Steps, MaxSteps)
	positiveFloat(bad, "train.lr", t.LR)
	if !(t.EMADecay >= 0 && t.EMADecay < 1) {
		bad("train.ema_decay", "%v, want in [0, 1)", t.EMADecay)
	}
	switch {
	case t.LRSchedule == "constant", t.LRSchedule == "cosine":
	default:
		bad("train.lr_schedule", "%q, want constant or cosine", t.LRSchedule)
	}
	if !(t.GradClip >= 0) || math.IsInf(t.GradClip, 0) {
		bad("train.grad_clip", "%v, want >= 0 (0 turns clipping off)", t.GradClip)
	}

	switch c.Method {
	case MethodDSB:
		c.validateDSB(bad)
	case MethodSI:
		c.validateSI(bad)
	case MethodDSBM:
		c.validateDSBM(bad)
	}
	boundedInt(bad, "eval.samples", c.Eval.Samples, MaxSamples)
	if c.Eval.Likelihood < 0 || c.Eval.Likelihood > MaxLikelihood {
		bad("eval.likelihood_points", "%d, want 0..%d", c.Eval.Likelihood, MaxLikelihood)
	}
	if c.Eval.Trajectories < 0 || c.Eval.Trajectories > MaxTrajectories {
		bad("eval.trajectories", "%d, want 0..%d", c.Eval.Trajectories, MaxTrajectories)
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	// One line, so a bad config reads as one error in logs and terminals.
	return errors.New(strings.Join(msgs, "; "))
}

// positiveFields are defaulted when absent, so an explicit 0 would otherwise
// silently become the default instead of the error it is.
var positiveFields = [][2]string{
	{"train", "batch"}, {"train", "lr"}, {"train", "steps"},
	{"dsb", "steps"}, {"dsb", "gamma_min"}, {"dsb", "gamma_max"}, {"dsb", "ou_var"}, {"dsb", "iterations"},
	{"dsb", "cache_size"}, {"dsb", "cache_shards"}, {"dsb", "cache_refresh"},
	{"dsbm", "sigma"}, {"dsbm", "steps"}, {"dsbm", "eps"}, {"dsbm", "iterations"},
	{"dsbm", "cache_size"}, {"dsbm", "cache_shards"}, {"dsbm", "cache_refresh"},
	{"si", "gamma_scale"}, {"si", "sampler_steps"}, {"si", "probes"}, {"si", "likelihood_steps"},
	{"eval", "samples"},
}

func rejectExplicitZeros(b []byte) error {
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return err // the strict decode accepted it, so this cannot happen
	}
	var errs []string
	for _, f := range positiveFields {
		section, _ := raw[f[0]].(map[string]any)
		switch v := section[f[1]].(type) {
		case int:
			if v == 0 {
				errs = append(errs, fmt.Sprintf("%s.%s: 0, want > 0 (leave it out for the default)", f[0], f[1]))
			}
		case float64:
			if v == 0 {
				errs = append(errs, fmt.Sprintf("%s.%s: 0, want > 0 (leave it out for the default)", f[0], f[1]))
			}
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// maxImageSide bounds an image side so that a typo cannot size gigabytes.
const maxImageSide = 4096

func (m Model) validateUNet(bad func(string, string, ...any)) {
	if m.Activation != "silu" {
		bad("model.activation", "%q: the unet uses silu", m.Activation)
	}
	if len(m.Hidden) > 0 {
		bad("model.hidden", "set for arch unet, which has channels instead")
	}
	if m.Groups < 1 {
		bad("model.groups", "%d, want > 0", m.Groups)
	}
	if len(m.Channels) > 8 {
		bad("model.channels", "%d levels, want at most 8", len(m.Channels))
	}
	for i, ch := range m.Channels {
		switch {
		case ch <= 0 || ch > 4096:
			bad(fmt.Sprintf("model.channels[%d]", i), "%d, want 1..4096", ch)
		case m.Groups > 0 && ch%m.Groups != 0:
			bad(fmt.Sprintf("model.channels[%d]", i), "%d is not divisible by model.groups = %d", ch, m.Groups)
		}
	}
	if len(m.Image) == 0 {
		return // an image dataset gives the shape; experiment checks it is there
	}
	if len(m.Image) != 3 {
		bad("model.image", "%v, want [C, H, W]", m.Image)
		return
	}
	for i, v := range m.Image {
		if v <= 0 || v > maxImageSide {
			bad(fmt.Sprintf("model.image[%d]", i), "%d, want 1..%d", v, maxImageSide)
			return
		}
	}
	if len(m.Channels) > 0 {
		levels := len(m.Channels)
		div := 1 << (levels - 1)
		if m.Image[1]%div != 0 || m.Image[2]%div != 0 {
			bad("model.image", "%dx%d is not divisible by 2^(levels-1) = %d for %d levels of model.channels",
				m.Image[1], m.Image[2], div, levels)
		}
	}
}

func (c *Config) validateDSB(bad func(string, string, ...any)) {
	d := c.DSB
	if d.Steps <= 0 || d.Steps%2 != 0 || d.Steps > MaxDSBSteps {
		bad("dsb.steps", "%d, want a positive even number of time steps N, at most %d", d.Steps, MaxDSBSteps)
	}
	positiveFloat(bad, "dsb.gamma_min", d.GammaMin)
	positiveFloat(bad, "dsb.gamma_max", d.GammaMax)
	if d.GammaMax < d.GammaMin {
		bad("dsb.gamma_max", "%v is below dsb.gamma_min %v", d.GammaMax, d.GammaMin)
	}
	switch d.Reference {
	case "ou":
		positiveFloat(bad, "dsb.ou_var", d.OUVar)
	case "brownian":
	default:
		bad("dsb.reference", "%q, want ou or brownian", d.Reference)
	}
	boundedInt(bad, "dsb.iterations", d.Iterations, MaxIterations)
	boundedInt(bad, "dsb.cache_size", d.CacheSize, MaxCacheSize)
	boundedInt(bad, "dsb.cache_shards", d.CacheShards, MaxCacheShards)
	boundedInt(bad, "dsb.cache_refresh", d.CacheRefresh, MaxSteps)
	if d.CacheSize > 0 && d.CacheSize <= MaxCacheSize && d.Steps > 0 && d.Steps <= MaxDSBSteps && int64(d.CacheSize)*int64(d.Steps) > MaxCachePairs {
		bad("dsb.cache_size", "%d trajectories of dsb.steps %d are %d training pairs, want at most %d", d.CacheSize, d.Steps, int64(d.CacheSize)*int64(d.Steps), int64(MaxCachePairs))
	}
	if d.CacheShards > 0 && d.CacheSize%d.CacheShards != 0 {
		bad("dsb.cache_size", "%d is not a multiple of dsb.cache_shards %d", d.CacheSize, d.CacheShards)
	}
	if d.CacheShards > 0 && c.Train.Batch%d.CacheShards != 0 {
		bad("train.batch", "%d is not a multiple of dsb.cache_shards %d (each minibatch takes the same number of samples from every shard)", c.Train.Batch, d.CacheShards)
	}
}

func (c *Config) validateDSBM(bad func(string, string, ...any)) {
	d := c.DSBM
	positiveFloat(bad, "dsbm.sigma", d.Sigma)
	switch d.FirstCoupling {
	case "ref", "ind":
	default:
		bad("dsbm.first_coupling", "%q, want ref (x1 = x0 + sigma Z) or ind (independent draws)", d.FirstCoupling)
	}
	boundedInt(bad, "dsbm.steps", d.Steps, MaxDSBSteps)
	if !(d.Eps > 0 && d.Eps < 0.5) {
		bad("dsbm.eps", "%v, want 0 < eps < 0.5 (training times are U[eps, 1-eps])", d.Eps)
	}
	boundedInt(bad, "dsbm.iterations", d.Iterations, MaxIterations)
	boundedInt(bad, "dsbm.cache_size", d.CacheSize, MaxCacheSize)
	boundedInt(bad, "dsbm.cache_shards", d.CacheShards, MaxCacheShards)
	boundedInt(bad, "dsbm.cache_refresh", d.CacheRefresh, MaxSteps)
	if d.SampleSteps < 0 || d.SampleSteps > MaxDSBSteps {
		bad("dsbm.sample_steps", "%d, want 0..%d (0: dsbm.steps)", d.SampleSteps, MaxDSBSteps)
	}
	if d.WarmLR < 0 {
		bad("dsbm.warm_lr", "%v, want >= 0 (0: train.lr)", d.WarmLR)
	}
	if d.WarmLR > 0 && !d.WarmStart {
		bad("dsbm.warm_lr", "%v needs dsbm.warm_start: true (it is the rate of the warm-started phases)", d.WarmLR)
	}
	switch d.LastPhase {
	case "", LastPhaseForward:
	case LastPhaseBackward:
		if d.Iterations < 2 {
			bad("dsbm.last_phase", "backward needs dsbm.iterations >= 2 (the forward drift is then the next-to-last iteration's), got %d", d.Iterations)
		}
	default:
		bad("dsbm.last_phase", "%q, want forward or backward", d.LastPhase)
	}
	if d.CacheShards > 0 && d.CacheSize%d.CacheShards != 0 {
		bad("dsbm.cache_size", "%d is not a multiple of dsbm.cache_shards %d", d.CacheSize, d.CacheShards)
	}
	if d.CacheShards > 0 && c.Train.Batch%d.CacheShards != 0 {
		bad("train.batch", "%d is not a multiple of dsbm.cache_shards %d (each minibatch takes the same number of samples from every shard)", c.Train.Batch, d.CacheShards)
	}
}

func (c *Config) validateSI(bad func(string, string, ...any)) {
	s := c.SI
	// The names mirror bridge/si's (NewPath), so that `config --check`
	// refuses what training would.
	oneSided := s.Path == "one-sided-linear" || s.Path == "one-sided-trig"
	encDec := s.Path == "encdec" || s.Path == "encoding-decoding"
	switch {
	case !slices.Contains(SIPaths, s.Path):
		bad("si.path", "%q, want one of %s", s.Path, strings.Join(SIPaths, ", "))
	case s.Gamma != "" && !slices.Contains(SIGammas, s.Gamma):
		bad("si.gamma", "%q, want one of %s (or leave it out for the path's own)", s.Gamma, strings.Join(SIGammas, ", "))
	case oneSided && s.Gamma != "" && s.Gamma != "none":
		bad("si.gamma", "%q: a one-sided path (%s) has no latent z, want none", s.Gamma, s.Path)
	case encDec && s.Gamma == "none":
		bad("si.gamma", "none: the encdec path passes through pure noise at t = 1/2, want a gamma > 0")
	case s.Path == "mirror" && s.Gamma == "none":
		bad("si.gamma", "none: the mirror interpolant is x + g z, want a gamma > 0")
	}
	positiveFloat(bad, "si.gamma_scale", s.GammaScale)
	noiseless := s.Gamma == "none" || (s.Gamma == "" && oneSided)
	switch s.Sampler {
	case "euler", "heun", "rk4", "dopri5":
	case "sde", "sde-heun":
		if !s.TrainDenoiser {
			bad("si.sampler", "%s needs the score: set si.train_denoiser: true", s.Sampler)
		}
		if noiseless {
			bad("si.sampler", "%s needs a noisy interpolant: si.gamma must not be none", s.Sampler)
		}
	default:
		bad("si.sampler", "%q, want euler, heun, rk4, dopri5, sde or sde-heun", s.Sampler)
	}
	c.validateSIExtras(bad)
	boundedInt(bad, "si.sampler_steps", s.SamplerSteps, MaxSamplerSteps)
	if s.Epsilon < 0 {
		bad("si.epsilon", "%v, want >= 0", s.Epsilon)
	}
	switch s.Divergence {
	case "auto", "exact", "hutchinson":
	default:
		bad("si.divergence", "%q, want auto, exact or hutchinson", s.Divergence)
	}
	boundedInt(bad, "si.probes", s.Probes, MaxProbes)
	boundedInt(bad, "si.likelihood_steps", s.LikelihoodSteps, MaxSamplerSteps)
}

// validateSIExtras checks the fields of the rest of the paper.
func (c *Config) validateSIExtras(bad func(string, string, ...any)) {
	s := c.SI
	switch s.Field {
	case "", "eta":
	case "score":
		if !s.TrainDenoiser {
			bad("si.field", "score is the second network: set si.train_denoiser: true")
		}
	default:
		bad("si.field", "%q, want eta or score", s.Field)
	}
	switch s.Velocity {
	case "", "b":
	case "v":
		if s.Field != "score" || !s.TrainDenoiser {
			bad("si.velocity", "v forms b = v - g g' s from the score network: set si.field: score and si.train_denoiser: true")
		}
	default:
		bad("si.velocity", "%q, want b or v", s.Velocity)
	}
	if s.Antithetic != nil && *s.Antithetic && c.Train.Batch%2 != 0 {
		bad("si.antithetic", "true with train.batch %d: antithetic pairs need an even batch", c.Train.Batch)
	}
	switch s.EpsSchedule {
	case "", "constant", "gamma", "gamma2":
	default:
		bad("si.eps_schedule", "%q, want constant, gamma or gamma2", s.EpsSchedule)
	}
	if s.RTol < 0 {
		bad("si.rtol", "%v, want > 0 (or leave it out for the default)", s.RTol)
	}
	if s.ATol < 0 {
		bad("si.atol", "%v, want > 0 (or leave it out for the default)", s.ATol)
	}
	switch s.LikelihoodEstimator {
	case "", "ode":
	case "sde":
		if !s.TrainDenoiser {
			bad("si.likelihood_estimator", "sde needs the score: set si.train_denoiser: true")
		}
	default:
		bad("si.likelihood_estimator", "%q, want ode or sde", s.LikelihoodEstimator)
	}
	if s.LikelihoodPaths != 0 && (s.LikelihoodPaths < 2 || s.LikelihoodPaths > MaxProbes) {
		bad("si.likelihood_paths", "%d, want 2..%d (or leave it out for the default)", s.LikelihoodPaths, MaxProbes)
	}
}

func (d Dataset) validate(field string, bad func(string, string, ...any)) {
	if d.Name == "" {
		bad(field+".name", "missing: name a dataset (e.g. gaussian, moons, checkerboard, points)")
	}
	if d.Dim < 0 || d.Dim > MaxDim {
		bad(field+".dim", "%d, want 0..%d", d.Dim, MaxDim)
	}
	image := d.Name == "mnist" || d.Name == "fashion-mnist" || d.Name == "idx" || d.Name == "png"
	if (d.Name == "points" || d.Name == "idx" || d.Name == "png") && d.Path == "" {
		bad(field+".path", "missing: the %s dataset reads a file or folder", d.Name)
	}
	if d.Name != "points" && !image && d.Path != "" {
		bad(field+".path", "set, but only the points and image datasets read files (name is %q)", d.Name)
	}
	if d.Name == "idx" && d.Labels == "" {
		bad(field+".labels", "missing: the idx dataset reads an images file (path) and a labels file (labels)")
	}
	if !image && (d.Labels != "" || d.TestPath != "" || d.TestLabels != "" || len(d.Classes) > 0 || d.Downscale != 0) {
		bad(field+".classes", "labels, test_path, test_labels, classes and downscale apply to image datasets (mnist, fashion-mnist, idx, png), not %q", d.Name)
	}
	if d.Downscale < 0 || d.Downscale > 64 {
		bad(field+".downscale", "%d, want 0..64 (2 halves each side)", d.Downscale)
	}
}

func boundedInt(bad func(string, string, ...any), field string, v, most int) {
	if v <= 0 || v > most {
		bad(field, "%d, want 1..%d", v, most)
	}
}

type namedFloat struct {
	name string
	v    float64
}

// floats lists every float of the config by field name: each must be
// finite, whatever else its own check wants (JSON, and so Hash, cannot
// encode NaN or Inf).
func (c *Config) floats() []namedFloat {
	out := []namedFloat{
		{"train.lr", c.Train.LR}, {"train.ema_decay", c.Train.EMADecay}, {"train.grad_clip", c.Train.GradClip},
		{"dsb.gamma_min", c.DSB.GammaMin}, {"dsb.gamma_max", c.DSB.GammaMax},
		{"dsb.ou_mean", c.DSB.OUMean}, {"dsb.ou_var", c.DSB.OUVar},
		{"si.gamma_scale", c.SI.GammaScale}, {"si.epsilon", c.SI.Epsilon},
		{"dsbm.sigma", c.DSBM.Sigma}, {"dsbm.eps", c.DSBM.Eps}, {"dsbm.warm_lr", c.DSBM.WarmLR}, {"si.rtol", c.SI.RTol}, {"si.atol", c.SI.ATol},
	}
	for _, d := range []struct {
		field string
		d     Dataset
	}{{"data", c.Data}, {"prior", c.Prior}} {
		out = append(out, namedFloat{d.field + ".noise", d.d.Noise}, namedFloat{d.field + ".scale", d.d.Scale},
			namedFloat{d.field + ".jitter", d.d.Jitter})
		for i, v := range d.d.Mean {
			out = append(out, namedFloat{fmt.Sprintf("%s.mean[%d]", d.field, i), v})
		}
		for i, v := range d.d.Var {
			out = append(out, namedFloat{fmt.Sprintf("%s.var[%d]", d.field, i), v})
		}
		for i, row := range d.d.Cov {
			for j, v := range row {
				out = append(out, namedFloat{fmt.Sprintf("%s.cov[%d][%d]", d.field, i, j), v})
			}
		}
	}
	return out
}

func positiveFloat(bad func(string, string, ...any), field string, v float64) {
	if !(v > 0) || math.IsInf(v, 0) {
		bad(field, "%v, want a finite number > 0", v)
	}
}

// Hash identifies the run's math: two processes with equal hashes train the
// same thing. It covers every field, in a canonical encoding.
func (c *Config) Hash() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic("config: marshal for hash: " + err.Error()) // only plain data types: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// YAML encodes the completed config, to record beside a run's results.
func (c *Config) YAML() []byte {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic("config: marshal yaml: " + err.Error())
	}
	return b
}
