package job

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/method"
)

// ShardKey names one virtual cache shard of one phase.
type ShardKey = method.ShardKey

// ShardSource hands out cache shards; see method.ShardSource.
type ShardSource = method.ShardSource

// lossSlots trail the gradient in the all-reduce buffer so one collective
// sums both.
const lossSlots = method.LossSlots

// State is one replica's training state at a position: the method's state
// and the loss history.
type State struct {
	job *Job
	pos Position
	// losses[p] is the global loss of every applied step of phase p.
	losses [][]float32

	st method.State
	// open says the phase at pos is open in st.
	open bool
	// builders simulate the open phase's cache shards, one per goroutine;
	// made once per phase.
	builders    []method.Builder
	buildersFor int

	// buf is the all-reduce buffer Gradient returns, reused.
	buf []float32
}

// Init is the state at the start of the run: networks from the run seed.
func (j *Job) Init() (*State, error) {
	st, err := j.method.Start()
	if err != nil {
		return nil, err
	}
	return &State{job: j, losses: make([][]float32, len(j.phases)), st: st, buildersFor: -1}, nil
}

// Position is how far this state is.
func (s *State) Position() Position { return s.pos }

// Done says whether the run is finished.
func (s *State) Done() bool { return s.pos == s.job.End() }

// Losses returns the loss history of phase p (shared; do not modify).
func (s *State) Losses(p int) []float32 { return s.losses[p] }

// AllLosses returns the loss history of every phase (shared).
func (s *State) AllLosses() [][]float32 { return s.losses }

// Method is the method's state (for tests and inspection).
func (s *State) Method() method.State { return s.st }

// prepare opens the phase at the current position if it is not open.
func (s *State) prepare() error {
	if s.Done() {
		return fmt.Errorf("run is finished at %v: no step to take", s.pos)
	}
	if s.open {
		return nil
	}
	if err := s.st.Open(s.pos.Phase); err != nil {
		return err
	}
	s.open = true
	return nil
}

// GradLen is the length of the all-reduce buffer of the current phase: the
// gradient followed by the loss slots.
func (s *State) GradLen() (int, error) {
	if err := s.prepare(); err != nil {
		return 0, err
	}
	return s.st.GradLen() + lossSlots, nil
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
		if i < 0 || i >= s.job.Shards() {
			return nil, fmt.Errorf("shard %d: outside 0..%d", i, s.job.Shards()-1)
		}
	}
	if len(s.buf) != n {
		s.buf = make([]float32, n)
	}
	clear(s.buf)
	var shards []method.Shard
	if c := s.st.Cache(); c != nil && len(owned) > 0 {
		if s.buildersFor != s.pos.Phase {
			s.builders = c.Builders(par.Size(s.job.Workers, s.job.Shards()))
			s.buildersFor = s.pos.Phase
		}
		if shards, err = method.Gather(ctx, s.builders, s.pos.Phase, c.Gen(s.pos.Step), owned, src); err != nil {
			return nil, err
		}
	}
	if err := s.st.Gradient(s.pos.Step, owned, shards, s.buf); err != nil {
		return nil, err
	}
	return s.buf, nil
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
	if err := s.st.Apply(s.pos.Step, sum[:g]); err != nil {
		return 0, err
	}
	s.losses[s.pos.Phase] = append(s.losses[s.pos.Phase], float32(loss))
	s.pos.Step++
	if s.pos.Step == s.job.StepsPerPhase() {
		if err := s.st.Close(); err != nil {
			return 0, err
		}
		s.pos, s.open, s.builders = Position{Phase: s.pos.Phase + 1}, false, nil
	}
	return loss, nil
}

// SamplingModel is the model the networks finished so far make, for a
// look during training: the finished run's Model, or after a DSB phase the
// newest finished backward network (with the forward one, if any). It
// fails before the first phase has finished.
func (s *State) SamplingModel() (experiment.Model, error) {
	m, err := s.st.Model(s.pos.Phase)
	if err != nil {
		return nil, fmt.Errorf("at %v: %w", s.pos, err)
	}
	return m, nil
}

// Model is the trained model of a finished run, with its sampling
// weights, as `sbtrain train` would have produced it.
func (s *State) Model() (experiment.Model, error) {
	if !s.Done() {
		return nil, fmt.Errorf("model: the run is at %v, not finished", s.pos)
	}
	return s.st.Model(s.pos.Phase)
}
