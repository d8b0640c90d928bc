// Package storage owns everything sbtrain keeps outside a process: the
// object store (s3:// through minio-go, file:// on local disk), the
// safetensors encoding of tensors, the checkpoint format and its commit
// protocol (blobs, then a checksummed manifest, then the LATEST pointer), and
// the cache-shard format, and the run lease with its fencing (each lease
// generation fences the run, and a deposed holder can commit nothing: see
// AcquireLease and Checkpoints.Fence). A reader trusts a checkpoint
// only after its manifest and every blob verify; partial writes are never
// visible, and nothing it cannot read is ever garbage-collected. Every
// decoder of stored bytes checks declared sizes against the input and
// documented maxima before it allocates.
//
// It imports nothing else of the project.
package storage
