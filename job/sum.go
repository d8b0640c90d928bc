package job

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/internal/par"
)

// sumBlock is the run of gradient values that share one fixed-point scale.
// Finer blocks keep small gradients more bits; each costs 8 bytes of the
// max exchange, so 1024 keeps that exchange under 1% of the sum's bytes.
const sumBlock = 1024

// Sum computes the next step's summed buffer (the global gradient
// followed by the loss slots, what Apply takes) over c, with this replica
// owning the given virtual shards. Every shard's share is computed on its
// own, with a single-threaded BLAS, and the shares are summed in fixed
// point (package fixedsum), so the result has the same bits whichever
// replicas own which shards, and whatever the process's BLAS settings:
// the state after any step is the same bytes at any worker count. Every
// replica of the step calls it at once, owning shards or not. The buffer
// is reused by the next call.
func (s *State) Sum(ctx context.Context, owned []int, src ShardSource, c fixedsum.Collective) ([]float32, error) {
	n, err := s.GradLen()
	if err != nil {
		return nil, err
	}
	for _, i := range owned {
		if i < 0 || i >= s.job.shards {
			return nil, fmt.Errorf("shard %d: outside 0..%d", i, s.job.shards-1)
		}
	}
	if s.sum == nil || s.sum.Len() != n {
		if s.sum, err = fixedsum.New(n, fixedsum.Starts(n-lossSlots, sumBlock, lossSlots), s.job.shards); err != nil {
			return nil, err
		}
	}
	s.sum.Reset()
	terms := s.sum.Terms(len(owned))
	step := int(s.pos.Step)
	var shards []*dsb.Shard
	if s.si == nil && len(owned) > 0 {
		if shards, err = s.ownedShards(ctx, step, owned, src); err != nil {
			return nil, err
		}
	}
	if err := s.shardTerms(step, owned, shards, terms); err != nil {
		return nil, err
	}
	sum, err := s.sum.Reduce(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("sum at %v: %w", s.pos, err)
	}
	return sum, nil
}

// shardTerms writes shard owned[k]'s weighted gradient and losses into
// terms[k]. The BLAS is held at one thread, as every replica holds it, so
// a shard's bits do not depend on the environment a trainer started in.
func (s *State) shardTerms(step int, owned []int, shards []*dsb.Shard, terms [][]float32) error {
	defer par.SingleThreadBLAS()()
	for k, i := range owned {
		t := terms[k]
		clear(t)
		g := len(t) - lossSlots
		if s.si != nil {
			from, to := s.job.ShardRange(i)
			l, err := s.si.LocalGradient(step, from, to, t[:g])
			if err != nil {
				return err
			}
			t[g], t[g+1] = float32(l.Velocity), float32(l.Denoiser)
			continue
		}
		loss, err := s.phase.LocalGrad(step, shards[k:k+1])
		if err != nil {
			return err
		}
		copy(t[:g], s.phase.Net.Grads())
		t[g] = float32(loss)
	}
	return nil
}
