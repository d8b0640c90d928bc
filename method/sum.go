package method

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/internal/par"
)

// sumBlock is the run of gradient values that share one fixed-point scale.
// Finer blocks keep small gradients more bits; each costs 8 bytes of the
// max exchange, so 1024 keeps that exchange under 1% of the sum's bytes.
const sumBlock = 1024

// ShardSum is how every driver sums a step, so that the result has the
// same bits whichever replicas own which shards and however many there
// are: each owned shard's share is computed on its own (State.Gradient
// with that one shard, a fixed shape), with the BLAS held at one thread
// whatever the process's environment, and the shares are summed in fixed
// point over the replicas (package fixedsum), where addition is
// associative. The single-process run is one replica owning every shard.
// The zero value is ready; it keeps its buffers from step to step.
type ShardSum struct {
	sum *fixedsum.Sum
}

// Step computes the summed buffer of step s (the gradient, GradLen()
// values, then the LossSlots, what Apply and the loss history take) of a
// run of `shards` virtual shards, this replica owning owned (got[k] is
// shard owned[k], or got is nil for a method without a cache). Every
// replica calls it for the step at once, through c, owning shards or not.
// The result is reused by the next call.
func (r *ShardSum) Step(ctx context.Context, st State, s int64, shards int, owned []int, got []Shard, c fixedsum.Collective) ([]float32, error) {
	if got != nil && len(got) != len(owned) {
		return nil, fmt.Errorf("step %d: %d shards for %d owned", s, len(got), len(owned))
	}
	g := st.GradLen()
	n := g + LossSlots
	if r.sum == nil || r.sum.Len() != n {
		sum, err := fixedsum.New(n, fixedsum.Starts(g, sumBlock, LossSlots), shards)
		if err != nil {
			return nil, err
		}
		r.sum = sum
	}
	r.sum.Reset()
	terms := r.sum.Terms(len(owned))
	if err := shardTerms(st, s, owned, got, terms); err != nil {
		return nil, err
	}
	out, err := r.sum.Reduce(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("step %d: %w", s, err)
	}
	return out, nil
}

// shardTerms writes shard owned[k]'s share into terms[k]. The BLAS is held
// at one thread: OpenBLAS's products can change bits with its thread
// count, and a trainer started by hand may find it at several.
func shardTerms(st State, s int64, owned []int, got []Shard, terms [][]float32) error {
	defer par.SingleThreadBLAS()()
	for k := range owned {
		var one []Shard
		if got != nil {
			one = got[k : k+1]
		}
		if err := st.Gradient(s, owned[k:k+1], one, terms[k]); err != nil {
			return err
		}
	}
	return nil
}
