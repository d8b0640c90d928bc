package job

import (
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

// EncodeShard turns a cache shard into the tensors and metadata that
// storage.PutShard writes.
func (j *Job) EncodeShard(s method.Shard) ([]storage.Tensor, map[string]string, error) {
	return j.method.EncodeShard(s)
}

// DecodeShard rebuilds the shard stored under key and checks it against
// this run (shape, phase, generation, index), so a shard of another
// config is rejected rather than trained on.
func (j *Job) DecodeShard(key ShardKey, ts []storage.Tensor, meta map[string]string) (method.Shard, error) {
	return j.method.DecodeShard(key, ts, meta)
}
