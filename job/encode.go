package job

import (
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// A snapshot is one safetensors file. Tensors:
//
//	dsb/backward/params, dsb/backward/ema, dsb/forward/params, dsb/forward/ema
//	    the last finished network of each direction (absent before one is)
//	train/params, train/ema, train/adam_m, train/adam_v
//	    the DSB phase in progress (absent at step 0 of a phase: it is then
//	    rebuilt from the finished networks, as the single-process run does)
//	si/velocity/{params,ema,adam_m,adam_v}, si/denoiser/{...}
//	loss/<phase>
//	    the loss of every applied step
//
// and metadata: format, method, config hash, phase, step, Adam step counts.
const (
	snapshotFormat = "sbtrain.job/1"
	metaFormat     = "format"
	metaMethod     = "method"
	metaHash       = "config_hash"
	metaPhase      = "phase"
	metaStep       = "step"
	metaAdamT      = "adam_t"
	metaAdamTEta   = "adam_t_denoiser"
)

// SnapshotBlob is the checkpoint blob name a snapshot is stored under.
const SnapshotBlob = "state.safetensors"

func vec(name string, v []float32) storage.Tensor {
	return storage.F32Tensor(name, []int{len(v)}, v)
}

// Encode serialises the state. The bytes are a pure function of the state,
// so two replicas in the same state encode the same bytes.
func (s *State) Encode() ([]byte, error) {
	meta := map[string]string{
		metaFormat: snapshotFormat, metaMethod: s.job.method, metaHash: s.job.Hash,
		metaPhase: strconv.Itoa(s.pos.Phase), metaStep: strconv.FormatInt(s.pos.Step, 10),
	}
	var ts []storage.Tensor
	for p, l := range s.losses {
		if len(l) > 0 {
			ts = append(ts, vec("loss/"+strconv.Itoa(p), l))
		}
	}
	if s.si != nil {
		st := s.si.State()
		ts = append(ts, vec("si/velocity/params", st.Velocity.Params()), vec("si/velocity/ema", st.EMAVelocity.Shadow),
			vec("si/velocity/adam_m", st.AdamVelocity.M), vec("si/velocity/adam_v", st.AdamVelocity.V))
		meta[metaAdamT] = strconv.FormatInt(st.AdamVelocity.T, 10)
		if st.Denoiser != nil {
			ts = append(ts, vec("si/denoiser/params", st.Denoiser.Params()), vec("si/denoiser/ema", st.EMADenoiser.Shadow),
				vec("si/denoiser/adam_m", st.AdamDenoiser.M), vec("si/denoiser/adam_v", st.AdamDenoiser.V))
			meta[metaAdamTEta] = strconv.FormatInt(st.AdamDenoiser.T, 10)
		}
		return storage.EncodeSafetensors(ts, meta)
	}
	if s.fin.B != nil {
		ts = append(ts, vec("dsb/backward/params", s.fin.B.Params()))
		if s.fin.BEMA != nil {
			ts = append(ts, vec("dsb/backward/ema", s.fin.BEMA))
		}
	}
	if s.fin.F != nil {
		ts = append(ts, vec("dsb/forward/params", s.fin.F.Params()))
		if s.fin.FEMA != nil {
			ts = append(ts, vec("dsb/forward/ema", s.fin.FEMA))
		}
	}
	if s.pos.Step > 0 {
		if s.phase == nil {
			return nil, fmt.Errorf("encode at %v: no phase in progress", s.pos)
		}
		ts = append(ts, vec("train/params", s.phase.Net.Params()),
			vec("train/adam_m", s.phase.Adam.M), vec("train/adam_v", s.phase.Adam.V))
		if s.phase.EMA != nil {
			ts = append(ts, vec("train/ema", s.phase.EMA.Shadow))
		}
		meta[metaAdamT] = strconv.FormatInt(s.phase.Adam.T, 10)
	}
	return storage.EncodeSafetensors(ts, meta)
}

// snapshot is a decoded file with lookups that name what is wrong.
type snapshot struct {
	name    string
	tensors map[string]storage.Tensor
	meta    map[string]string
}

func (sn *snapshot) vec(name string, n int, into []float32) error {
	t, ok := sn.tensors[name]
	if !ok {
		return fmt.Errorf("%s: tensor %s is missing", sn.name, name)
	}
	v, err := t.Float32s()
	if err != nil {
		return fmt.Errorf("%s: tensor %s: %w", sn.name, name, err)
	}
	if len(v) != n {
		return fmt.Errorf("%s: tensor %s has %d values, want %d", sn.name, name, len(v), n)
	}
	copy(into, v)
	return nil
}

func (sn *snapshot) has(name string) bool { _, ok := sn.tensors[name]; return ok }

func (sn *snapshot) int(key string) (int64, error) {
	v, ok := sn.meta[key]
	if !ok {
		return 0, fmt.Errorf("%s: metadata %q is missing", sn.name, key)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: metadata %s = %q, want a non-negative integer", sn.name, key, v)
	}
	return n, nil
}

// Decode rebuilds a state from Encode's bytes; name (a file or object key)
// is used in errors. It refuses snapshots of another config or format and
// any tensor whose shape does not match the config's networks.
func (j *Job) Decode(b []byte, name string) (*State, error) {
	ts, meta, err := storage.DecodeSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sn := &snapshot{name: name, tensors: make(map[string]storage.Tensor, len(ts)), meta: meta}
	for _, t := range ts {
		sn.tensors[t.Name] = t
	}
	switch {
	case meta[metaFormat] != snapshotFormat:
		return nil, fmt.Errorf("%s: format %q, want %q", name, meta[metaFormat], snapshotFormat)
	case meta[metaMethod] != j.method:
		return nil, fmt.Errorf("%s: method %q, this run is %q", name, meta[metaMethod], j.method)
	case meta[metaHash] != j.Hash:
		return nil, fmt.Errorf("%s: config hash %s, this run's config hashes to %s", name, meta[metaHash], j.Hash)
	}
	phase, err := sn.int(metaPhase)
	if err != nil {
		return nil, err
	}
	step, err := sn.int(metaStep)
	if err != nil {
		return nil, err
	}
	s, err := j.Init()
	if err != nil {
		return nil, err
	}
	s.pos = Position{Phase: int(phase), Step: step}
	if err := j.Check(s.pos); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for p := range s.losses {
		want := 0
		switch {
		case p < s.pos.Phase:
			want = int(j.steps)
		case p == s.pos.Phase:
			want = int(s.pos.Step)
		}
		if want == 0 {
			continue
		}
		s.losses[p] = make([]float32, want)
		if err := sn.vec("loss/"+strconv.Itoa(p), want, s.losses[p]); err != nil {
			return nil, err
		}
	}
	if s.si != nil {
		return s, s.decodeSI(sn)
	}
	return s, s.decodeDSB(sn)
}

func (s *State) decodeSI(sn *snapshot) error {
	st := s.si.State()
	n := len(st.Velocity.Params())
	for _, f := range []struct {
		name string
		dst  []float32
	}{{"si/velocity/params", st.Velocity.Params()}, {"si/velocity/ema", st.EMAVelocity.Shadow},
		{"si/velocity/adam_m", st.AdamVelocity.M}, {"si/velocity/adam_v", st.AdamVelocity.V}} {
		if err := sn.vec(f.name, n, f.dst); err != nil {
			return err
		}
	}
	t, err := sn.int(metaAdamT)
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
			if err := sn.vec(f.name, n, f.dst); err != nil {
				return err
			}
		}
		if st.AdamDenoiser.T, err = sn.int(metaAdamTEta); err != nil {
			return err
		}
	}
	if s.pos.Phase == 1 {
		s.si.SetStep(int(s.job.steps))
	} else {
		s.si.SetStep(int(s.pos.Step))
	}
	return nil
}

// finishedNet restores the last finished network of one direction, if the
// snapshot has it; a phase of that direction must have finished before p.
func (s *State) finishedNet(sn *snapshot, dir string, wantIt bool) (*nn.Net, []float32, error) {
	name := "dsb/" + dir + "/params"
	if !sn.has(name) {
		if wantIt {
			return nil, nil, fmt.Errorf("%s: tensor %s is missing: the %s network finished before %v", sn.name, name, dir, s.pos)
		}
		return nil, nil, nil
	}
	net, err := nn.New(s.job.dsbOpts.Net, 0)
	if err != nil {
		return nil, nil, err
	}
	n := len(net.Params())
	if err := sn.vec(name, n, net.Params()); err != nil {
		return nil, nil, err
	}
	var ema []float32
	if s.job.dsbOpts.Hyper.EMADecay > 0 {
		ema = make([]float32, n)
		if err := sn.vec("dsb/"+dir+"/ema", n, ema); err != nil {
			return nil, nil, err
		}
	}
	return net, ema, nil
}

func (s *State) decodeDSB(sn *snapshot) error {
	var err error
	// Phases before pos: backward ones finished when pos.Phase >= 1,
	// forward ones when pos.Phase >= 2.
	if s.fin.B, s.fin.BEMA, err = s.finishedNet(sn, "backward", s.pos.Phase >= 1); err != nil {
		return err
	}
	if s.fin.F, s.fin.FEMA, err = s.finishedNet(sn, "forward", s.pos.Phase >= 2); err != nil {
		return err
	}
	s.fin.Iterations = s.pos.Phase / 2
	if s.pos.Step == 0 {
		return nil
	}
	net, err := nn.New(s.job.dsbOpts.Net, 0)
	if err != nil {
		return err
	}
	n := len(net.Params())
	if err := sn.vec("train/params", n, net.Params()); err != nil {
		return err
	}
	var ema []float32
	if s.job.dsbOpts.Hyper.EMADecay > 0 {
		ema = make([]float32, n)
		if err := sn.vec("train/ema", n, ema); err != nil {
			return err
		}
	}
	if err := s.openPhase(net, ema); err != nil {
		return err
	}
	if err := sn.vec("train/adam_m", n, s.phase.Adam.M); err != nil {
		return err
	}
	if err := sn.vec("train/adam_v", n, s.phase.Adam.V); err != nil {
		return err
	}
	if s.phase.Adam.T, err = sn.int(metaAdamT); err != nil {
		return err
	}
	return nil
}

// ParamBytes are the raw parameter, Adam and EMA tensors of a snapshot by
// name (what exact-resume comparisons look at), without the loss history.
func ParamBytes(b []byte) (map[string][]byte, error) {
	ts, _, err := storage.DecodeSafetensors(b)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte)
	for _, t := range ts {
		if len(t.Name) >= 5 && t.Name[:5] == "loss/" {
			continue
		}
		out[t.Name] = t.Data
	}
	return out, nil
}
