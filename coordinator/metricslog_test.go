package coordinator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/storage"
)

// flakyStore fails every Put while fail is set.
type flakyStore struct {
	storage.Store
	fail atomic.Bool
}

func (s *flakyStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if s.fail.Load() {
		return errors.New("store down")
	}
	return s.Store.Put(ctx, key, r, size)
}

func progressRecord(step int64) MetricsRecord {
	loss := 1 / float64(step)
	return MetricsRecord{Time: time.Unix(step, 0).UTC(), Kind: RecordProgress, Trainer: "t1", Phase: 0, Step: step, Loss: &loss,
		SamplesPerSec: 100, Steps: 1, StepSeconds: 0.01}
}

// The log survives chunk rotation, a failing store and a restart, in order.
func TestMetricsLogChunks(t *testing.T) {
	ctx := context.Background()
	store := &flakyStore{Store: openStore(t)}
	quiet := slog.New(slog.DiscardHandler)
	l, err := openMetricsLog(ctx, store, testRun, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// About 200 bytes a line: 12000 lines fill two chunks and start a third.
	const n = 12000
	store.fail.Store(true)
	for s := int64(1); s <= n/2; s++ {
		l.add(progressRecord(s))
	}
	if err := l.flush(ctx); err == nil {
		t.Fatal("flush to a failing store succeeded")
	}
	store.fail.Store(false)
	for s := int64(n/2 + 1); s <= n; s++ {
		l.add(progressRecord(s))
	}
	if err := l.flush(ctx); err != nil {
		t.Fatal(err)
	}
	objs, err := store.List(ctx, MetricsPrefix(testRun))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 2 {
		t.Fatalf("%d chunks, want the log split over several", len(objs))
	}
	for _, o := range objs {
		if o.Size > metricsChunkBytes {
			t.Errorf("chunk %s has %d bytes, over %d", o.Key, o.Size, metricsChunkBytes)
		}
	}
	// A restarted coordinator appends after the newest chunk.
	l2, err := openMetricsLog(ctx, store, testRun, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(objs) + 1; l2.seq != want {
		t.Errorf("restart starts chunk %d, want %d", l2.seq, want)
	}
	nan := 0.0
	nan /= nan
	r := progressRecord(n + 1)
	r.Loss = &nan
	l2.add(r)
	if err := l2.flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Stray objects under the prefix are not chunks.
	if err := store.Put(ctx, MetricsPrefix(testRun)+"notes.txt", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadMetrics(ctx, store, testRun)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n+1 {
		t.Fatalf("read %d records, want %d", len(recs), n+1)
	}
	for i, r := range recs {
		if r.Step != int64(i+1) {
			t.Fatalf("record %d is step %d: out of order", i, r.Step)
		}
	}
	if last := recs[n]; last.Loss != nil {
		t.Errorf("a NaN loss was written as %v", *last.Loss)
	}
}

// Full chunks that storage never takes are dropped beyond a bound, so a
// long outage cannot exhaust memory.
func TestMetricsLogMemoryIsBounded(t *testing.T) {
	store := &flakyStore{Store: openStore(t)}
	store.fail.Store(true)
	l, err := openMetricsLog(context.Background(), store, testRun, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for s := int64(1); s <= 60000; s++ {
		l.add(progressRecord(s))
	}
	held := len(l.buf)
	for _, c := range l.sealed {
		held += len(c.data)
	}
	if len(l.sealed) > metricsMaxSealed || held > (metricsMaxSealed+1)*metricsChunkBytes {
		t.Fatalf("%d sealed chunks, %d bytes held", len(l.sealed), held)
	}
}
