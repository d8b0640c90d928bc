package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

// shardCache keeps the cache shards of the current (phase, generation) in
// memory, loads shards that some replica stored, and builds and stores the
// rest, so a restarted trainer or a new owner does not simulate again.
type shardCache struct {
	store storage.Store
	run   string
	job   *job.Job
	log   *slog.Logger
	mem   map[job.ShardKey]method.Shard
	// Counters, for logs and tests.
	built, loaded int
}

func newShardCache(s storage.Store, run string, j *job.Job, log *slog.Logger) *shardCache {
	return &shardCache{store: s, run: run, job: j, log: log, mem: map[job.ShardKey]method.Shard{}}
}

func (c *shardCache) Shard(ctx context.Context, k job.ShardKey, build func() (method.Shard, error)) (method.Shard, error) {
	if s, ok := c.mem[k]; ok {
		return s, nil
	}
	// A step only reads shards of one generation: drop older ones.
	for old := range c.mem {
		if old.Phase != k.Phase || old.Gen != k.Gen {
			delete(c.mem, old)
		}
	}
	sk := storage.ShardKey{Run: c.run, Phase: k.Phase, Generation: int(k.Gen), Shard: k.Index}
	ts, meta, err := storage.GetShard(ctx, c.store, sk)
	switch {
	case err == nil:
		s, derr := c.job.DecodeShard(k, ts, meta)
		if derr == nil {
			c.mem[k] = s
			c.loaded++
			return s, nil
		}
		c.log.Warn("stored cache shard is unusable; simulating it again", "shard", sk.Key(), "err", derr)
	case errors.Is(err, storage.ErrNotFound):
	case ctx.Err() != nil:
		return nil, ctx.Err()
	default:
		c.log.Warn("cannot read stored cache shard; simulating it", "shard", sk.Key(), "err", err)
	}
	s, err := build()
	if err != nil {
		return nil, err
	}
	c.built++
	tensors, smeta, err := c.job.EncodeShard(s)
	if err != nil {
		return nil, fmt.Errorf("store cache shard %s: %w", sk.Key(), err)
	}
	if err := storage.PutShard(ctx, c.store, sk, tensors, smeta); err != nil {
		return nil, fmt.Errorf("store cache shard %s: %w", sk.Key(), err)
	}
	c.mem[k] = s
	return s, nil
}
