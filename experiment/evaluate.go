package experiment

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/rng"
)

// Held-out streams: data draws A and B (B only to measure how far two
// independent draws are) and the prior points that generation starts from.
// They use PurposeHeldOut, which training never reads.
const (
	heldOutData uint64 = iota
	heldOutBaseline
	heldOutPrior
	heldOutLikelihood
	heldOutPriorBaseline
)

// Figures are the evaluation of one model.
type Figures struct {
	Iteration int `json:"iteration,omitempty"` // DSB: after this IPF iteration
	// Distances from generated samples to held-out data, and between two
	// independent data draws of the same size (the floor sampling noise sets).
	Distances eval.Distances `json:"distances"`
	Baseline  eval.Distances `json:"baseline"`
	// SlicedW2Ratio and EnergyRatio are Distances over Baseline: 1 is as
	// good as a fresh data draw.
	SlicedW2Ratio float64 `json:"sliced_w2_ratio"`
	EnergyRatio   float64 `json:"energy_ratio"`

	// Forward scores the other direction, for models that also carry data
	// to the prior (DSBM): the forward drift run from held-out data, against
	// held-out prior points.
	Forward *DirectionFigures `json:"forward,omitempty"`

	Gaussian      *GaussianFigures   `json:"gaussian,omitempty"`
	Likelihood    *LikelihoodFigures `json:"likelihood,omitempty"`
	VelocityRelL2 *float64           `json:"velocity_rel_l2,omitempty"` // SI, Gaussian endpoints
	ScoreRelL2    *float64           `json:"score_rel_l2,omitempty"`    // SI with a second network, Gaussian endpoints
	Image         *ImageFigures      `json:"image,omitempty"`           // labelled image data
}

// DirectionFigures are the distances of one direction's samples to
// held-out points of the law it ends at, beside two independent draws of
// that law.
type DirectionFigures struct {
	Distances     eval.Distances `json:"distances"`
	Baseline      eval.Distances `json:"baseline"`
	SlicedW2Ratio float64        `json:"sliced_w2_ratio"`
	EnergyRatio   float64        `json:"energy_ratio"`
}

// ForwardModel is a Model that also runs from the data side to the prior.
type ForwardModel interface {
	Model
	// GenerateForward maps data points start (n rows) to the prior side;
	// noise is keyed by seed. It returns nil when the model has no forward
	// part yet.
	GenerateForward(ctx context.Context, start []float32, seed uint64) ([]float32, error)
}

// GaussianFigures compare generated X0 with a Gaussian data law, and the
// sampled coupling with the Schrödinger bridge's closed form.
type GaussianFigures struct {
	MeanMaxErr float64 `json:"mean_max_abs_err"` // over coordinates, vs the data law
	VarMaxErr  float64 `json:"var_max_abs_err"`
	// CovX0XN is the diagonal of Cov(X0, XN) over sampled bridges, and
	// CovClosedForm the bridge's (Brownian reference only).
	CovX0XN       []float64 `json:"cov_x0_xn_diag"`
	CovClosedForm []float64 `json:"cov_closed_form_diag,omitempty"`
	CovMaxErr     *float64  `json:"cov_max_abs_err,omitempty"`
}

// LikelihoodFigures is the model's mean log-likelihood of held-out data.
type LikelihoodFigures struct {
	Points   int      `json:"points"`
	Mean     float64  `json:"mean_nats"`
	Exact    *float64 `json:"exact_mean_nats,omitempty"` // when the data law has a density
	ErrorDim *float64 `json:"abs_err_nats_per_dim,omitempty"`
	// SDE is the SDE model's Feynman-Kac estimate on the first SDEPoints
	// of the same points (si.likelihood_estimator: sde), with the Monte
	// Carlo standard error of its mean, and ODEOnThem the ODE's mean on
	// those points.
	SDEPoints int      `json:"sde_points,omitempty"`
	SDE       *float64 `json:"sde_mean_nats,omitempty"`
	SDEStdErr *float64 `json:"sde_std_err_nats,omitempty"`
	ODEOnThem *float64 `json:"ode_mean_nats_same_points,omitempty"`
}

// maxSDELikelihoodPoints bounds the SDE estimate's points: each costs
// likelihood_paths paths of network VJPs.
const maxSDELikelihoodPoints = 128

// Evaluator holds the held-out draws, so that every evaluation of a run
// (per IPF iteration, final, `sbtrain eval`) uses the same points.
type Evaluator struct {
	setup    *Setup
	heldOut  eval.Cloud
	start    []float32
	baseline eval.Distances
	// priorBaseline is drawn on the first forward evaluation.
	priorBaseline *eval.Distances
	image         *imageEval
	// last is the newest evaluation, so that the final model, which is
	// the last iteration's, is not sampled again: minutes for images.
	last *evaluation
}

// evaluation is one Evaluate result and the fingerprint of the model's
// networks it was computed for.
type evaluation struct {
	nets    [sha256.Size]byte
	figures Figures
	gen     *Generated
}

// netsFingerprint hashes the model's networks: role, shape and every
// weight's bits. Within one Evaluator (one config) the rest of a model is
// fixed, so equal fingerprints sample equal bytes.
func netsFingerprint(m Model) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%T\n", m)
	var buf [4]byte
	for _, rn := range m.Nets() {
		if rn.Net == nil {
			fmt.Fprintf(h, "%s none\n", rn.Role)
			continue
		}
		params := rn.Net.Params()
		fmt.Fprintf(h, "%s %d\n", rn.Role, len(params))
		for _, v := range params {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			h.Write(buf[:])
		}
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// heldOutData is where held-out data come from: the test split of an image
// dataset, the distribution itself otherwise.
func (s *Setup) heldOutData() dataset.Distribution { return heldOutOf(s.Data) }

func heldOutOf(d dataset.Distribution) dataset.Distribution {
	if h, ok := d.(dataset.HeldOut); ok {
		if t := h.HeldOut(); t != nil {
			return t
		}
	}
	return d
}

// NewEvaluator draws the held-out sets and the baseline distances.
func (s *Setup) NewEvaluator() (*Evaluator, error) {
	return s.NewEvaluatorContext(context.Background())
}

// NewEvaluatorContext is NewEvaluator that ctx can stop: with image data
// it may first train the data's classifier, minutes the first time.
func (s *Setup) NewEvaluatorContext(ctx context.Context) (*Evaluator, error) {
	n, seed := s.Config.Eval.Samples, s.Config.Seed
	e := &Evaluator{
		setup:   s,
		heldOut: eval.Cloud{Data: dataset.Draw(s.heldOutData(), seed, rng.PurposeHeldOut, []uint64{heldOutData}, 0, n), Dim: s.Dim},
		start:   s.heldOutStart(n),
	}
	other := eval.Cloud{Data: dataset.Draw(s.heldOutData(), seed, rng.PurposeHeldOut, []uint64{heldOutBaseline}, 0, n), Dim: s.Dim}
	var err error
	if e.baseline, err = eval.Compare(e.heldOut, other, rng.New(seed, rng.PurposeHeldOut, 99)); err != nil {
		return nil, fmt.Errorf("baseline distances: %w", err)
	}
	if e.image, err = newImageEval(ctx, s.Data, n); err != nil {
		return nil, fmt.Errorf("image figures: %w", err)
	}
	return e, nil
}

// heldOutStart is the first n held-out prior points generation starts
// from: prior draws (from its test split when it is an image dataset), or
// N(0, I) for a one-sided interpolant.
func (s *Setup) heldOutStart(n int) []float32 {
	prior := heldOutOf(s.Prior)
	if s.Config.Method == "si" {
		if p, err := s.path(); err == nil && p.OneSided() {
			prior = standardNormal(s.Dim)
		} else if err == nil && p.Mirror() {
			prior = s.Data
		}
	}
	return dataset.Draw(prior, s.Config.Seed, rng.PurposeHeldOut, []uint64{heldOutPrior}, 0, n)
}

// Preview generates from the first n held-out prior points (the rows
// Evaluate starts from) and returns the first n held-out data points with
// the result: a quick look at a model during training, without the
// distances and figures of Evaluate.
func (s *Setup) Preview(ctx context.Context, m Model, n int) (data, generated eval.Cloud, err error) {
	if n < 1 {
		return eval.Cloud{}, eval.Cloud{}, fmt.Errorf("preview of %d points", n)
	}
	gen, err := m.Generate(ctx, s.heldOutStart(n), s.Config.Seed, false)
	if err != nil {
		return eval.Cloud{}, eval.Cloud{}, err
	}
	generated = eval.Cloud{Data: gen.End, Dim: s.Dim}
	if err := generated.Check("generated samples"); err != nil {
		return eval.Cloud{}, eval.Cloud{}, err
	}
	data = eval.Cloud{Data: dataset.Draw(s.heldOutData(), s.Config.Seed, rng.PurposeHeldOut, []uint64{heldOutData}, 0, n), Dim: s.Dim}
	return data, generated, nil
}

// HeldOut is the held-out data cloud.
func (e *Evaluator) HeldOut() eval.Cloud { return e.heldOut }

// Evaluate generates from the held-out prior points and scores the result.
// An evaluation of the same networks as the previous one returns its
// figures (a copy) and samples without sampling again.
func (e *Evaluator) Evaluate(ctx context.Context, m Model) (*Figures, *Generated, error) {
	key := netsFingerprint(m)
	if e.last != nil && e.last.nets == key {
		f := e.last.figures
		return &f, e.last.gen, nil
	}
	f, gen, err := e.evaluate(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	e.last = &evaluation{nets: key, figures: *f, gen: gen}
	return f, gen, nil
}

func (e *Evaluator) evaluate(ctx context.Context, m Model) (*Figures, *Generated, error) {
	cfg := e.setup.Config
	gen, err := m.Generate(ctx, e.start, cfg.Seed, false)
	if err != nil {
		return nil, nil, err
	}
	cloud := eval.Cloud{Data: gen.End, Dim: e.setup.Dim}
	if err := cloud.Check("generated samples"); err != nil {
		return nil, nil, err
	}
	f := &Figures{Baseline: e.baseline}
	if f.Distances, err = eval.Compare(cloud, e.heldOut, rng.New(cfg.Seed, rng.PurposeHeldOut, 99)); err != nil {
		return nil, nil, fmt.Errorf("distances: %w", err)
	}
	f.SlicedW2Ratio = f.Distances.SlicedW2 / e.baseline.SlicedW2
	f.EnergyRatio = f.Distances.Energy / e.baseline.Energy
	if e.image != nil {
		if f.Image, err = e.image.score(gen.End); err != nil {
			return nil, nil, fmt.Errorf("image figures: %w", err)
		}
	}
	if fm, ok := m.(ForwardModel); ok && !cfg.Eval.SkipForward {
		if f.Forward, err = e.forwardFigures(ctx, fm); err != nil {
			return nil, nil, err
		}
	}
	switch m := m.(type) {
	case *DSBModel:
		if f.Gaussian, err = e.gaussianFigures(cloud); err != nil {
			return nil, nil, err
		}
	case *DSBMModel:
		if f.Gaussian, err = e.gaussianFigures(cloud); err != nil {
			return nil, nil, err
		}
	case *SIModel:
		if f.Likelihood, err = e.likelihood(ctx, m); err != nil {
			return nil, nil, err
		}
		if f.VelocityRelL2, f.ScoreRelL2, err = e.velocityError(m); err != nil {
			return nil, nil, err
		}
	}
	return f, gen, nil
}

// forwardFigures runs the model from the held-out data to the prior side
// and compares the result with the held-out prior points.
func (e *Evaluator) forwardFigures(ctx context.Context, m ForwardModel) (*DirectionFigures, error) {
	cfg := e.setup.Config
	end, err := m.GenerateForward(ctx, e.heldOut.Data, cfg.Seed)
	if err != nil || end == nil {
		return nil, err
	}
	cloud := eval.Cloud{Data: end, Dim: e.setup.Dim}
	if err := cloud.Check("forward samples"); err != nil {
		return nil, err
	}
	prior := eval.Cloud{Data: e.start, Dim: e.setup.Dim}
	if e.priorBaseline == nil {
		n := len(e.start) / e.setup.Dim
		other := eval.Cloud{Data: dataset.Draw(e.setup.Prior, cfg.Seed, rng.PurposeHeldOut, []uint64{heldOutPriorBaseline}, 0, n), Dim: e.setup.Dim}
		b, err := eval.Compare(prior, other, rng.New(cfg.Seed, rng.PurposeHeldOut, 99))
		if err != nil {
			return nil, fmt.Errorf("prior baseline distances: %w", err)
		}
		e.priorBaseline = &b
	}
	f := &DirectionFigures{Baseline: *e.priorBaseline}
	if f.Distances, err = eval.Compare(cloud, prior, rng.New(cfg.Seed, rng.PurposeHeldOut, 99)); err != nil {
		return nil, fmt.Errorf("forward distances: %w", err)
	}
	f.SlicedW2Ratio = f.Distances.SlicedW2 / f.Baseline.SlicedW2
	f.EnergyRatio = f.Distances.Energy / f.Baseline.Energy
	return f, nil
}

// Marginal strip: this many rows, at about this many times.
const (
	MarginalPoints = 1000
	marginalTimes  = 6
)

// chains is what the plots draw of the chain: the first Eval.Trajectories
// paths, and the first MarginalPoints rows at about six evenly spaced times
// with their indices and the chain's last index (none for clouds of
// dimension 1, nor for images, whose chains are drawn as pictures).
type chains struct {
	trajectories  []eval.Cloud
	marginals     []eval.Cloud
	marginalSteps []int
	marginalOf    int
}

// chains generates both sets of paths in one call, on the rows and noise
// of Evaluate's first rows.
func (e *Evaluator) chains(ctx context.Context, m Model) (chains, error) {
	d := e.setup.Dim
	rows := len(e.start) / d
	traj := min(e.setup.Config.Eval.Trajectories, rows)
	marg := min(MarginalPoints, rows)
	if _, image := e.setup.ImageShape(); d < 2 || image {
		marg = 0
	}
	var c chains
	n := max(traj, marg)
	if n == 0 {
		return c, nil
	}
	gen, err := m.Generate(ctx, e.start[:n*d], e.setup.Config.Seed, true)
	if err != nil {
		return c, err
	}
	if traj > 0 {
		c.trajectories = make([]eval.Cloud, len(gen.Paths))
		for k, p := range gen.Paths {
			c.trajectories[k] = eval.Cloud{Data: p[:traj*d], Dim: d}
		}
	}
	if marg > 0 {
		c.marginalSteps = eval.MarginalTimes(len(gen.Paths), marginalTimes)
		c.marginalOf = len(gen.Paths) - 1
		c.marginals = make([]eval.Cloud, len(c.marginalSteps))
		for i, k := range c.marginalSteps {
			c.marginals[i] = eval.Cloud{Data: gen.Paths[k][:marg*d], Dim: d}
		}
	}
	return c, nil
}

// gaussianFigures applies when data and prior are Gaussian laws.
func (e *Evaluator) gaussianFigures(gen eval.Cloud) (*GaussianFigures, error) {
	data, ok1 := e.setup.Data.(*dataset.Gaussian)
	prior, ok2 := e.setup.Prior.(*dataset.Gaussian)
	if !ok1 || !ok2 {
		return nil, nil
	}
	mean, err := eval.Mean(gen)
	if err != nil {
		return nil, err
	}
	cov, err := eval.Covariance(gen)
	if err != nil {
		return nil, err
	}
	g := &GaussianFigures{}
	if g.MeanMaxErr, err = eval.MaxAbsError(mean, data.Mean()); err != nil {
		return nil, err
	}
	if g.VarMaxErr, err = eval.MaxAbsError(eval.Diagonal(cov), eval.Diagonal(data.Cov())); err != nil {
		return nil, err
	}
	cross, err := eval.CrossCovariance(gen, eval.Cloud{Data: e.start, Dim: e.setup.Dim})
	if err != nil {
		return nil, err
	}
	g.CovX0XN = eval.Diagonal(cross)
	sigma, err := e.setup.brownianScale()
	if err != nil {
		return nil, err
	}
	if sigma > 0 {
		closed, err := eval.SBCoupling(data.Cov(), prior.Cov(), sigma)
		if err != nil {
			return nil, fmt.Errorf("closed-form coupling: %w", err)
		}
		g.CovClosedForm = eval.Diagonal(closed)
		worst, err := eval.MaxAbsError(g.CovX0XN, g.CovClosedForm)
		if err != nil {
			return nil, err
		}
		g.CovMaxErr = &worst
	}
	return g, nil
}

// brownianScale is the scale s of the run's Brownian reference dX = s dW
// on [0, 1], or 0 when the reference is not Brownian.
func (s *Setup) brownianScale() (float64, error) {
	switch {
	case s.Config.Method == "dsbm":
		return s.Config.DSBM.Sigma, nil
	case s.Config.DSB.Reference == "brownian":
		sched, err := s.schedule()
		if err != nil {
			return 0, err
		}
		// The chain's Brownian motion has variance 2T over the whole grid.
		return math.Sqrt(2 * sched.T()), nil
	}
	return 0, nil
}

// likelihood scores held-out data points under the flow, when the prior
// has a density.
func (e *Evaluator) likelihood(ctx context.Context, m *SIModel) (*LikelihoodFigures, error) {
	cfg := e.setup.Config
	n := cfg.Eval.Likelihood
	if n == 0 {
		return nil, nil
	}
	rho0, ok := e.setup.Prior.(dataset.LogDensity)
	if m.Path.OneSided() {
		rho0, ok = standardNormal(e.setup.Dim), true
	} else if m.Path.Mirror() {
		rho0, ok = e.setup.Data.(dataset.LogDensity)
	}
	if !ok {
		return nil, nil
	}
	b, score, err := m.Fields()
	if err != nil {
		return nil, err
	}
	jb, ok := b.(si.JacobianField)
	if !ok {
		return nil, fmt.Errorf("log-likelihood: the velocity %T has no VJP", b)
	}
	x1 := dataset.Draw(e.setup.heldOutData(), cfg.Seed, rng.PurposeHeldOut, []uint64{heldOutLikelihood}, 0, n)
	ll, err := si.LogLikelihood(ctx, jb, rho0, x1, si.LikelihoodOptions{
		Method: "rk4", Steps: cfg.SI.LikelihoodSteps, Divergence: cfg.SI.Divergence, Probes: cfg.SI.Probes, Seed: cfg.Seed,
	})
	if err != nil {
		return nil, fmt.Errorf("log-likelihood: %w", err)
	}
	f := &LikelihoodFigures{Points: n, Mean: meanOf(ll)}
	if cfg.SI.LikelihoodEstimator == "sde" {
		js, ok := score.(si.JacobianField)
		if !ok {
			return nil, fmt.Errorf("sde log-likelihood: si.likelihood_estimator sde needs a score with a VJP, the run has %T", score)
		}
		k := min(n, maxSDELikelihoodPoints)
		r, err := si.SDELogLikelihood(ctx, m.Path, jb, js, rho0, x1[:k*e.setup.Dim], si.SDELikelihoodOptions{
			Method: si.MethodSDEHeun, Steps: cfg.SI.LikelihoodSteps, Eps: cfg.SI.Epsilon, EpsSchedule: cfg.SI.EpsSchedule,
			Paths: cfg.SI.LikelihoodPaths, Divergence: cfg.SI.Divergence, Probes: cfg.SI.Probes, Seed: cfg.Seed,
		})
		if err != nil {
			return nil, fmt.Errorf("sde log-likelihood: %w", err)
		}
		var v float64
		for _, se := range r.StdErr {
			v += se * se
		}
		mean, se, ode := meanOf(r.LogP), math.Sqrt(v)/float64(k), meanOf(ll[:k])
		f.SDEPoints, f.SDE, f.SDEStdErr, f.ODEOnThem = k, &mean, &se, &ode
	}
	if exact, ok := e.setup.Data.(dataset.LogDensity); ok {
		var sum float64
		x := make([]float64, e.setup.Dim)
		for i := range n {
			for j := range x {
				x[j] = float64(x1[i*e.setup.Dim+j])
			}
			sum += exact.LogProb(x)
		}
		mean := sum / float64(n)
		perDim := math.Abs(f.Mean-mean) / float64(e.setup.Dim)
		f.Exact, f.ErrorDim = &mean, &perDim
	}
	return f, nil
}

// velocityError compares the learned velocity, and the score when there is
// one, with the closed forms, when both ends are Gaussian.
func (e *Evaluator) velocityError(m *SIModel) (*float64, *float64, error) {
	g1, ok1 := e.setup.Data.(*dataset.Gaussian)
	g0, ok0 := e.setup.Prior.(*dataset.Gaussian)
	if !ok1 || (!ok0 && !m.Path.OneSided() && !m.Path.Mirror()) {
		return nil, nil, nil
	}
	if m.Path.OneSided() {
		g0 = standardNormal(e.setup.Dim)
	} else if m.Path.Mirror() {
		g0 = g1
	}
	rho0, err := si.GaussianOf(g0)
	if err != nil {
		return nil, nil, err
	}
	rho1, err := si.GaussianOf(g1)
	if err != nil {
		return nil, nil, err
	}
	exact, err := si.NewGaussianVelocity(m.Path, rho0, rho1)
	if err != nil {
		return nil, nil, err
	}
	b, score, err := m.Fields()
	if err != nil {
		return nil, nil, err
	}
	var vel *float64
	// The mirror's b = g' eta vanishes at t = 1/2 with the sqrt gamma, where
	// a relative error has nothing to divide by: only its score is scored.
	if !m.Path.Mirror() {
		avg, _, err := si.VelocityError(b, exact, si.VelocityErrorTimes(), 4096, e.setup.Config.Seed)
		if err != nil {
			return nil, nil, fmt.Errorf("velocity error: %w", err)
		}
		vel = &avg
	}
	if score == nil {
		return vel, nil, nil
	}
	sErr, _, err := si.ScoreError(score, exact, si.VelocityErrorTimes(), 4096, e.setup.Config.Seed)
	if err != nil {
		return nil, nil, fmt.Errorf("score error: %w", err)
	}
	return vel, &sErr, nil
}

func meanOf(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// standardNormal is N(0, I): the latent of one-sided interpolants.
func standardNormal(d int) *dataset.Gaussian {
	g, err := dataset.New(dataset.Spec{Name: "gaussian", Dim: d})
	if err != nil {
		panic(fmt.Sprintf("standard normal of dimension %d: %v", d, err)) // d comes from a built dataset, so >= 1
	}
	return g.(*dataset.Gaussian)
}
