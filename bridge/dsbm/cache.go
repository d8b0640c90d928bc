package dsbm

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/rng"
)

// Shard is one virtual shard of one cache generation of a phase: Pairs
// endpoint pairs, pair j being rows j of X0 (at t = 0) and X1 (at t = 1).
type Shard struct {
	Phase PhaseID
	Gen   uint64
	Index int
	// Pairs and Dim size the arrays.
	Pairs, Dim int
	X0, X1     []float32 // Pairs rows of Dim each
}

// Check verifies that a shard (for example one loaded from storage) is the
// one this chain would build for (phase, gen, index).
func (c *Chain) Check(s *Shard, phase PhaseID, gen uint64, index int) error {
	if s == nil {
		return fmt.Errorf("shard %d: missing", index)
	}
	if s.Phase != phase || s.Gen != gen || s.Index != index {
		return fmt.Errorf("shard: is (%v, gen %d, index %d), want (%v, gen %d, index %d)",
			s.Phase, s.Gen, s.Index, phase, gen, index)
	}
	n := c.PerShard() * c.Dim
	if s.Pairs != c.PerShard() || s.Dim != c.Dim || len(s.X0) != n || len(s.X1) != n {
		return fmt.Errorf("shard %d: shape %dx%d with %d x0 and %d x1 values, want %dx%d (%d values)",
			index, s.Pairs, s.Dim, len(s.X0), len(s.X1), c.PerShard(), c.Dim, n)
	}
	return nil
}

// SimulateShard builds shard `shard` of cache generation gen for a phase.
// Pair j (global index in the cache) starts from the draw keyed (seed,
// PurposeData, phase, gen, j): of the data for a backward phase, of the
// prior for a forward phase. The other end is:
//
//   - backward phase 1 (frozen must be nil): x0 + sigma Z with Z keyed
//     (seed, PurposeNoise, phase, gen, j) for the `ref` coupling, or a prior
//     draw keyed (seed, PurposeData, phase, gen, j, 1) for `ind`;
//   - otherwise the end of the frozen drift's SDE ([Frozen] says which
//     phase's), forward from x0 or backward from x1, with the noise of step
//     i keyed (seed, PurposeNoise, phase, gen, j, i).
//
// The result is the same bytes in whichever process builds it, given the
// same frozen weights.
func (c *Chain) SimulateShard(frozen Model, phase PhaseID, gen uint64, shard int) (*Shard, error) {
	if err := validPhase(phase); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= c.Shards {
		return nil, fmt.Errorf("shard index %d outside 0..%d", shard, c.Shards-1)
	}
	_, needs := Frozen(phase)
	if needs && frozen == nil {
		return nil, fmt.Errorf("%v: simulating needs the frozen %s drift", phase, opposite(phase.Dir))
	}
	if !needs && frozen != nil {
		return nil, fmt.Errorf("%v: trains on the first coupling %q, not on a frozen drift", phase, c.First)
	}
	per, dim := c.PerShard(), c.Dim
	first := uint64(shard * per)
	s := &Shard{Phase: phase, Gen: gen, Index: shard, Pairs: per, Dim: dim,
		X0: make([]float32, per*dim), X1: make([]float32, per*dim)}
	start, end, from := s.X0, s.X1, c.Data
	if phase.Dir == Forward {
		start, end, from = s.X1, s.X0, c.Prior
	}
	buf := make([]float64, dim)
	for j := 0; j < per; j++ {
		st := rng.New(c.Seed, rng.PurposeData, phase.Key(), gen, first+uint64(j))
		from.Sample(&st, buf)
		for i, v := range buf {
			start[j*dim+i] = float32(v)
		}
	}
	if !needs {
		for j := 0; j < per; j++ {
			row := end[j*dim : (j+1)*dim]
			switch c.First {
			case CouplingRef:
				z := rng.New(c.Seed, rng.PurposeNoise, phase.Key(), gen, first+uint64(j))
				for i := range row {
					row[i] = float32(float64(start[j*dim+i]) + c.Sigma*z.Norm())
				}
			case CouplingInd:
				st := rng.New(c.Seed, rng.PurposeData, phase.Key(), gen, first+uint64(j), 1)
				c.Prior.Sample(&st, buf)
				for i, v := range buf {
					row[i] = float32(v)
				}
			}
		}
		return s, nil
	}
	copy(end, start)
	keys := make([]rng.Key, per)
	base := rng.NewKey(c.Seed, rng.PurposeNoise, phase.Key(), gen)
	for j := range keys {
		keys[j] = base.With(first + uint64(j))
	}
	if err := integrate(c.drift(frozen, opposite(phase.Dir)), opposite(phase.Dir), c.Sigma, c.Steps, dim, end, keys, c.DenoiseCache, nil); err != nil {
		return nil, fmt.Errorf("simulate %v gen %d shard %d: %w", phase, gen, shard, err)
	}
	return s, nil
}

// opposite is the drift that simulates a phase training d.
func opposite(d Direction) Direction {
	if d == Forward {
		return Backward
	}
	return Forward
}

// SimulateShards builds the shards `indices` of cache generation gen, as
// SimulateShard does one by one, on up to par.Workers(workers) goroutines
// (0: one per core), each with its own fork of frozen. Each shard is one
// piece of work, so every shard has the bytes SimulateShard gives it,
// whatever the worker count. out[i] is shard indices[i].
func (c *Chain) SimulateShards(ctx context.Context, frozen Model, phase PhaseID, gen uint64, indices []int, workers int) ([]*Shard, error) {
	// Backward phase 1 has no frozen drift: its workers share nil.
	models := make([]Model, par.Size(workers, len(indices)))
	if frozen != nil {
		models = forkModels(frozen, len(models))
	}
	out := make([]*Shard, len(indices))
	err := par.Do(ctx, len(models), len(indices), func(_ context.Context, w, i int) error {
		s, err := c.SimulateShard(models[w], phase, gen, indices[i])
		out[i] = s
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%v cache gen %d: %w", phase, gen, err)
	}
	return out, nil
}

// Batch is the part of a global minibatch drawn from some shards, in the
// layout nn's LossGrad takes.
type Batch = dsb.Batch

// Weight is the factor this partial batch's mean loss and gradient carry in
// the global step: Rows/B.
func (c *Chain) Weight(b Batch) float64 { return float64(b.Rows()) / float64(c.Batch) }

// MakeBatch gathers the rows of step `step` that come from the given shards.
// Each shard contributes B/S samples; sample i of shard s takes its pair,
// its time t ~ U[Eps, 1-Eps] and its z from the stream (seed, PurposeBatch,
// phase, step, s, i), so a worker owning any subset of the shards gathers
// exactly its part of the single-process minibatch. Every shard must belong
// to the phase and to the generation GenForStep(step).
func (c *Chain) MakeBatch(phase PhaseID, step int, shards []*Shard) (Batch, error) {
	per, dim := c.PerShard(), c.Dim
	each := c.Batch / c.Shards
	gen := c.GenForStep(step)
	rows := each * len(shards)
	b := Batch{T: make([]float32, rows), X: make([]float32, rows*dim), Target: make([]float32, rows*dim)}
	seen := make(map[int]bool, len(shards))
	x0, x1, z := make([]float64, dim), make([]float64, dim), make([]float64, dim)
	for si, s := range shards {
		if s == nil {
			return Batch{}, fmt.Errorf("batch %v step %d: shard %d of %d is nil", phase, step, si, len(shards))
		}
		if err := c.Check(s, phase, gen, s.Index); err != nil {
			return Batch{}, fmt.Errorf("batch %v step %d: %w", phase, step, err)
		}
		if seen[s.Index] {
			return Batch{}, fmt.Errorf("batch %v step %d: shard %d given twice", phase, step, s.Index)
		}
		seen[s.Index] = true
		for i := 0; i < each; i++ {
			st := rng.New(c.Seed, rng.PurposeBatch, phase.Key(), uint64(step), uint64(s.Index), uint64(i))
			j := st.Intn(per)
			t := c.Eps + (1-2*c.Eps)*st.Float64()
			for k := range z {
				x0[k] = float64(s.X0[j*dim+k])
				x1[k] = float64(s.X1[j*dim+k])
				z[k] = st.Norm()
			}
			r := si*each + i
			b.T[r] = float32(t)
			target := b.Target[r*dim : (r+1)*dim]
			BridgePoint(phase.Dir, c.Sigma, t, x0, x1, z, b.X[r*dim:(r+1)*dim], target)
			if c.ScaledDrift {
				scale := DriftScale(phase.Dir, t)
				for k, v := range target {
					target[k] = float32(float64(v) * scale)
				}
			}
		}
	}
	return b, nil
}
