package dsb

import (
	"context"
	"fmt"

	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/nn"
)

// Forker is a Mean that can make copies of itself for concurrent use: the
// copy computes bitwise the same values and shares nothing that Eval
// writes, so a copy and the original may be evaluated on two goroutines at
// once. A Mean that is not a Forker is simulated on one goroutine.
type Forker interface {
	Mean
	Fork() Mean
}

// Fork returns the reference mean itself: it keeps no state.
func (m ReferenceMean) Fork() Mean { return m }

// Fork returns a mean evaluating the same network with its own buffers,
// or nil when the network cannot be shared (only *nn.Net can).
func (m *NetMean) Fork() Mean {
	net, ok := m.Net.(*nn.Net)
	if !ok {
		return nil
	}
	return &NetMean{Net: net.Evaluator(), Dir: m.Dir, Sched: m.Sched, Dim: m.Dim}
}

// ForkMeans returns up to n means for n goroutines, m itself first and
// forks after it; fewer (just m) when m cannot fork.
func ForkMeans(m Mean, n int) []Mean {
	out := []Mean{m}
	f, ok := m.(Forker)
	if !ok {
		return out
	}
	for len(out) < n {
		c := f.Fork()
		if c == nil {
			break
		}
		out = append(out, c)
	}
	return out
}

// SimulateShards builds the shards `indices` of cache generation gen, as
// SimulateShard does one by one, on up to par.Workers(workers) goroutines
// (0: one per core), each with its own fork of frozen. Each shard is one
// piece of work, so every shard has the bytes SimulateShard gives it,
// whatever the worker count. out[i] is shard indices[i]. The first error,
// or the end of ctx, stops the build.
func (c *Chain) SimulateShards(ctx context.Context, frozen Mean, phase PhaseID, gen uint64, indices []int, workers int) ([]*Shard, error) {
	if frozen == nil {
		return nil, fmt.Errorf("%v: simulating needs the frozen %s mean", phase, opposite(phase.Dir))
	}
	means := ForkMeans(frozen, par.Size(workers, len(indices)))
	out := make([]*Shard, len(indices))
	err := par.Do(ctx, len(means), len(indices), func(_ context.Context, w, i int) error {
		s, err := c.SimulateShard(means[w], phase, gen, indices[i])
		out[i] = s
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%v cache gen %d: %w", phase, gen, err)
	}
	return out, nil
}

// SimulateShards builds the given shards of generation gen with the frozen
// mean on up to par.Workers(workers) goroutines; see [Chain.SimulateShards].
func (p *Phase) SimulateShards(ctx context.Context, gen uint64, indices []int, workers int) ([]*Shard, error) {
	return p.Chain.SimulateShards(ctx, p.Frozen, p.ID, gen, indices, workers)
}
