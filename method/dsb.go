package method

import (
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// DSB is the diffusion Schrödinger bridge by IPF (bridge/dsb): iteration n
// is phase 2(n-1), backward, then phase 2(n-1)+1, forward; each phase
// trains on a cache of trajectories simulated with the other direction's
// frozen network.
type DSB struct {
	opts  dsb.Options
	chain *dsb.Chain
}

// NewDSB validates the options.
func NewDSB(o dsb.Options) (*DSB, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("dsb: %w", err)
	}
	chain, err := o.Chain()
	if err != nil {
		return nil, fmt.Errorf("dsb: %w", err)
	}
	o.AfterIteration = nil // the drivers evaluate; see Phase.Evaluate
	return &DSB{opts: o, chain: chain}, nil
}

// Options are the IPF options the method runs with.
func (m *DSB) Options() dsb.Options { return m.opts }

// PhaseID is the IPF phase with index p.
func PhaseID(p int) dsb.PhaseID {
	dir := dsb.Backward
	if p%2 == 1 {
		dir = dsb.Forward
	}
	return dsb.PhaseID{Iteration: p/2 + 1, Dir: dir}
}

func (m *DSB) Name() string { return "dsb" }

func (m *DSB) Phases() []Phase {
	out := make([]Phase, 2*m.opts.Iterations)
	for p := range out {
		id := PhaseID(p)
		dir := storage.DirectionBackward
		if id.Dir == dsb.Forward {
			dir = storage.DirectionForward
		}
		out[p] = Phase{Name: id.String(), Direction: dir, Iteration: id.Iteration, Evaluate: id.Dir == dsb.Forward}
	}
	return out
}

func (m *DSB) StepsPerPhase() int64 { return int64(m.opts.StepsPerPhase) }
func (m *DSB) Batch() int           { return m.opts.Batch }
func (m *DSB) Shards() int          { return m.chain.Shards }

func (m *DSB) Start() (State, error) {
	return &dsbState{m: m, fin: dsb.Result{Chain: m.chain, Spec: m.opts.Net}}, nil
}

func (m *DSB) EncodeShard(sh Shard) ([]storage.Tensor, map[string]string, error) {
	s, ok := sh.(*dsb.Shard)
	if !ok || s == nil {
		return nil, nil, fmt.Errorf("dsb: encode shard: a %T, want *dsb.Shard", sh)
	}
	rows := s.Trajectories * s.Steps
	ts := []storage.Tensor{
		storage.F32Tensor("inputs", []int{rows, s.Dim}, s.Inputs),
		storage.F32Tensor("targets", []int{rows, s.Dim}, s.Targets),
	}
	meta := map[string]string{
		"trajectories": strconv.Itoa(s.Trajectories),
		"steps":        strconv.Itoa(s.Steps),
		"dim":          strconv.Itoa(s.Dim),
	}
	return ts, meta, nil
}

func (m *DSB) DecodeShard(key ShardKey, ts []storage.Tensor, meta map[string]string) (Shard, error) {
	atoi := func(k string) (int, error) {
		n, err := strconv.Atoi(meta[k])
		if err != nil {
			return 0, fmt.Errorf("shard %+v: metadata %s = %q, want an integer", key, k, meta[k])
		}
		return n, nil
	}
	s := &dsb.Shard{Phase: PhaseID(key.Phase), Gen: key.Gen, Index: key.Index}
	var err error
	if s.Trajectories, err = atoi("trajectories"); err != nil {
		return nil, err
	}
	if s.Steps, err = atoi("steps"); err != nil {
		return nil, err
	}
	if s.Dim, err = atoi("dim"); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *[]float32
	}{{"inputs", &s.Inputs}, {"targets", &s.Targets}} {
		t, err := storage.TensorByName(ts, f.name)
		if err != nil {
			return nil, fmt.Errorf("shard %+v: %w", key, err)
		}
		if *f.dst, err = t.Float32s(); err != nil {
			return nil, fmt.Errorf("shard %+v: tensor %s: %w", key, f.name, err)
		}
	}
	if err := m.chain.Check(s, s.Phase, key.Gen, key.Index); err != nil {
		return nil, fmt.Errorf("shard %+v: %w", key, err)
	}
	return s, nil
}

// dsbState holds the last finished network of each direction (live
// weights and EMA shadow) and the phase in progress (nil between phases).
type dsbState struct {
	m     *DSB
	fin   dsb.Result
	phase *dsb.Phase
}

// Finished is the networks of the phases closed so far.
func (s *dsbState) Finished() *dsb.Result { return &s.fin }

func (s *dsbState) Open(p int) error {
	if s.phase != nil {
		return fmt.Errorf("open %v: %v is still open", PhaseID(p), s.phase.ID)
	}
	ph, err := s.fin.OpenPhase(&s.m.opts, PhaseID(p), nil, nil)
	if err != nil {
		return err
	}
	s.phase = ph
	return nil
}

func (s *dsbState) Cache() Cache {
	if s.phase == nil {
		return nil
	}
	return &dsbCache{phase: s.phase}
}

func (s *dsbState) GradLen() int {
	if s.phase == nil {
		return 0
	}
	return len(s.phase.Net.Params())
}

func (s *dsbState) Gradient(step int64, owned []int, shards []Shard, buf []float32) error {
	if s.phase == nil {
		return fmt.Errorf("dsb gradient at step %d: no phase is open", step)
	}
	ds := make([]*dsb.Shard, len(shards))
	for i, sh := range shards {
		d, ok := sh.(*dsb.Shard)
		if !ok {
			return fmt.Errorf("%v step %d: shard %d is a %T, want *dsb.Shard", s.phase.ID, step, owned[i], sh)
		}
		ds[i] = d
	}
	g := len(s.phase.Net.Params())
	loss, err := s.phase.LocalGradTo(int(step), ds, buf[:g])
	if err != nil {
		return err
	}
	buf[g] = float32(loss)
	clear(buf[g+1:])
	return nil
}

func (s *dsbState) Apply(step int64, grad []float32) error {
	if s.phase == nil {
		return fmt.Errorf("dsb apply at step %d: no phase is open", step)
	}
	if _, err := s.phase.Apply(grad); err != nil {
		return fmt.Errorf("%v step %d: %w", s.phase.ID, step, err)
	}
	return nil
}

func (s *dsbState) Close() error {
	if s.phase == nil {
		return fmt.Errorf("dsb close: no phase is open")
	}
	if err := s.fin.ClosePhase(s.phase); err != nil {
		return err
	}
	s.phase = nil
	return nil
}

func (s *dsbState) layout() pairLayout {
	return pairLayout{prefix: "dsb", kind: "network", net: s.m.opts.Net, ema: s.m.opts.Hyper.EMADecay > 0}
}

// Encode writes the snapshot pairLayout describes, under dsb/.
func (s *dsbState) Encode(p int, step int64, w *Writer) error {
	var live *training
	if s.phase != nil {
		live = &training{params: s.phase.Net.Params(), adam: s.phase.Adam, ema: s.phase.EMA}
	}
	return s.layout().encode(w, finishedPair{B: s.fin.B, F: s.fin.F, BEMA: s.fin.BEMA, FEMA: s.fin.FEMA}, p, step, live)
}

func (s *dsbState) Decode(p int, step int64, sn *Snapshot) error {
	l := s.layout()
	fin, err := l.decodeFinished(sn, p)
	if err != nil {
		return err
	}
	s.fin.B, s.fin.F, s.fin.BEMA, s.fin.FEMA = fin.B, fin.F, fin.BEMA, fin.FEMA
	s.fin.Iterations = p / 2
	if step == 0 {
		return nil
	}
	return l.decodeTraining(sn, func(net *nn.Net, ema []float32) (*nn.Adam, error) {
		ph, err := s.fin.OpenPhase(&s.m.opts, PhaseID(p), net, ema)
		if err != nil {
			return nil, err
		}
		s.phase = ph
		return ph.Adam, nil
	})
}

func (s *dsbState) Model(p int) (Model, error) {
	if s.fin.B == nil {
		return nil, fmt.Errorf("model: no network has finished before phase %d", p)
	}
	m, err := DSBModelOf(&s.fin)
	if err != nil {
		return nil, err
	}
	m.Denoise = s.m.opts.Denoise
	return m, nil
}

// dsbCache simulates the open phase's shards with forks of its frozen mean.
type dsbCache struct{ phase *dsb.Phase }

func (c *dsbCache) Gen(step int64) uint64 { return c.phase.Chain.GenForStep(int(step)) }

func (c *dsbCache) Builders(n int) []Builder {
	means := dsb.ForkMeans(c.phase.Frozen, n)
	out := make([]Builder, len(means))
	for w, mean := range means {
		out[w] = func(gen uint64, index int) (Shard, error) {
			return c.phase.Chain.SimulateShard(mean, c.phase.ID, gen, index)
		}
	}
	return out
}
