package method

import (
	"context"
	"fmt"
	"sync"

	"github.com/sbtrain/sbtrain/internal/par"
)

// Gather gets the shards owned of generation gen of phase from src, which
// builds the ones it lacks with the builders, one goroutine per builder.
// src itself is never entered by two goroutines at once: a lock is held
// around each call and released only while build runs, so any sequential
// ShardSource works unchanged. out[i] is shard owned[i].
func Gather(ctx context.Context, builders []Builder, phase int, gen uint64, owned []int, src ShardSource) ([]Shard, error) {
	if len(builders) == 0 {
		return nil, fmt.Errorf("cache of phase %d: no shard builder", phase)
	}
	out := make([]Shard, len(owned))
	var mu sync.Mutex
	err := par.Do(ctx, min(len(builders), len(owned)), len(owned), func(ctx context.Context, w, k int) error {
		i := owned[k]
		key := ShardKey{Phase: phase, Gen: gen, Index: i}
		mu.Lock()
		defer mu.Unlock()
		sh, err := src.Shard(ctx, key, func() (Shard, error) {
			mu.Unlock()
			defer mu.Lock()
			return builders[w](gen, i)
		})
		if err != nil {
			return fmt.Errorf("cache shard %d of generation %d: %w", i, gen, err)
		}
		out[k] = sh
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Build simulates the shards indices of generation gen with the builders,
// one goroutine per builder. out[i] is shard indices[i].
func Build(ctx context.Context, builders []Builder, gen uint64, indices []int) ([]Shard, error) {
	if len(builders) == 0 {
		return nil, fmt.Errorf("cache generation %d: no shard builder", gen)
	}
	out := make([]Shard, len(indices))
	err := par.Do(ctx, len(builders), len(indices), func(_ context.Context, w, k int) error {
		sh, err := builders[w](gen, indices[k])
		out[k] = sh
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cache generation %d: %w", gen, err)
	}
	return out, nil
}
