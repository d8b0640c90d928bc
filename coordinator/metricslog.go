package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbtrain/sbtrain/storage"
)

// The run's metrics.jsonl lives in storage as numbered chunk objects,
// runs/<run>/metrics/<seq>.jsonl (seq zero-padded, so key order is time
// order); the log is their concatenation, one JSON object (a
// MetricsRecord) per line. Object stores cannot append, so the coordinator
// keeps only the chunk it is filling, rewrites that object at most every
// MetricsFlushEvery and at Close, and starts the next chunk once this one
// reaches metricsChunkBytes: memory stays bounded however long the run,
// and a restarted coordinator starts a chunk after the newest it finds.
const (
	// MetricsFlushEvery is the longest a record waits before it is in
	// storage (a crash loses at most this much).
	MetricsFlushEvery = 5 * time.Second
	metricsChunkBytes = 1 << 20
	// metricsMaxSealed bounds the full chunks waiting for their final
	// write while storage fails; beyond it the oldest are dropped.
	metricsMaxSealed = 4
)

// Kinds of MetricsRecord.
const (
	RecordRun        = "run"        // a coordinator started: the run's shape
	RecordProgress   = "progress"   // a trainer's progress report
	RecordCheckpoint = "checkpoint" // a committed checkpoint
)

// MetricsRecord is one line of a run's metrics.jsonl. Time is when the
// coordinator wrote it. A progress line's Phase and Step are those of the
// last step the report covers (Step 1..StepsPerPhase), so its Loss belongs
// there; a checkpoint line's are the run position it holds (a phase end is
// {next phase, 0}).
type MetricsRecord struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// run
	Run           string   `json:"run,omitempty"`
	Method        string   `json:"method,omitempty"`
	PhaseNames    []string `json:"phase_names,omitempty"`
	StepsPerPhase int64    `json:"steps_per_phase,omitempty"`
	// progress and checkpoint
	Trainer    string `json:"trainer,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	Phase      int    `json:"phase"`
	Step       int64  `json:"step"`
	// progress; Loss is absent when it was not finite.
	Loss             *float64 `json:"loss,omitempty"`
	SamplesPerSec    float64  `json:"samples_per_sec,omitempty"`
	Steps            int64    `json:"steps,omitempty"`
	StepSeconds      float64  `json:"step_seconds,omitempty"`
	AllReduceSeconds float64  `json:"allreduce_seconds,omitempty"`
	AllReduceBytes   int64    `json:"allreduce_bytes,omitempty"`
	// checkpoint
	Checkpoint string  `json:"checkpoint,omitempty"`
	Bytes      int64   `json:"bytes,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
}

// MetricsPrefix is the key prefix of run's metrics chunks.
func MetricsPrefix(run string) string { return storage.RunPrefix(run) + "metrics/" }

func metricsChunkKey(run string, seq int) string {
	return MetricsPrefix(run) + fmt.Sprintf("%08d.jsonl", seq)
}

// metricsChunkSeq parses the sequence number of a chunk key, and false for
// any other key.
func metricsChunkSeq(run, key string) (int, bool) {
	name, ok := strings.CutPrefix(key, MetricsPrefix(run))
	if !ok || strings.Contains(name, "/") {
		return 0, false
	}
	digits, ok := strings.CutSuffix(name, ".jsonl")
	if !ok || len(digits) != 8 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// metricsLog buffers records and writes them as chunk objects. add is
// called on the coordinator's loop; flush from its own goroutine and at
// Close.
type metricsLog struct {
	store storage.Store
	run   string
	log   *slog.Logger

	mu     sync.Mutex
	seq    int    // the chunk being filled
	buf    []byte // its whole content so far
	dirty  bool   // buf has lines not yet in storage
	sealed []chunk
	// flushMu makes flushes one at a time, so an older copy of a chunk
	// never overwrites a newer one.
	flushMu sync.Mutex
	// halted: the coordinator does not hold the run's lease, so another
	// may be writing the same chunks; records wait in memory.
	halted atomic.Bool
}

// halt stops (true) or restarts (false) writing to storage.
func (l *metricsLog) halt(on bool) { l.halted.Store(on) }

type chunk struct {
	key  string
	data []byte
}

// openMetricsLog starts a chunk after the newest one in storage.
func openMetricsLog(ctx context.Context, store storage.Store, run string, log *slog.Logger) (*metricsLog, error) {
	objs, err := store.List(ctx, MetricsPrefix(run))
	if err != nil {
		return nil, fmt.Errorf("list the metrics of run %s: %w", run, err)
	}
	seq := 1
	for _, o := range objs {
		if n, ok := metricsChunkSeq(run, o.Key); ok && n >= seq {
			seq = n + 1
		}
	}
	return &metricsLog{store: store, run: run, log: log, seq: seq}, nil
}

// add appends one record.
func (l *metricsLog) add(r MetricsRecord) {
	if r.Loss != nil && (math.IsNaN(*r.Loss) || math.IsInf(*r.Loss, 0)) {
		r.Loss = nil
	}
	for _, f := range []*float64{&r.SamplesPerSec, &r.StepSeconds, &r.AllReduceSeconds, &r.Seconds} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = 0
		}
	}
	line, err := json.Marshal(r)
	if err != nil {
		l.log.Warn("metrics record dropped", "kind", r.Kind, "err", err)
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 && len(l.buf)+len(line) > metricsChunkBytes {
		l.sealed = append(l.sealed, chunk{key: metricsChunkKey(l.run, l.seq), data: l.buf})
		if len(l.sealed) > metricsMaxSealed {
			l.log.Warn("metrics chunk dropped: storage is not keeping up", "key", l.sealed[0].key)
			l.sealed = l.sealed[1:]
		}
		l.seq++
		l.buf, l.dirty = nil, false
	}
	l.buf = append(l.buf, line...)
	l.dirty = true
}

// flush writes the full chunks still waiting and the current chunk if it
// changed. A failed write stays pending for the next flush.
func (l *metricsLog) flush(ctx context.Context) error {
	if l.halted.Load() {
		return nil
	}
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	todo := append([]chunk(nil), l.sealed...)
	var cur *chunk
	if l.dirty {
		// buf is only ever appended to (or replaced), so this prefix is
		// stable without a copy.
		cur = &chunk{key: metricsChunkKey(l.run, l.seq), data: l.buf[:len(l.buf):len(l.buf)]}
		l.dirty = false
	}
	l.mu.Unlock()
	for i, c := range todo {
		if err := l.store.Put(ctx, c.key, bytes.NewReader(c.data), int64(len(c.data))); err != nil {
			l.redirty(cur)
			return fmt.Errorf("write metrics %s: %w", c.key, err)
		}
		l.mu.Lock()
		// Drop what was written; add may have sealed more meanwhile.
		if len(l.sealed) > 0 && l.sealed[0].key == todo[i].key {
			l.sealed = l.sealed[1:]
		}
		l.mu.Unlock()
	}
	if cur == nil {
		return nil
	}
	if err := l.store.Put(ctx, cur.key, bytes.NewReader(cur.data), int64(len(cur.data))); err != nil {
		l.redirty(cur)
		return fmt.Errorf("write metrics %s: %w", cur.key, err)
	}
	return nil
}

// redirty marks the current chunk unwritten again after a failed flush,
// unless it has been sealed since (then the sealed copy is pending).
func (l *metricsLog) redirty(cur *chunk) {
	if cur == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if metricsChunkKey(l.run, l.seq) == cur.key {
		l.dirty = true
	}
}

// keepFlushing flushes every MetricsFlushEvery until ctx ends.
func (l *metricsLog) keepFlushing(ctx context.Context) {
	t := time.NewTicker(MetricsFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.flush(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("metrics.jsonl", "err", err)
			}
		}
	}
}

// ReadMetrics reads run's metrics.jsonl: every chunk in order, one record
// per line. A line that does not parse (the tail of a chunk cut short)
// is skipped.
func ReadMetrics(ctx context.Context, store storage.Store, run string) ([]MetricsRecord, error) {
	objs, err := store.List(ctx, MetricsPrefix(run))
	if err != nil {
		return nil, fmt.Errorf("list the metrics of run %s: %w", run, err)
	}
	var out []MetricsRecord
	for _, o := range objs {
		if _, ok := metricsChunkSeq(run, o.Key); !ok {
			continue
		}
		if err := readChunk(ctx, store, o.Key, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readChunk(ctx context.Context, store storage.Store, key string, out *[]MetricsRecord) error {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r MetricsRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		*out = append(*out, r)
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		return fmt.Errorf("read %s: %w", key, err)
	}
	return nil
}
