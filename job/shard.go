package job

import (
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/storage"
)

// EncodeShard turns a cache shard into the tensors and metadata that
// storage.PutShard writes.
func EncodeShard(s *dsb.Shard) ([]storage.Tensor, map[string]string) {
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
	return ts, meta
}

// DecodeShard rebuilds the shard stored under key and checks it against
// this run's chain (shape, phase, generation, index), so a shard of
// another config is rejected rather than trained on.
func (j *Job) DecodeShard(key ShardKey, ts []storage.Tensor, meta map[string]string) (*dsb.Shard, error) {
	if j.chain == nil {
		return nil, fmt.Errorf("shard %+v: an interpolant run has no cache", key)
	}
	atoi := func(k string) (int, error) {
		n, err := strconv.Atoi(meta[k])
		if err != nil {
			return 0, fmt.Errorf("shard %+v: metadata %s = %q, want an integer", key, k, meta[k])
		}
		return n, nil
	}
	s := &dsb.Shard{Phase: dsbPhase(key.Phase), Gen: key.Gen, Index: key.Index}
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
	if err := j.chain.Check(s, s.Phase, key.Gen, key.Index); err != nil {
		return nil, fmt.Errorf("shard %+v: %w", key, err)
	}
	return s, nil
}
