package job

import (
	"context"
	"fmt"
	"sync"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// ShardKey names one virtual cache shard of one DSB phase.
type ShardKey struct {
	Phase int
	Gen   uint64
	Index int
}

// ShardSource hands out cache shards. A trainer keeps the ones it uses in
// memory, loads the ones another replica stored, and otherwise calls build
// (simulation with the frozen network) and stores the result. Calls for the
// shards of one step come from several goroutines but never overlap, except
// that while one call's build runs another call may proceed: a source must
// not hold state across its own build call that another call changes.
type ShardSource interface {
	Shard(ctx context.Context, key ShardKey, build func() (*dsb.Shard, error)) (*dsb.Shard, error)
}

// lossSlots trail the gradient in the all-reduce buffer so one collective
// sums both: DSB uses the first, SI the velocity and denoiser losses.
const lossSlots = 2

// State is one replica's training state at a position.
type State struct {
	job *Job
	pos Position
	// losses[p] is the global loss of every applied step of phase p.
	losses [][]float32

	// DSB: the last finished network of each direction (live weights and
	// EMA shadow), and the phase in progress (nil until its first step is
	// prepared).
	fin   dsb.Result
	phase *dsb.Phase
	// forks are the frozen mean of forksFor (the phase they were made for)
	// and copies of it, one per goroutine that simulates cache shards.
	forks    []dsb.Mean
	forksFor *dsb.Phase

	// SI: the whole phase.
	si *si.Trainer

	// buf is the all-reduce buffer Gradient returns; part, SI's gradient of
	// one row range. Both are reused from step to step.
	buf, part []float32
	// sum is the fixed-point reduction Sum uses, kept for its buffers.
	sum *fixedsum.Sum
}

// Init is the state at the start of the run: networks from the run seed.
func (j *Job) Init() (*State, error) {
	s := &State{job: j, losses: make([][]float32, j.phases)}
	s.fin = dsb.Result{Chain: j.chain, Spec: j.Setup.Net}
	if j.method == "si" {
		tr, err := si.NewTrainer(j.siOpts)
		if err != nil {
			return nil, err
		}
		s.si = tr
	}
	return s, nil
}

// Position is how far this state is.
func (s *State) Position() Position { return s.pos }

// Done says whether the run is finished.
func (s *State) Done() bool { return s.pos == s.job.End() }

// Losses returns the loss history of phase p (shared; do not modify).
func (s *State) Losses(p int) []float32 { return s.losses[p] }

// prepare makes sure the objects of the current phase exist.
func (s *State) prepare() error {
	if s.Done() {
		return fmt.Errorf("run is finished at %v: no step to take", s.pos)
	}
	if s.job.method == "si" || s.phase != nil {
		return nil
	}
	net, ema, err := s.startNet(s.pos.Phase)
	if err != nil {
		return err
	}
	return s.openPhase(net, ema)
}

// startNet is the network (and EMA shadow) phase p starts from: the
// previous network of its direction with warm start, otherwise a fresh
// initialisation keyed by the phase, exactly as the single-process IPF.
func (s *State) startNet(p int) (*nn.Net, []float32, error) {
	id := dsbPhase(p)
	prev, prevEMA := s.fin.B, s.fin.BEMA
	if id.Dir == dsb.Forward {
		prev, prevEMA = s.fin.F, s.fin.FEMA
	}
	if prev != nil && s.job.dsbOpts.WarmStart {
		net, err := prev.Clone()
		if err != nil {
			return nil, nil, fmt.Errorf("%v: warm start: %w", id, err)
		}
		var ema []float32
		if prevEMA != nil {
			ema = append([]float32(nil), prevEMA...)
		}
		return net, ema, nil
	}
	seed := rng.New(s.job.dsbOpts.Seed, rng.PurposeInit, id.Key())
	net, err := nn.New(s.job.dsbOpts.Net, seed.Uint64())
	if err != nil {
		return nil, nil, fmt.Errorf("%v: new net: %w", id, err)
	}
	return net, nil, nil
}

// openPhase builds the dsb.Phase of the current position around net.
func (s *State) openPhase(net *nn.Net, ema []float32) error {
	id := dsbPhase(s.pos.Phase)
	var frozen dsb.Mean
	var err error
	switch {
	case id.Dir == dsb.Forward:
		frozen, err = s.fin.Backward()
	case id.Iteration == 1:
		frozen = s.job.chain.ReferenceMean()
	default:
		frozen, err = s.fin.Forward()
	}
	if err != nil {
		return fmt.Errorf("%v: frozen mean: %w", id, err)
	}
	p, err := dsb.NewPhase(s.job.chain, id, frozen, net, s.job.dsbOpts.Hyper, ema)
	if err != nil {
		return err
	}
	s.phase = p
	return nil
}

// GradLen is the length of the all-reduce buffer of the current phase: the
// gradient followed by the loss slots.
func (s *State) GradLen() (int, error) {
	if err := s.prepare(); err != nil {
		return 0, err
	}
	if s.si != nil {
		return s.si.GradLen() + lossSlots, nil
	}
	return len(s.phase.Net.Params()) + lossSlots, nil
}

// Gradient computes this replica's share of the next step from the
// virtual shards it owns: the weighted local gradient followed by the
// weighted losses, in a buffer the caller all-reduces (sum) and passes to
// Apply. Owning no shard gives zeros. The buffer is reused by the next call.
func (s *State) Gradient(ctx context.Context, owned []int, src ShardSource) ([]float32, error) {
	n, err := s.GradLen()
	if err != nil {
		return nil, err
	}
	for _, i := range owned {
		if i < 0 || i >= s.job.shards {
			return nil, fmt.Errorf("shard %d: outside 0..%d", i, s.job.shards-1)
		}
	}
	if len(s.buf) != n {
		s.buf = make([]float32, n)
	}
	clear(s.buf)
	step := int(s.pos.Step)
	if s.si != nil {
		return s.buf, s.siGradient(step, owned)
	}
	shards, err := s.ownedShards(ctx, step, owned, src)
	if err != nil {
		return nil, err
	}
	loss, err := s.phase.LocalGrad(step, shards)
	if err != nil {
		return nil, err
	}
	g := n - lossSlots
	copy(s.buf[:g], s.phase.Net.Grads())
	s.buf[g] = float32(loss)
	return s.buf, nil
}

// ownedShards gets the owned shards of step's generation from src. Shards
// that src has to build are simulated on a pool of goroutines (one per core
// unless the options' Workers say otherwise), each with its own fork of the
// frozen mean, kept for the phase. src itself is never entered by two
// goroutines at once: a lock is held around each call and released only
// while build runs, so any sequential ShardSource works unchanged.
func (s *State) ownedShards(ctx context.Context, step int, owned []int, src ShardSource) ([]*dsb.Shard, error) {
	gen := s.job.chain.GenForStep(step)
	if s.forksFor != s.phase {
		s.forks = dsb.ForkMeans(s.phase.Frozen, par.Size(s.job.dsbOpts.Workers, s.job.shards))
		s.forksFor = s.phase
	}
	shards := make([]*dsb.Shard, len(owned))
	var mu sync.Mutex
	err := par.Do(ctx, min(len(s.forks), len(owned)), len(owned), func(ctx context.Context, w, k int) error {
		i := owned[k]
		key := ShardKey{Phase: s.pos.Phase, Gen: gen, Index: i}
		mu.Lock()
		defer mu.Unlock()
		sh, err := src.Shard(ctx, key, func() (*dsb.Shard, error) {
			mu.Unlock()
			defer mu.Lock()
			return s.job.chain.SimulateShard(s.forks[w], s.phase.ID, gen, i)
		})
		if err != nil {
			return fmt.Errorf("cache shard %d of generation %d: %w", i, gen, err)
		}
		shards[k] = sh
		return nil
	})
	if err != nil {
		return nil, err
	}
	return shards, nil
}

// siGradient sums the local gradients of the owned row ranges. Adjacent
// shards are merged so one replica makes one call per contiguous block.
func (s *State) siGradient(step int, owned []int) error {
	g := s.si.GradLen()
	if len(s.part) != g {
		s.part = make([]float32, g)
	}
	part := s.part
	for k := 0; k < len(owned); {
		from, to := s.job.ShardRange(owned[k])
		k++
		for k < len(owned) && owned[k] == owned[k-1]+1 {
			_, to = s.job.ShardRange(owned[k])
			k++
		}
		l, err := s.si.LocalGradient(step, from, to, part)
		if err != nil {
			return err
		}
		for i, v := range part {
			s.buf[i] += v
		}
		s.buf[g] += float32(l.Velocity)
		s.buf[g+1] += float32(l.Denoiser)
	}
	return nil
}

// Apply takes the step with the summed buffer (identical on every
// replica): clip, Adam, EMA, record the loss, advance the position, and
// close the phase when it was its last step. It returns the step's loss.
func (s *State) Apply(sum []float32) (float64, error) {
	n, err := s.GradLen()
	if err != nil {
		return 0, err
	}
	if len(sum) != n {
		return 0, fmt.Errorf("apply at %v: buffer has %d values, want %d", s.pos, len(sum), n)
	}
	g := n - lossSlots
	loss := float64(sum[g]) + float64(sum[g+1])
	if s.si != nil {
		if _, err := s.si.Apply(sum[:g]); err != nil {
			return 0, err
		}
	} else if _, err := s.phase.Apply(sum[:g]); err != nil {
		return 0, fmt.Errorf("%v step %d: %w", s.phase.ID, s.pos.Step, err)
	}
	s.losses[s.pos.Phase] = append(s.losses[s.pos.Phase], float32(loss))
	s.pos.Step++
	if s.pos.Step == s.job.steps {
		s.closePhase()
	}
	return loss, nil
}

// closePhase freezes the finished network as the latest of its direction.
func (s *State) closePhase() {
	if s.si == nil {
		var shadow []float32
		if s.phase.EMA != nil {
			shadow = s.phase.EMA.Shadow
		}
		net, _ := s.phase.Net.(*nn.Net)
		if s.phase.ID.Dir == dsb.Backward {
			s.fin.B, s.fin.BEMA = net, shadow
		} else {
			s.fin.F, s.fin.FEMA = net, shadow
			s.fin.Iterations = s.phase.ID.Iteration
		}
		s.phase = nil
	}
	s.pos = Position{Phase: s.pos.Phase + 1}
}

// SamplingModel is the model the networks finished so far make, for a
// look during training: the finished run's Model, or after a DSB phase the
// newest finished backward network (with the forward one, if any). It
// fails before the first phase has finished.
func (s *State) SamplingModel() (experiment.Model, error) {
	if s.Done() {
		return s.Model()
	}
	if s.si != nil || s.fin.B == nil {
		return nil, fmt.Errorf("model: no network has finished at %v", s.pos)
	}
	fin := s.fin // ModelFromDSB copies the networks it keeps
	return s.job.Setup.ModelFromDSB(&fin)
}

// Model is the trained model of a finished run, with its sampling
// weights, as `sbtrain train` would have produced it.
func (s *State) Model() (experiment.Model, error) {
	if !s.Done() {
		return nil, fmt.Errorf("model: the run is at %v, not finished", s.pos)
	}
	if s.si != nil {
		vel, den, err := s.si.EMANets()
		if err != nil {
			return nil, err
		}
		r := &si.Result{Path: s.si.Path(), Velocity: si.NewNetField(vel), Steps: int(s.job.steps)}
		if den != nil {
			r.Denoiser = si.NewNetField(den)
		}
		return s.job.Setup.ModelFromSI(r)
	}
	return s.job.Setup.ModelFromDSB(&s.fin)
}
