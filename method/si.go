package method

import (
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/storage"
)

// SIShards is the number of virtual shards an interpolant batch is cut
// into: rows [i*B/S, (i+1)*B/S) form shard i. It is a constant, not a
// config field, because the split only decides who computes which rows.
const SIShards = 16

// SI is a stochastic interpolant (bridge/si): one phase that trains the
// velocity and, optionally, the denoiser on fresh batches, without a cache.
type SI struct {
	opts    si.Options
	sampler si.SampleOptions
	shards  int
}

// NewSI validates the options; sampler is how the trained model samples.
func NewSI(o si.Options, sampler si.SampleOptions) (*SI, error) {
	if _, err := si.NewTrainer(o); err != nil {
		return nil, err
	}
	return &SI{opts: o, sampler: sampler, shards: min(SIShards, o.Batch)}, nil
}

func (m *SI) Name() string { return "si" }

func (m *SI) Phases() []Phase {
	return []Phase{{Name: "interpolant", Direction: storage.DirectionSI}}
}

func (m *SI) StepsPerPhase() int64 { return int64(m.opts.Steps) }
func (m *SI) Batch() int           { return m.opts.Batch }
func (m *SI) Shards() int          { return m.shards }

// ShardRange is the half-open row range [from, to) of the global batch
// that virtual shard i covers.
func (m *SI) ShardRange(i int) (from, to int) {
	return i * m.opts.Batch / m.shards, (i + 1) * m.opts.Batch / m.shards
}

func (m *SI) Start() (State, error) {
	tr, err := si.NewTrainer(m.opts)
	if err != nil {
		return nil, err
	}
	return &siState{m: m, tr: tr}, nil
}

func (m *SI) EncodeShard(Shard) ([]storage.Tensor, map[string]string, error) {
	return nil, nil, fmt.Errorf("si: an interpolant run has no cache")
}

func (m *SI) DecodeShard(key ShardKey, _ []storage.Tensor, _ map[string]string) (Shard, error) {
	return nil, fmt.Errorf("shard %+v: an interpolant run has no cache", key)
}

// siState is the whole phase's trainer; part is the gradient of one row
// range, reused from step to step.
type siState struct {
	m    *SI
	tr   *si.Trainer
	part []float32
}

// Trainer is the interpolant trainer.
func (s *siState) Trainer() *si.Trainer { return s.tr }

func (s *siState) Open(p int) error {
	if p != 0 {
		return fmt.Errorf("si: open phase %d: the interpolant has one phase", p)
	}
	return nil
}

func (s *siState) Cache() Cache { return nil }
func (s *siState) GradLen() int { return s.tr.GradLen() }
func (s *siState) Close() error { return nil }

// Gradient sums the local gradients of the owned row ranges. Adjacent
// shards are merged so one replica makes one call per contiguous block.
func (s *siState) Gradient(step int64, owned []int, _ []Shard, buf []float32) error {
	g := s.tr.GradLen()
	if len(s.part) != g {
		s.part = make([]float32, g)
	}
	if len(owned) == 0 {
		clear(buf)
		return nil
	}
	clear(buf[g:])
	for k, first := 0, true; k < len(owned); first = false {
		from, to := s.m.ShardRange(owned[k])
		k++
		for k < len(owned) && owned[k] == owned[k-1]+1 {
			_, to = s.m.ShardRange(owned[k])
			k++
		}
		// The first block (the only one when ShardSum asks shard by shard)
		// is written in place; the others are added to it.
		part := s.part
		if first {
			part = buf[:g]
		}
		l, err := s.tr.LocalGradient(int(step), from, to, part)
		if err != nil {
			return err
		}
		if !first {
			for i, v := range part {
				buf[i] += v
			}
		}
		buf[g] += float32(l.Velocity)
		buf[g+1] += float32(l.Denoiser)
	}
	return nil
}

func (s *siState) Apply(_ int64, grad []float32) error {
	_, err := s.tr.Apply(grad)
	return err
}

// Snapshot tensors of SI: si/velocity/{params,ema,adam_m,adam_v} and, when
// the denoiser is trained, si/denoiser/{...}; metadata adam_t and
// adam_t_denoiser, the Adam step counts.
const metaAdamTEta = "adam_t_denoiser"

func (s *siState) Encode(_ int, _ int64, w *Writer) error {
	st := s.tr.State()
	w.Vec("si/velocity/params", st.Velocity.Params())
	w.Vec("si/velocity/ema", st.EMAVelocity.Shadow)
	w.Vec("si/velocity/adam_m", st.AdamVelocity.M)
	w.Vec("si/velocity/adam_v", st.AdamVelocity.V)
	w.Int(metaAdamT, st.AdamVelocity.T)
	if st.Denoiser != nil {
		w.Vec("si/denoiser/params", st.Denoiser.Params())
		w.Vec("si/denoiser/ema", st.EMADenoiser.Shadow)
		w.Vec("si/denoiser/adam_m", st.AdamDenoiser.M)
		w.Vec("si/denoiser/adam_v", st.AdamDenoiser.V)
		w.Int(metaAdamTEta, st.AdamDenoiser.T)
	}
	return nil
}

func (s *siState) Decode(p int, step int64, sn *Snapshot) error {
	st := s.tr.State()
	n := len(st.Velocity.Params())
	for _, f := range []struct {
		name string
		dst  []float32
	}{{"si/velocity/params", st.Velocity.Params()}, {"si/velocity/ema", st.EMAVelocity.Shadow},
		{"si/velocity/adam_m", st.AdamVelocity.M}, {"si/velocity/adam_v", st.AdamVelocity.V}} {
		if err := sn.Vec(f.name, n, f.dst); err != nil {
			return err
		}
	}
	t, err := sn.Int(metaAdamT)
	if err != nil {
		return err
	}
	st.AdamVelocity.T = t
	if st.Denoiser != nil {
		n := len(st.Denoiser.Params())
		for _, f := range []struct {
			name string
			dst  []float32
		}{{"si/denoiser/params", st.Denoiser.Params()}, {"si/denoiser/ema", st.EMADenoiser.Shadow},
			{"si/denoiser/adam_m", st.AdamDenoiser.M}, {"si/denoiser/adam_v", st.AdamDenoiser.V}} {
			if err := sn.Vec(f.name, n, f.dst); err != nil {
				return err
			}
		}
		if st.AdamDenoiser.T, err = sn.Int(metaAdamTEta); err != nil {
			return err
		}
	}
	if p == 1 {
		s.tr.SetStep(int(s.m.StepsPerPhase()))
	} else {
		s.tr.SetStep(int(step))
	}
	return nil
}

func (s *siState) Model(p int) (Model, error) {
	if p < 1 {
		return nil, fmt.Errorf("model: the interpolant has not finished")
	}
	vel, den, err := s.tr.EMANets()
	if err != nil {
		return nil, err
	}
	return &SIModel{Path: s.tr.Path(), Velocity: vel, Denoiser: den, Sampler: s.m.sampler,
		Field: s.m.opts.Field, Kind: s.m.opts.Velocity}, nil
}
