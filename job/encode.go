package job

import (
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

// A snapshot is one safetensors file. Tensors:
//
//	loss/<phase>
//	    the loss of every applied step
//	the method's own, after the losses (method.DSB: dsb/{backward,forward}/
//	{params,ema} and train/{params,ema,adam_m,adam_v}; method.SI:
//	si/{velocity,denoiser}/{params,ema,adam_m,adam_v})
//
// and metadata: format, method, config hash, phase, step, and the
// method's own (Adam step counts).
const (
	snapshotFormat = "sbtrain.job/1"
	metaFormat     = "format"
	metaMethod     = "method"
	metaHash       = "config_hash"
	metaPhase      = "phase"
	metaStep       = "step"
)

// SnapshotBlob is the checkpoint blob name a snapshot is stored under.
const SnapshotBlob = "state.safetensors"

// Encode serialises the state. The bytes are a pure function of the state,
// so two replicas in the same state encode the same bytes.
func (s *State) Encode() ([]byte, error) {
	w := &method.Writer{Meta: map[string]string{
		metaFormat: snapshotFormat, metaMethod: s.job.method.Name(), metaHash: s.job.Hash,
		metaPhase: strconv.Itoa(s.pos.Phase), metaStep: strconv.FormatInt(s.pos.Step, 10),
	}}
	for p, l := range s.losses {
		if len(l) > 0 {
			w.Vec("loss/"+strconv.Itoa(p), l)
		}
	}
	if s.pos.Step > 0 && !s.open {
		return nil, fmt.Errorf("encode at %v: no phase in progress", s.pos)
	}
	if err := s.st.Encode(s.pos.Phase, s.pos.Step, w); err != nil {
		return nil, fmt.Errorf("encode at %v: %w", s.pos, err)
	}
	return storage.EncodeSafetensors(w.Tensors, w.Meta)
}

// Decode rebuilds a state from Encode's bytes; name (a file or object key)
// is used in errors. It refuses snapshots of another config or format and
// any tensor whose shape does not match the config's networks.
func (j *Job) Decode(b []byte, name string) (*State, error) {
	ts, meta, err := storage.DecodeSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sn := method.NewSnapshot(name, ts, meta)
	switch {
	case meta[metaFormat] != snapshotFormat:
		return nil, fmt.Errorf("%s: format %q, want %q", name, meta[metaFormat], snapshotFormat)
	case meta[metaMethod] != j.method.Name():
		return nil, fmt.Errorf("%s: method %q, this run is %q", name, meta[metaMethod], j.method.Name())
	case meta[metaHash] != j.Hash:
		return nil, fmt.Errorf("%s: config hash %s, this run's config hashes to %s", name, meta[metaHash], j.Hash)
	}
	phase, err := sn.Int(metaPhase)
	if err != nil {
		return nil, err
	}
	step, err := sn.Int(metaStep)
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
			want = int(j.StepsPerPhase())
		case p == s.pos.Phase:
			want = int(s.pos.Step)
		}
		if want == 0 {
			continue
		}
		s.losses[p] = make([]float32, want)
		if err := sn.Vec("loss/"+strconv.Itoa(p), want, s.losses[p]); err != nil {
			return nil, err
		}
	}
	if err := s.st.Decode(s.pos.Phase, s.pos.Step, sn); err != nil {
		return nil, err
	}
	s.open = s.pos.Step > 0
	return s, nil
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
