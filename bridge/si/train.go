package si

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sbtrain/sbtrain/nn"
)

// Learning-rate schedules.
const (
	LRConstant = "constant"
	LRCosine   = "cosine"
)

// Options configure an SI training phase: b and (optionally) eta are trained
// together, on the same batches, in one step loop.
type Options struct {
	Rho0, Rho1 Distribution // Rho0 must be nil for one-sided paths (x0 ~ N(0, I))
	Path       string       // see NewPath
	Gamma      string       // "" picks the path's default
	GammaScale float64      // c; 0 means 1
	Net        nn.Spec      // velocity network; Dim 0 means rho1's dimension
	EtaNet     *nn.Spec     // denoiser network; nil means the same spec as Net
	TrainEta   bool         // train the second network (needed by the SDE sampler); requires gamma > 0
	// Field is what the second network learns: FieldEta (the denoiser
	// eta = E[z | x_t], the default) or FieldScore (the score s itself, by
	// its quadratic objective mean |s|^2/2 + z.s/g).
	Field string
	// Velocity is what the first network learns: VelocityB (b, the default)
	// or VelocityV (v = E[a' x0 + b' x1 | x_t], with b = v - g g' s formed
	// from the score network: needs TrainEta and FieldScore).
	Velocity string

	Batch      int     // global batch size B (even when Antithetic)
	LR         float64 // Adam learning rate (the peak, with a schedule)
	LRSchedule string  // "constant" (or "") or "cosine": lr(s) = LR (1+cos(pi s/Steps))/2
	Steps      int     // optimizer steps
	EMADecay   float64 // in [0, 1); the EMA weights are what Train returns
	ClipNorm   float64 // per-network gradient-norm clip; 0 disables
	Seed       uint64
	Phase      uint64 // keys the batch streams; the coordinator's phase number

	Antithetic    bool    // +z/-z pairs in each batch (no effect when g = 0)
	TMin          float64 // training times are U[TMin, 1-TMin]; 0 means DefaultTMin
	ProgressEvery int     // steps between progress callbacks; 0 means 100
}

// What the networks learn (Options.Field, Options.Velocity).
const (
	FieldEta   = "eta"
	FieldScore = "score"
	VelocityB  = "b"
	VelocityV  = "v"
)

// DefaultOptions returns settings that train the 2D toys well (the
// checkerboard acceptance run uses them; see acceptance_test.go); the caller
// sets the distributions and may override the rest.
func DefaultOptions() Options {
	return Options{
		Path:       PathLinear,
		Gamma:      GammaSqrt,
		GammaScale: 1,
		Net:        nn.Spec{Arch: nn.ArchMLP, Hidden: []int{128, 128, 128}, Activation: nn.SiLU},
		Batch:      512,
		LR:         3e-3,
		LRSchedule: LRCosine,
		Steps:      20000,
		EMADecay:   0.999,
		ClipNorm:   1,
		Antithetic: true,
	}
}

// Progress is reported to Train's callback.
type Progress struct {
	Step, Total   int
	Loss          Losses
	SamplesPerSec float64
	GradNorm      GradNorms
}

// Losses are the paper's objectives on a batch:
// Velocity = mean |bhat|^2/2 - y.bhat with y = a' x0 + b' x1 + g' z
// (y = a' x0 + b' x1 for v);
// Denoiser = mean |etahat|^2/2 - z.etahat (0 when eta is not trained), or
// for the score mean |shat|^2/2 + z.shat/g.
// Their minima are -E|b|^2/2 and -E|eta|^2/2, so they are negative.
type Losses struct {
	Velocity, Denoiser float64
}

// GradNorms are the gradient norms before clipping.
type GradNorms struct {
	Velocity, Denoiser float64
}

// Trainer is the step-level API that Train and the distributed trainer both
// drive. One step s is:
//
//  1. every worker calls LocalGradient(s, from, to, grad) for its slice
//     [from, to) of the global batch [0, B). LocalGradient already weights its
//     output by (to-from)/B, so the global gradient is the plain SUM over
//     workers of their grad vectors (a sum all-reduce); the same holds for
//     the returned Losses.
//  2. every replica calls Apply(sum) with the identical summed gradient.
//
// The batch for (seed, phase, s, i) does not depend on who builds it, so any
// split of [0, B) gives the same step up to float summation order.
type Trainer struct {
	opts     Options
	src      BatchSource
	velocity *nn.Net
	denoiser *nn.Net // nil unless TrainEta
	adamB    *nn.Adam
	adamEta  *nn.Adam
	emaB     *nn.EMA
	emaEta   *nn.EMA
	step     int
	batch    Batch
}

// NewTrainer validates opts and initialises the networks from opts.Seed.
func NewTrainer(opts Options) (*Trainer, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	p, err := NewPath(opts.Path, opts.Gamma, opts.GammaScale)
	if err != nil {
		return nil, fmt.Errorf("si options: %w", err)
	}
	tr := &Trainer{opts: opts}
	tr.src = BatchSource{Path: p, Rho0: opts.Rho0, Rho1: opts.Rho1, Seed: opts.Seed, Phase: opts.Phase, Antithetic: opts.Antithetic, TMin: opts.TMin}
	if p.OneSided() && opts.Rho0 != nil {
		return nil, fmt.Errorf("si options: rho0 %q with one-sided path %q: a one-sided path draws x0 from N(0, I) itself, leave rho0 unset", opts.Rho0.Name(), p.Name())
	}
	if p.Mirror() && opts.Rho0 != nil {
		return nil, fmt.Errorf("si options: rho0 %q with the mirror path: x0 = x1 is drawn from rho1, leave rho0 unset", opts.Rho0.Name())
	}
	if err := tr.src.Validate(); err != nil {
		return nil, fmt.Errorf("si options: %w", err)
	}
	if opts.Antithetic && p.HasNoise() && opts.Batch%2 != 0 {
		return nil, fmt.Errorf("si options: batch %d with antithetic pairs, want an even batch", opts.Batch)
	}
	if opts.TrainEta && !p.HasNoise() {
		return nil, fmt.Errorf("si options: train eta needs gamma > 0, path %s has no noise", p)
	}
	if opts.Velocity == VelocityV && !(opts.TrainEta && opts.Field == FieldScore) {
		return nil, fmt.Errorf("si options: velocity %q forms b = v - g g' s, it needs the score network (train eta with field %q)", VelocityV, FieldScore)
	}
	if tr.velocity, err = nn.New(opts.Net, opts.Seed); err != nil {
		return nil, fmt.Errorf("si velocity network: %w", err)
	}
	tr.adamB = nn.NewAdam(len(tr.velocity.Params()), opts.LR)
	tr.emaB = nn.NewEMA(tr.velocity.Params(), opts.EMADecay)
	if opts.TrainEta {
		// A different init seed so the two networks do not start equal.
		if tr.denoiser, err = nn.New(*opts.EtaNet, opts.Seed^0x5eed_e7a); err != nil {
			return nil, fmt.Errorf("si denoiser network: %w", err)
		}
		tr.adamEta = nn.NewAdam(len(tr.denoiser.Params()), opts.LR)
		tr.emaEta = nn.NewEMA(tr.denoiser.Params(), opts.EMADecay)
	}
	return tr, nil
}

func (o *Options) fill() error {
	if o.Rho1 == nil {
		return fmt.Errorf("si options: rho1 is not set")
	}
	d := o.Rho1.Dim()
	if o.Net.Dim == 0 {
		o.Net.Dim = d
	}
	if o.Net.Dim != d {
		return fmt.Errorf("si options: network dim %d, rho1 %q has dimension %d", o.Net.Dim, o.Rho1.Name(), d)
	}
	if o.EtaNet == nil {
		spec := o.Net
		o.EtaNet = &spec
	} else {
		spec := *o.EtaNet
		if spec.Dim == 0 {
			spec.Dim = d
		}
		if spec.Dim != d {
			return fmt.Errorf("si options: denoiser network dim %d, rho1 %q has dimension %d", spec.Dim, o.Rho1.Name(), d)
		}
		o.EtaNet = &spec
	}
	switch o.Field {
	case "":
		o.Field = FieldEta
	case FieldEta, FieldScore:
	default:
		return fmt.Errorf("si options: field %q: want %q or %q", o.Field, FieldEta, FieldScore)
	}
	switch o.Velocity {
	case "":
		o.Velocity = VelocityB
	case VelocityB, VelocityV:
	default:
		return fmt.Errorf("si options: velocity %q: want %q or %q", o.Velocity, VelocityB, VelocityV)
	}
	if o.Batch <= 0 {
		return fmt.Errorf("si options: batch %d, want > 0", o.Batch)
	}
	if !(o.LR > 0) || math.IsInf(o.LR, 0) {
		return fmt.Errorf("si options: lr %v, want a finite positive number", o.LR)
	}
	switch o.LRSchedule {
	case "", LRConstant, LRCosine:
	default:
		return fmt.Errorf("si options: lr schedule %q: want %q or %q", o.LRSchedule, LRConstant, LRCosine)
	}
	if o.Steps < 0 {
		return fmt.Errorf("si options: steps %d, want >= 0", o.Steps)
	}
	if !(o.EMADecay >= 0 && o.EMADecay < 1) {
		return fmt.Errorf("si options: ema decay %v, want in [0, 1)", o.EMADecay)
	}
	if o.ClipNorm < 0 || math.IsNaN(o.ClipNorm) {
		return fmt.Errorf("si options: clip norm %v, want >= 0 (0 disables)", o.ClipNorm)
	}
	if o.TMin == 0 {
		o.TMin = DefaultTMin
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 100
	}
	if o.ProgressEvery < 0 {
		return fmt.Errorf("si options: progress every %d, want > 0", o.ProgressEvery)
	}
	return nil
}

// Path is the validated interpolant.
func (tr *Trainer) Path() Path { return tr.src.Path }

// Source is the batch construction, for workers that want the raw batches.
func (tr *Trainer) Source() *BatchSource { return &tr.src }

// Step is the number of steps applied so far.
func (tr *Trainer) Step() int { return tr.step }

// SetStep restores the step counter after the caller restored the
// parameters and optimizer state from a checkpoint.
func (tr *Trainer) SetStep(s int) { tr.step = s }

// GradLen is the length of the flat gradient vector: the velocity network's
// parameters, then the denoiser's (if trained).
func (tr *Trainer) GradLen() int {
	n := len(tr.velocity.Params())
	if tr.denoiser != nil {
		n += len(tr.denoiser.Params())
	}
	return n
}

// State exposes the live objects for checkpointing; restoring them in place
// (then SetStep) resumes exactly.
type State struct {
	Velocity, Denoiser         *nn.Net // Denoiser nil unless TrainEta
	AdamVelocity, AdamDenoiser *nn.Adam
	EMAVelocity, EMADenoiser   *nn.EMA
}

// State returns pointers to the live networks and optimizer state.
func (tr *Trainer) State() State {
	return State{tr.velocity, tr.denoiser, tr.adamB, tr.adamEta, tr.emaB, tr.emaEta}
}

// LocalGradient computes this worker's share of step's gradient: for global
// samples [from, to) of [0, B) it writes (to-from)/B times the gradient of
// the mean SI loss over those samples into grad (len GradLen), and returns
// the losses with the same weight. Summing grad and Losses over workers that
// cover [0, B) gives the full-batch gradient and losses.
func (tr *Trainer) LocalGradient(step, from, to int, grad []float32) (Losses, error) {
	if from < 0 || to > tr.opts.Batch || from > to {
		return Losses{}, fmt.Errorf("si local gradient: range [%d, %d) outside the batch [0, %d)", from, to, tr.opts.Batch)
	}
	if len(grad) != tr.GradLen() {
		return Losses{}, fmt.Errorf("si local gradient: gradient buffer has %d values, want %d", len(grad), tr.GradLen())
	}
	if step < 0 {
		return Losses{}, fmt.Errorf("si local gradient: step %d, want >= 0", step)
	}
	clear(grad)
	if from == to {
		return Losses{}, nil
	}
	if err := tr.src.Fill(uint64(step), from, to, &tr.batch); err != nil {
		return Losses{}, err
	}
	w := float64(to-from) / float64(tr.opts.Batch)
	nb := len(tr.velocity.Params())
	var out Losses
	var err error
	vt := tr.batch.Velocity
	if tr.opts.Velocity == VelocityV {
		vt = tr.batch.V
	}
	out.Velocity, err = siLossGrad(tr.velocity, tr.batch.T, tr.batch.X, vt, w, grad[:nb])
	if err != nil {
		return Losses{}, fmt.Errorf("si velocity loss at step %d: %w", step, err)
	}
	if tr.denoiser != nil {
		nt := tr.batch.Noise
		if tr.opts.Field == FieldScore {
			nt = tr.batch.Score
		}
		out.Denoiser, err = siLossGrad(tr.denoiser, tr.batch.T, tr.batch.X, nt, w, grad[nb:])
		if err != nil {
			return Losses{}, fmt.Errorf("si denoiser loss at step %d: %w", step, err)
		}
	}
	return out, nil
}

// siLossGrad turns the network's mean-squared loss into the SI objective:
// mean(|f|^2/2 - y.f) = mean|f - y|^2/2 - mean|y|^2/2, whose gradient is half
// the squared loss's. It writes w times that gradient into dst and returns w
// times the SI loss.
func siLossGrad(net *nn.Net, t, x, target []float32, w float64, dst []float32) (float64, error) {
	half, err := net.LossGradTo(t, x, target, w/2, dst)
	if err != nil {
		return 0, err
	}
	n := len(t)
	var y2 float64
	for _, v := range target {
		y2 += float64(v) * float64(v)
	}
	return half - w*y2/float64(2*n), nil
}

// Apply performs the optimizer step with the summed gradient (every replica
// calls it with identical input): per-network norm clipping (grad is clipped
// in place), Adam, EMA. It advances the step counter.
func (tr *Trainer) Apply(grad []float32) (GradNorms, error) {
	if len(grad) != tr.GradLen() {
		return GradNorms{}, fmt.Errorf("si apply: gradient has %d values, want %d", len(grad), tr.GradLen())
	}
	nb := len(tr.velocity.Params())
	var norms GradNorms
	norms.Velocity = nn.ClipGradNorm(grad[:nb], tr.opts.ClipNorm)
	if math.IsNaN(norms.Velocity) || math.IsInf(norms.Velocity, 0) {
		return norms, fmt.Errorf("si apply at step %d: velocity gradient norm is %v", tr.step, norms.Velocity)
	}
	if tr.denoiser != nil {
		norms.Denoiser = nn.ClipGradNorm(grad[nb:], tr.opts.ClipNorm)
		if math.IsNaN(norms.Denoiser) || math.IsInf(norms.Denoiser, 0) {
			return norms, fmt.Errorf("si apply at step %d: denoiser gradient norm is %v", tr.step, norms.Denoiser)
		}
	}
	lr := tr.LearningRate(tr.step)
	tr.adamB.LR = lr
	tr.adamB.Step(tr.velocity.Params(), grad[:nb])
	tr.emaB.Update(tr.velocity.Params())
	if tr.denoiser != nil {
		tr.adamEta.LR = lr
		tr.adamEta.Step(tr.denoiser.Params(), grad[nb:])
		tr.emaEta.Update(tr.denoiser.Params())
	}
	tr.step++
	return norms, nil
}

// LearningRate is the rate Apply uses at step s: a pure function of the
// step, so a resumed run needs no schedule state.
func (tr *Trainer) LearningRate(s int) float64 {
	if tr.opts.LRSchedule != LRCosine {
		return tr.opts.LR
	}
	return nn.CosineRate(tr.opts.LR, int64(s), int64(tr.opts.Steps))
}

// EMANets returns copies of the networks carrying the EMA weights (the
// denoiser is nil unless trained).
func (tr *Trainer) EMANets() (velocity, denoiser *nn.Net, err error) {
	if velocity, err = tr.velocity.Clone(); err != nil {
		return nil, nil, fmt.Errorf("si ema velocity: %w", err)
	}
	copy(velocity.Params(), tr.emaB.Shadow)
	if tr.denoiser != nil {
		if denoiser, err = tr.denoiser.Clone(); err != nil {
			return nil, nil, fmt.Errorf("si ema denoiser: %w", err)
		}
		copy(denoiser.Params(), tr.emaEta.Shadow)
	}
	return velocity, denoiser, nil
}

// Result is what Train returns.
type Result struct {
	Path     Path
	Velocity *NetField // EMA weights; v when Options.Velocity is v
	Denoiser *NetField // EMA weights; nil unless TrainEta; the score when Options.Field is score
	Steps    int
	Loss     Losses // of the last step
	Elapsed  time.Duration
}

// Train runs the whole phase in one process on top of the Trainer API. It
// stops between steps when ctx is cancelled.
func Train(ctx context.Context, opts Options, progress func(Progress)) (*Result, error) {
	return TrainSplit(ctx, opts, 1, progress)
}

// TrainSplit is Train with each step's global batch cut into workers
// near-equal slices whose LocalGradients are summed, in slice order, as the
// distributed trainer's all-reduce sums them: the model it returns is
// Train's up to float summation order, whatever the worker count.
func TrainSplit(ctx context.Context, opts Options, workers int, progress func(Progress)) (*Result, error) {
	if workers < 1 {
		return nil, fmt.Errorf("si train: %d workers, want >= 1", workers)
	}
	tr, err := NewTrainer(opts)
	if err != nil {
		return nil, err
	}
	opts = tr.opts
	if workers > opts.Batch {
		return nil, fmt.Errorf("si train: %d workers for a batch of %d, want at most one per sample", workers, opts.Batch)
	}
	grad := make([]float32, tr.GradLen())
	part := make([]float32, tr.GradLen())
	start := time.Now()
	lastReport, lastStep := start, 0
	var loss Losses
	for s := 0; s < opts.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("si train stopped at step %d: %w", s, err)
		}
		if workers == 1 {
			if loss, err = tr.LocalGradient(s, 0, opts.Batch, grad); err != nil {
				return nil, err
			}
		} else {
			clear(grad)
			loss = Losses{}
			for w := 0; w < workers; w++ {
				l, err := tr.LocalGradient(s, w*opts.Batch/workers, (w+1)*opts.Batch/workers, part)
				if err != nil {
					return nil, err
				}
				for i, g := range part {
					grad[i] += g
				}
				loss.Velocity += l.Velocity
				loss.Denoiser += l.Denoiser
			}
		}
		norms, err := tr.Apply(grad)
		if err != nil {
			return nil, err
		}
		if progress != nil && ((s+1)%opts.ProgressEvery == 0 || s+1 == opts.Steps) {
			now := time.Now()
			rate := float64((s+1-lastStep)*opts.Batch) / now.Sub(lastReport).Seconds()
			progress(Progress{Step: s + 1, Total: opts.Steps, Loss: loss, SamplesPerSec: rate, GradNorm: norms})
			lastReport, lastStep = now, s+1
		}
	}
	vel, den, err := tr.EMANets()
	if err != nil {
		return nil, err
	}
	res := &Result{Path: tr.Path(), Steps: opts.Steps, Loss: loss, Elapsed: time.Since(start)}
	res.Velocity = NewNetField(vel)
	if den != nil {
		res.Denoiser = NewNetField(den)
	}
	return res, nil
}

// NetField adapts an nn.Net to Field and JacobianField.
type NetField struct {
	Net *nn.Net
}

// NewNetField wraps net.
func NewNetField(net *nn.Net) *NetField { return &NetField{Net: net} }

func (f *NetField) Dim() int { return f.Net.Spec().Dim }

func (f *NetField) Eval(t, x, out []float32) error { return f.Net.Forward(t, x, out) }

func (f *NetField) VJP(t, x, v, out, vjp []float32) error { return f.Net.VJP(t, x, v, out, vjp) }

// MaxParamDiff is the largest |difference| between the two results'
// parameters (velocity, then denoiser), or -1 when their shapes differ.
func MaxParamDiff(a, b *Result) float64 {
	pairs := [][2]*NetField{{a.Velocity, b.Velocity}, {a.Denoiser, b.Denoiser}}
	var worst float64
	for _, p := range pairs {
		if (p[0] == nil) != (p[1] == nil) {
			return -1
		}
		if p[0] == nil {
			continue
		}
		x, y := p[0].Net.Params(), p[1].Net.Params()
		if len(x) != len(y) {
			return -1
		}
		for i := range x {
			worst = math.Max(worst, math.Abs(float64(x[i])-float64(y[i])))
		}
	}
	return worst
}
