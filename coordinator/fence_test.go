package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/storage"
)

// faultStore is a store whose writes fail while blocked, as a file store
// made read-only does; reads go on working.
type faultStore struct {
	storage.Store
	blocked atomic.Bool
	failed  atomic.Int64
}

func (f *faultStore) check(op, key string) error {
	if !f.blocked.Load() {
		return nil
	}
	f.failed.Add(1)
	return fmt.Errorf("%s %s: read-only file system", op, key)
}

func (f *faultStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := f.check("put", key); err != nil {
		return err
	}
	return f.Store.Put(ctx, key, r, size)
}

func (f *faultStore) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := f.check("put", key); err != nil {
		return err
	}
	return f.Store.PutIfAbsent(ctx, key, r, size)
}

func (f *faultStore) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, version string) error {
	if err := f.check("put", key); err != nil {
		return err
	}
	return f.Store.PutIfMatch(ctx, key, r, size, version)
}

func (f *faultStore) Delete(ctx context.Context, key string) error {
	if err := f.check("delete", key); err != nil {
		return err
	}
	return f.Store.Delete(ctx, key)
}

// startOwned starts a coordinator that the test closes, ignoring the
// error of a lease that is no longer its own.
func startOwned(t *testing.T, opts Options) *Coordinator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start coordinator: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// cutOff runs a coordinator with one fake trainer to a first commit, then
// makes its storage unwritable until the coordinator loses its lease,
// which pauses the trainer at once, saying why.
func cutOff(t *testing.T) (raw storage.Store, fs *faultStore, c1 *Coordinator, t1 *fakeTrainer, ps *planStream, run *api.Plan, first string) {
	log := testLogger(t)
	raw = openStore(t)
	fs = &faultStore{Store: raw}
	opts := serverOptions(fs, log)
	opts.LeaseTTL = time.Second
	c1 = startOwned(t, opts)
	t1 = newFakeTrainer(t, c1, "t1", log)
	ps = t1.follow(t1.hello())
	_, run = t1.runPlan(ps)
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	req := checkpointAt(t, raw, "t1", run.Generation, Position{Phase: 0, Step: 5})
	if _, err := t1.client.Commit(ctx, req); err != nil {
		t.Fatalf("commit: %v", err)
	}
	first = req.Checkpoint

	fs.blocked.Store(true)
	cut := time.Now()
	pause := ps.next(api.Plan_PAUSE)
	t.Logf("paused %s after storage went read-only: %s", time.Since(cut).Round(time.Millisecond), pause.Reason)
	if !strings.Contains(pause.Reason, "lost the run's lease") {
		t.Errorf("pause reason %q does not say the lease was lost", pause.Reason)
	}
	// Nothing is committed while cut off, whatever the trainer asks.
	r := checkpointAt(t, raw, "t1", run.Generation, Position{Phase: 0, Step: 7})
	_, err := t1.client.Commit(ctx, r)
	wantCode(t, "commit while cut off", err, codes.FailedPrecondition, "suspended")
	return raw, fs, c1, t1, ps, run, first
}

// TestSplitBrainNewHolderWins: storage unwritable past the TTL, a second
// coordinator takes the run over, then the first one's storage comes
// back. The first commits nothing more and exits naming the new holder;
// the new one resumes from the last committed checkpoint and commits.
func TestSplitBrainNewHolderWins(t *testing.T) {
	checkGoroutines(t)
	raw, fs, c1, t1, _, run, first := cutOff(t)
	log := testLogger(t)
	opts2 := serverOptions(raw, log)
	opts2.LeaseTTL = time.Second
	c2 := startOwned(t, opts2)
	fs.blocked.Store(false)

	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	began := time.Now()
	err := c1.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), c2.GRPCAddr()) || !errors.Is(err, storage.ErrLeaseHeld) {
		t.Fatalf("first coordinator: Wait = %v, want it to stop naming the holder at %s", err, c2.GRPCAddr())
	}
	t.Logf("first coordinator stopped %s after storage came back: %v", time.Since(began).Round(time.Millisecond), err)
	r := checkpointAt(t, raw, "t1", run.Generation, Position{Phase: 0, Step: 8})
	if _, err := t1.client.Commit(ctx, r); err == nil {
		t.Fatal("the deposed coordinator committed")
	}
	if got := latest(t, raw); got != first {
		t.Fatalf("latest %s, want %s: the deposed coordinator's writes are visible", got, first)
	}

	// The trainer follows the new holder, which resumes from LATEST.
	t2 := newFakeTrainer(t, c2, "t1b", log)
	ps2 := t2.follow(t2.hello())
	_, run2 := t2.runPlan(ps2)
	if run2.Source != api.Plan_CHECKPOINT || run2.Checkpoint != first {
		t.Fatalf("new holder's plan: source %v checkpoint %q, want CHECKPOINT %s", run2.Source, run2.Checkpoint, first)
	}
	req := checkpointAt(t, raw, "t1b", run2.Generation, Position{Phase: 0, Step: 9})
	if _, err := t2.client.Commit(ctx, req); err != nil {
		t.Fatalf("new holder's commit: %v", err)
	}
	if got := latest(t, raw); got != req.Checkpoint {
		t.Fatalf("latest %s, want the new holder's %s", got, req.Checkpoint)
	}
	lease, err := storage.ReadLease(ctx, raw, testRun)
	if err != nil || lease.Generation != 2 || !strings.Contains(lease.Holder, c2.GRPCAddr()) {
		t.Errorf("lease %+v (%v), want generation 2 held by %s", lease, err, c2.GRPCAddr())
	}
	ps2.stop()
}

// TestSplitBrainOldHolderRetakes: storage comes back before anyone else
// took the run over: the coordinator takes its lease back under a new
// generation and the run resumes; a second coordinator is refused,
// naming it.
func TestSplitBrainOldHolderRetakes(t *testing.T) {
	checkGoroutines(t)
	raw, fs, c1, t1, ps, _, first := cutOff(t)
	fs.blocked.Store(false)
	pause := ps.next(api.Plan_PAUSE)
	if !strings.Contains(pause.Reason, "took the run's lease back") {
		t.Errorf("pause after the retake: reason %q", pause.Reason)
	}
	t1.hold(pause)
	run := ps.next(api.Plan_RUN)
	if run.Source != api.Plan_CHECKPOINT || run.Checkpoint != first {
		t.Fatalf("plan after the retake: source %v checkpoint %q, want CHECKPOINT %s", run.Source, run.Checkpoint, first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	req := checkpointAt(t, raw, "t1", run.Generation, Position{Phase: 0, Step: 9})
	if _, err := t1.client.Commit(ctx, req); err != nil {
		t.Fatalf("commit after the retake: %v", err)
	}
	if got := latest(t, raw); got != req.Checkpoint {
		t.Fatalf("latest %s, want %s", got, req.Checkpoint)
	}
	opts2 := serverOptions(raw, testLogger(t))
	if c2, err := Start(ctx, opts2); err == nil {
		_ = c2.Close()
		t.Fatal("a second coordinator started beside the one that took its lease back")
	} else if !errors.Is(err, storage.ErrLeaseHeld) || !strings.Contains(err.Error(), c1.GRPCAddr()) {
		t.Errorf("second coordinator: %v, want ErrLeaseHeld naming %s", err, c1.GRPCAddr())
	}
	if lease, err := storage.ReadLease(ctx, raw, testRun); err != nil || lease.Generation != 2 {
		t.Errorf("lease %+v (%v), want generation 2 after the retake", lease, err)
	}
	ps.stop()
}

// TestPhaseEndCommitRetried: a phase-end commit that fails once (storage
// refuses the manifest) is answered Unavailable, so the trainer retries;
// the retry commits the phase, and only then is the phase done.
func TestPhaseEndCommitRetried(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	raw := openStore(t)
	fs := &faultStore{Store: raw}
	c := startOwned(t, serverOptions(fs, log))
	t1 := newFakeTrainer(t, c, "t1", log)
	ps := t1.follow(t1.hello())
	_, run := t1.runPlan(ps)
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	req := checkpointAt(t, raw, "t1", run.Generation, Position{Phase: 1, Step: 0})
	fs.blocked.Store(true)
	_, err := t1.client.Commit(ctx, req)
	wantCode(t, "phase-end commit with storage failing", err, codes.Unavailable, "read-only")
	fs.blocked.Store(false)
	if cm, _ := c.Committed(ctx); cm.Pos != (Position{}) {
		t.Fatalf("committed %v after a failed commit", cm.Pos)
	}
	if _, err := t1.client.Commit(ctx, req); err != nil {
		t.Fatalf("retried phase-end commit: %v", err)
	}
	if cm, _ := c.Committed(ctx); cm.Pos != (Position{Phase: 1, Step: 0}) || cm.Checkpoint != req.Checkpoint {
		t.Fatalf("committed %+v, want %s at 1:0", cm, req.Checkpoint)
	}
	if got := latest(t, raw); got != req.Checkpoint {
		t.Fatalf("latest %s, want the phase end %s", got, req.Checkpoint)
	}
	ps.stop()
}

// TestFollowNamesDifferingFields: a trainer of another config is told
// which fields differ, not only the hashes.
func TestFollowNamesDifferingFields(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	ours, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := config.Default()
	theirs.Seed++
	opts := serverOptions(openStore(t), log)
	opts.ConfigFields = ours.FieldDigests()
	c := startServer(t, opts)
	f := newFakeTrainer(t, c, "t1", log)
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	h := f.hello()
	h.ConfigHash, h.ConfigFields = "other-hash", theirs.FieldDigests()
	stream, err := f.client.Follow(ctx, h)
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "follow", err, codes.FailedPrecondition, "config differs from the coordinator's in seed (hash other-hash", testHash)
}

// TestStoreOutagePausesUntilStorageAnswers: rank 0 reporting that storage
// refused its checkpoint for longer than it tolerates pauses the run,
// saying why; the run resumes by itself once a write (the lease's
// renewal) succeeds again.
func TestStoreOutagePausesUntilStorageAnswers(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	fs := &faultStore{Store: openStore(t)}
	opts := serverOptions(fs, log)
	opts.LeaseTTL = 3 * time.Second
	c := startOwned(t, opts)
	t1 := newFakeTrainer(t, c, "t1", log)
	ps := t1.follow(t1.hello())
	_, run := t1.runPlan(ps)
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	fs.blocked.Store(true)
	if _, err := t1.client.Report(ctx, &api.Report{TrainerId: "t1", Generation: run.Generation, Kind: api.Report_STORE_OUTAGE,
		Error: "checkpoint at phase 0 step 5: storage failed for 1m0s (40 tries): read-only file system"}); err != nil {
		t.Fatalf("report: %v", err)
	}
	pause := ps.next(api.Plan_PAUSE)
	if !strings.Contains(pause.Reason, "storage unavailable (reported by t1)") || !strings.Contains(pause.Reason, "read-only") {
		t.Errorf("pause reason %q does not say why", pause.Reason)
	}
	t1.hold(pause)
	time.Sleep(time.Second)
	select {
	case p := <-ps.plans:
		t.Fatalf("a %v plan while storage is out", p.Kind)
	default:
	}
	fs.blocked.Store(false)
	resumed := ps.next(api.Plan_PAUSE)
	if !strings.Contains(resumed.Reason, "storage answers again") {
		t.Errorf("pause reason %q after storage came back", resumed.Reason)
	}
	t1.hold(resumed)
	ps.next(api.Plan_RUN)
	ps.stop()
}
