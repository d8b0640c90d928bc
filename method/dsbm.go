package method

import (
	"context"
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/dsbm"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// DSBM is diffusion Schrödinger bridge matching by iterative Markovian
// fitting (bridge/dsbm): iteration n is phase 2(n-1), backward, then phase
// 2(n-1)+1, forward (absent for the last iteration under EndOnBackward);
// each phase trains on a cache of endpoint pairs, the first coupling for
// phase 0 and pairs simulated with the previous phase's frozen drift after
// it.
type DSBM struct {
	opts  dsbm.Options
	chain *dsbm.Chain
}

// NewDSBM validates the options.
func NewDSBM(o dsbm.Options) (*DSBM, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("dsbm: %w", err)
	}
	chain, err := o.Chain()
	if err != nil {
		return nil, fmt.Errorf("dsbm: %w", err)
	}
	o.AfterIteration = nil // the drivers evaluate; see Phase.Evaluate
	return &DSBM{opts: o, chain: chain}, nil
}

// Options are the IMF options the method runs with.
func (m *DSBM) Options() dsbm.Options { return m.opts }

// IMFPhaseName names DSBM phase id for people, as dsb.PhaseID.String does
// an IPF phase.
func IMFPhaseName(id dsbm.PhaseID) string { return fmt.Sprintf("imf %d %s", id.Iteration, id.Dir) }

func (m *DSBM) Name() string { return "dsbm" }

func (m *DSBM) Phases() []Phase {
	ids := m.opts.Phases()
	out := make([]Phase, len(ids))
	for p, id := range ids {
		dir := storage.DirectionBackward
		if id.Dir == dsb.Forward {
			dir = storage.DirectionForward
		}
		out[p] = Phase{Name: IMFPhaseName(id), Direction: dir, Iteration: id.Iteration, Evaluate: m.opts.EndsIteration(id)}
	}
	return out
}

func (m *DSBM) StepsPerPhase() int64 { return int64(m.opts.StepsPerPhase) }
func (m *DSBM) Batch() int           { return m.opts.Batch }
func (m *DSBM) Shards() int          { return m.chain.Shards }

func (m *DSBM) Start() (State, error) {
	return &dsbmState{m: m, fin: dsbm.Result{Chain: m.chain, Spec: m.opts.Net}}, nil
}

func (m *DSBM) EncodeShard(sh Shard) ([]storage.Tensor, map[string]string, error) {
	s, ok := sh.(*dsbm.Shard)
	if !ok || s == nil {
		return nil, nil, fmt.Errorf("dsbm: encode shard: a %T, want *dsbm.Shard", sh)
	}
	ts := []storage.Tensor{
		storage.F32Tensor("x0", []int{s.Pairs, s.Dim}, s.X0),
		storage.F32Tensor("x1", []int{s.Pairs, s.Dim}, s.X1),
	}
	meta := map[string]string{"pairs": strconv.Itoa(s.Pairs), "dim": strconv.Itoa(s.Dim)}
	return ts, meta, nil
}

func (m *DSBM) DecodeShard(key ShardKey, ts []storage.Tensor, meta map[string]string) (Shard, error) {
	atoi := func(k string) (int, error) {
		n, err := strconv.Atoi(meta[k])
		if err != nil {
			return 0, fmt.Errorf("shard %+v: metadata %s = %q, want an integer", key, k, meta[k])
		}
		return n, nil
	}
	s := &dsbm.Shard{Phase: PhaseID(key.Phase), Gen: key.Gen, Index: key.Index}
	var err error
	if s.Pairs, err = atoi("pairs"); err != nil {
		return nil, err
	}
	if s.Dim, err = atoi("dim"); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *[]float32
	}{{"x0", &s.X0}, {"x1", &s.X1}} {
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

// dsbmState holds the last finished drift of each direction (live weights
// and EMA shadow) and the phase in progress (nil between phases).
type dsbmState struct {
	m     *DSBM
	fin   dsbm.Result
	phase *dsbm.Phase
}

// Finished is the networks of the phases closed so far.
func (s *dsbmState) Finished() *dsbm.Result { return &s.fin }

func (s *dsbmState) Open(p int) error {
	if s.phase != nil {
		return fmt.Errorf("open %s: %s is still open", IMFPhaseName(PhaseID(p)), IMFPhaseName(s.phase.ID))
	}
	ph, err := s.fin.OpenPhase(&s.m.opts, PhaseID(p), nil, nil)
	if err != nil {
		return err
	}
	s.phase = ph
	return nil
}

func (s *dsbmState) Cache() Cache {
	if s.phase == nil {
		return nil
	}
	return &dsbmCache{phase: s.phase}
}

func (s *dsbmState) GradLen() int {
	if s.phase == nil {
		return 0
	}
	return len(s.phase.Net.Params())
}

func (s *dsbmState) Gradient(step int64, owned []int, shards []Shard, buf []float32) error {
	if s.phase == nil {
		return fmt.Errorf("dsbm gradient at step %d: no phase is open", step)
	}
	ds := make([]*dsbm.Shard, len(shards))
	for i, sh := range shards {
		d, ok := sh.(*dsbm.Shard)
		if !ok {
			return fmt.Errorf("%s step %d: shard %d is a %T, want *dsbm.Shard", IMFPhaseName(s.phase.ID), step, owned[i], sh)
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

func (s *dsbmState) Apply(step int64, grad []float32) error {
	if s.phase == nil {
		return fmt.Errorf("dsbm apply at step %d: no phase is open", step)
	}
	if _, err := s.phase.Apply(grad); err != nil {
		return fmt.Errorf("%s step %d: %w", IMFPhaseName(s.phase.ID), step, err)
	}
	return nil
}

func (s *dsbmState) Close() error {
	if s.phase == nil {
		return fmt.Errorf("dsbm close: no phase is open")
	}
	if err := s.fin.ClosePhase(&s.m.opts, s.phase); err != nil {
		return err
	}
	s.phase = nil
	return nil
}

func (s *dsbmState) layout() pairLayout {
	return pairLayout{prefix: "dsbm", kind: "drift", net: s.m.opts.Net, ema: s.m.opts.Hyper.EMADecay > 0}
}

// Encode writes the snapshot pairLayout describes, under dsbm/.
func (s *dsbmState) Encode(p int, step int64, w *Writer) error {
	var live *training
	if s.phase != nil {
		live = &training{params: s.phase.Net.Params(), adam: s.phase.Adam, ema: s.phase.EMA}
	}
	return s.layout().encode(w, finishedPair{B: s.fin.B, F: s.fin.F, BEMA: s.fin.BEMA, FEMA: s.fin.FEMA}, p, step, live)
}

func (s *dsbmState) Decode(p int, step int64, sn *Snapshot) error {
	l := s.layout()
	fin, err := l.decodeFinished(sn, p)
	if err != nil {
		return err
	}
	s.fin.B, s.fin.F, s.fin.BEMA, s.fin.FEMA = fin.B, fin.F, fin.BEMA, fin.FEMA
	s.fin.Iterations = 0
	for q := range p {
		if id := PhaseID(q); s.m.opts.EndsIteration(id) {
			s.fin.Iterations = id.Iteration
		}
	}
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

func (s *dsbmState) Model(p int) (Model, error) {
	if s.fin.B == nil {
		return nil, fmt.Errorf("model: no drift has finished before phase %d", p)
	}
	m, err := DSBMModelOf(&s.fin)
	if err != nil {
		return nil, err
	}
	m.Denoise, m.SampleSteps = s.m.opts.Denoise, s.m.opts.SampleSteps
	return m, nil
}

// dsbmCache simulates the open phase's shards with evaluators of its frozen
// drift (none for backward phase 1, whose pairs are the first coupling).
type dsbmCache struct{ phase *dsbm.Phase }

func (c *dsbmCache) Gen(step int64) uint64 { return c.phase.Chain.GenForStep(int(step)) }

func (c *dsbmCache) Builders(n int) []Builder {
	n = max(n, 1)
	models := make([]dsbm.Model, n)
	if net, ok := c.phase.Frozen.(*nn.Net); ok {
		models[0] = net
		for i := 1; i < n; i++ {
			models[i] = net.Evaluator()
		}
	} else if c.phase.Frozen != nil {
		models = []dsbm.Model{c.phase.Frozen}
	}
	out := make([]Builder, len(models))
	for w, model := range models {
		out[w] = func(gen uint64, index int) (Shard, error) {
			return c.phase.Chain.SimulateShard(model, c.phase.ID, gen, index)
		}
	}
	return out
}

// DSBMModel samples with the backward drift: x ~ prior at t = 1, then
// Euler-Maruyama down to t = 0; with the forward drift it also carries data
// to the prior side.
type DSBMModel struct {
	Chain             *dsbm.Chain
	Backward, Forward *nn.Net // sampling weights (EMA when trained with it)
	// Denoise drops the last step's noise in both directions (see
	// dsbm.SampleOptions.Denoise).
	Denoise bool
	// SampleSteps are the Euler-Maruyama steps of both directions; 0 means
	// the chain's.
	SampleSteps int
}

// Generate runs the backward SDE from start.
func (m *DSBMModel) Generate(ctx context.Context, start []float32, seed uint64, paths bool) (*Generated, error) {
	out, err := m.Chain.Sample(ctx, m.Backward, dsbm.Backward, start, dsbm.SampleOptions{Seed: seed, Path: paths, Denoise: m.Denoise, Steps: m.SampleSteps})
	if err != nil {
		return nil, fmt.Errorf("dsbm sample: %w", err)
	}
	// The backward SDE already runs from the prior to the data, the order
	// plots read.
	return &Generated{End: out.End, Paths: out.Path}, nil
}

// GenerateForward runs the forward SDE from data points start; nil without
// a forward drift (a model taken after a backward phase).
func (m *DSBMModel) GenerateForward(ctx context.Context, start []float32, seed uint64) ([]float32, error) {
	if m.Forward == nil {
		return nil, nil
	}
	out, err := m.Chain.Sample(ctx, m.Forward, dsbm.Forward, start, dsbm.SampleOptions{Seed: seed, Denoise: m.Denoise, Steps: m.SampleSteps})
	if err != nil {
		return nil, fmt.Errorf("dsbm forward sample: %w", err)
	}
	return out.End, nil
}

// Nets are the backward and forward drifts.
func (m *DSBMModel) Nets() []RoleNet {
	nets := []RoleNet{{Role: "backward", Net: m.Backward}}
	if m.Forward != nil {
		nets = append(nets, RoleNet{Role: "forward", Net: m.Forward})
	}
	return nets
}

// DSBMModelOf freezes the drifts of r with their sampling weights (the EMA
// when one is kept); r keeps its own.
func DSBMModelOf(r *dsbm.Result) (*DSBMModel, error) {
	m := &DSBMModel{Chain: r.Chain}
	var err error
	if m.Backward, err = r.Drift(dsbm.Backward); err != nil {
		return nil, fmt.Errorf("backward drift: %w", err)
	}
	if r.F != nil {
		if m.Forward, err = r.Drift(dsbm.Forward); err != nil {
			return nil, fmt.Errorf("forward drift: %w", err)
		}
	}
	return m, nil
}
