package job

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/internal/fixedsum"
)

// Sum computes the next step's summed buffer (the global gradient
// followed by the loss slots, what Apply takes) over c, with this replica
// owning the given virtual shards, as method.ShardSum does: the same bits
// whichever replicas own which shards, so the state after any step is the
// same bytes at any worker count and equal to the single-process run's.
// Every replica of the step calls it at once, owning shards or not. The
// buffer is reused by the next call.
func (s *State) Sum(ctx context.Context, owned []int, src ShardSource, c fixedsum.Collective) ([]float32, error) {
	if err := s.prepare(); err != nil {
		return nil, err
	}
	shards, err := s.gather(ctx, owned, src)
	if err != nil {
		return nil, err
	}
	sum, err := s.sum.Step(ctx, s.st, s.pos.Step, s.job.Shards(), owned, shards, c)
	if err != nil {
		return nil, fmt.Errorf("sum at %v: %w", s.pos, err)
	}
	return sum, nil
}
