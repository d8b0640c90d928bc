package trainer

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
)

func fromAPI(p *api.Position) job.Position { return p.ToPosition() }

func toAPI(p job.Position) *api.Position { return api.FromPosition(p) }

// runPlan executes one RUN plan. It returns the plan that interrupted it
// (nil when the generation ended on its own, e.g. after the final
// checkpoint), errStreamLost when the coordinator went away, or the
// failure of the generation.
func (t *Trainer) runPlan(ctx context.Context, client api.ControlClient, plan *api.Plan, ps *planStream) (*api.Plan, error) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &generationWatch{}
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		t.watch(gctx, ps, cancel, w, stop)
	}()
	err := t.generation(gctx, client, plan)
	close(stop)
	<-watched
	w.mu.Lock()
	next, lost := w.next, w.lostErr
	w.mu.Unlock()
	switch {
	case lost != nil:
		return nil, fmt.Errorf("%w: %v", errStreamLost, lost)
	case next != nil:
		// A newer plan supersedes this generation; its abort is not a failure.
		return next, nil
	case err != nil:
		return nil, err
	}
	// The generation ended (the run is done here): wait for the next plan.
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-ps.err:
		return nil, fmt.Errorf("%w: %v", errStreamLost, err)
	case p := <-ps.latest:
		return p, nil
	}
}

// generation forms the ring, obtains the start state and steps to the end.
func (t *Trainer) generation(ctx context.Context, client api.ControlClient, plan *api.Plan) error {
	rank := -1
	members := make([]allreduce.Member, len(plan.Members))
	var owned []int
	for i, m := range plan.Members {
		members[i] = allreduce.Member{ID: m.TrainerId, Addr: m.RingAddr}
		if m.TrainerId == t.opts.ID {
			rank = i
			for _, s := range m.Shards {
				owned = append(owned, int(s))
			}
		}
	}
	if rank < 0 {
		return fmt.Errorf("plan of generation %d does not name this trainer", plan.Generation)
	}
	ring, err := allreduce.NewRing(ctx, allreduce.Config{
		Run: plan.Run, Rank: rank, Members: members, Generation: plan.Generation,
		Deadline: t.opts.RingDeadline, SkewLimit: t.opts.RingSkewLimit, Endpoint: t.ep, Logger: t.log,
	})
	if err != nil {
		return fmt.Errorf("form ring of generation %d: %w", plan.Generation, err)
	}
	defer ring.Close()
	start := fromAPI(plan.Start)
	if err := t.obtainState(ctx, ring, plan, start); err != nil {
		return err
	}
	t.log.Info("training", "generation", plan.Generation, "rank", rank, "of", len(members),
		"shards", owned, "from", start.String())
	return t.steps(ctx, client, ring, plan, owned)
}

// obtainState makes t.state the state at start, from where the plan says.
func (t *Trainer) obtainState(ctx context.Context, ring *allreduce.Ring, plan *api.Plan, start job.Position) error {
	j := t.opts.Job
	switch plan.Source {
	case api.Plan_INIT:
		st, err := j.Init()
		if err != nil {
			return err
		}
		t.state = st
	case api.Plan_CHECKPOINT:
		st, err := t.loadCheckpoint(ctx, plan.Checkpoint)
		if err != nil {
			return err
		}
		t.state = st
	case api.Plan_PEER:
		var blob []byte
		if ring.Rank() == int(plan.SourceRank) {
			if t.state == nil || t.state.Position() != start {
				return fmt.Errorf("plan of generation %d makes this trainer the source of the state at %v, but it holds %v",
					plan.Generation, start, t.heldString())
			}
			var err error
			if blob, err = t.state.Encode(); err != nil {
				return err
			}
		}
		var size [8]byte
		binary.LittleEndian.PutUint64(size[:], uint64(len(blob)))
		if err := ring.BroadcastBytes(ctx, int(plan.SourceRank), size[:]); err != nil {
			return fmt.Errorf("receive state size: %w", err)
		}
		n := binary.LittleEndian.Uint64(size[:])
		if n > 1<<34 {
			return fmt.Errorf("state of %d bytes from rank %d: implausibly large", n, plan.SourceRank)
		}
		if blob == nil {
			blob = make([]byte, n)
		}
		if err := ring.BroadcastBytes(ctx, int(plan.SourceRank), blob); err != nil {
			return fmt.Errorf("receive state: %w", err)
		}
		if ring.Rank() != int(plan.SourceRank) {
			st, err := j.Decode(blob, fmt.Sprintf("state from rank %d", plan.SourceRank))
			if err != nil {
				return err
			}
			t.state = st
		}
	default:
		return fmt.Errorf("plan of generation %d has unknown state source %v", plan.Generation, plan.Source)
	}
	if got := t.state.Position(); got != start {
		return fmt.Errorf("plan of generation %d starts at %v, the state obtained is at %v", plan.Generation, start, got)
	}
	return nil
}

func (t *Trainer) heldString() string {
	if t.state == nil {
		return "nothing"
	}
	return t.state.Position().String()
}

// loadCheckpoint reads the checkpoint the plan names: the coordinator's
// committed one, whatever else storage holds (a newer write of a deposed
// coordinator, say), so every trainer starts from the same state.
func (t *Trainer) loadCheckpoint(ctx context.Context, name string) (*job.State, error) {
	id, err := storage.ParseID(name)
	if err != nil {
		return nil, fmt.Errorf("plan names checkpoint %q: %w", name, err)
	}
	st, err := t.opts.Job.Load(ctx, t.ckpts, id)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", name, err)
	}
	t.log.Info("loaded checkpoint", "checkpoint", name, "at", st.Position().String())
	return st, nil
}

// steps is the step loop of one generation.
func (t *Trainer) steps(ctx context.Context, client api.ControlClient, ring *allreduce.Ring, plan *api.Plan, owned []int) error {
	st := t.state
	// The sums compute every shard on a one-thread BLAS; holding it for
	// the whole loop saves switching OpenBLAS's pool at every step.
	defer par.SingleThreadBLAS()()
	coll := &meteredRing{ring: ring}
	every := plan.CheckpointEvery
	lastReport := time.Now()
	// Sums over the steps since the last progress report.
	var stepSec, reduceSec float64
	var samples, steps int
	var reduceBytes int64
	var loss float64
	if plan.CommitStart {
		// The start is a phase end (or the end) whose commit was lost:
		// it is committed before anyone steps into the next phase.
		if err := t.checkpointBarrier(ctx, client, ring, plan); err != nil {
			return err
		}
	}
	for !st.Done() {
		t0 := time.Now()
		coll.sec, coll.bytes = 0, 0
		buf, err := st.Sum(ctx, owned, t.shards, coll)
		if err != nil {
			return fmt.Errorf("gradient at %v: %w", st.Position(), err)
		}
		if loss, err = st.Apply(buf); err != nil {
			return err
		}
		stepSec += time.Since(t0).Seconds()
		reduceSec += coll.sec
		reduceBytes += coll.bytes
		samples += t.opts.Job.Batch()
		steps++
		t.failures = 0
		t.backoff.Reset()
		if t.opts.AfterStep != nil {
			t.opts.AfterStep(plan.Generation, st)
		}
		pos := st.Position()
		if pos.Step == 0 || every > 0 && pos.Step%every == 0 {
			if err := t.checkpointBarrier(ctx, client, ring, plan); err != nil {
				return err
			}
		}
		if time.Since(lastReport) >= t.opts.ReportEvery || st.Done() {
			rep := &api.Report{TrainerId: t.opts.ID, Generation: plan.Generation, Kind: api.Report_PROGRESS,
				HasState: true, Position: toAPI(pos), Loss: loss,
				SamplesPerSec: float64(samples) / time.Since(lastReport).Seconds(),
				Steps:         int64(steps), StepSeconds: stepSec, AllreduceSeconds: reduceSec, AllreduceBytes: reduceBytes}
			if stepSec > 0 {
				rep.AllreduceFraction = reduceSec / stepSec
			}
			if err := t.report(ctx, client, rep); err != nil {
				return err
			}
			lastReport, stepSec, reduceSec, samples, steps, reduceBytes = time.Now(), 0, 0, 0, 0, 0
		}
	}
	return nil
}

// Checkpoint barrier: what rank 0 broadcasts while it checkpoints.
const (
	ckptTrying    byte = iota // still writing or retrying; keep waiting
	ckptCommitted             // committed: step on
	ckptFailed                // given up: the generation ends
)

// storeOutageError is a checkpoint that storage would not take for longer
// than Options.StoreOutage.
type storeOutageError struct{ err error }

func (e *storeOutageError) Error() string { return e.err.Error() }
func (e *storeOutageError) Unwrap() error { return e.err }

// checkpointBarrier is a barrier of every rank around rank 0's checkpoint: rank 0
// writes and commits it, retrying storage failures with backoff, and
// broadcasts how it stands at least every third of the ring deadline, so
// the others wait without blaming it; nobody steps on before the commit.
// A phase therefore never closes without its phase-end checkpoint.
func (t *Trainer) checkpointBarrier(ctx context.Context, client api.ControlClient, ring *allreduce.Ring, plan *api.Plan) error {
	var b [1]byte
	if ring.Rank() != 0 {
		for {
			if err := ring.BroadcastBytes(ctx, 0, b[:]); err != nil {
				return fmt.Errorf("wait for rank 0's checkpoint at %v: %w", t.state.Position(), err)
			}
			switch b[0] {
			case ckptCommitted:
				return nil
			case ckptFailed:
				return fmt.Errorf("rank 0 could not checkpoint at %v", t.state.Position())
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- t.commitRetrying(ctx, client, plan) }()
	alive := time.NewTicker(t.opts.RingDeadline / 3)
	defer alive.Stop()
	for {
		select {
		case err := <-done:
			b[0] = ckptCommitted
			if err != nil {
				b[0] = ckptFailed
			}
			if berr := ring.BroadcastBytes(ctx, 0, b[:]); berr != nil && err == nil {
				err = fmt.Errorf("tell the ring the checkpoint at %v is committed: %w", t.state.Position(), berr)
			}
			return err
		case <-alive.C:
			b[0] = ckptTrying
			if err := ring.BroadcastBytes(ctx, 0, b[:]); err != nil {
				// The generation is over; the writer ends with ctx.
				<-done
				return fmt.Errorf("keep the ring waiting for the checkpoint at %v: %w", t.state.Position(), err)
			}
		}
	}
}

// commitRetrying writes and commits the checkpoint of the current state,
// retrying with backoff while storage (or the coordinator's) fails, and
// gives up with a storeOutageError after Options.StoreOutage. A refusal
// by the coordinator ends it at once.
func (t *Trainer) commitRetrying(ctx context.Context, client api.ControlClient, plan *api.Plan) error {
	b := storage.Backoff{Base: 200 * time.Millisecond, Max: min(5*time.Second, t.opts.RingDeadline/3)}
	for {
		err := t.writeCheckpoint(ctx, client, plan)
		if err == nil {
			t.outage.Ended()
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if status.Code(err) == codes.FailedPrecondition {
			return err // refused: retrying would not change the answer
		}
		tries, lasted := t.outage.Failed(err)
		if lasted >= t.opts.StoreOutage {
			return &storeOutageError{fmt.Errorf("checkpoint at %v: storage failed for %s (%d tries): %w",
				t.state.Position(), lasted.Round(time.Second), tries, err)}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(b.Next()):
		}
	}
}

// writeCheckpoint stores the state's blob under a fresh checkpoint ID and
// asks the coordinator to commit it (the coordinator writes the manifest).
func (t *Trainer) writeCheckpoint(ctx context.Context, client api.ControlClient, plan *api.Plan) error {
	pos := t.state.Position()
	meta := t.opts.Job.CheckpointMeta(pos)
	began := time.Now()
	b, err := t.state.Encode()
	if err != nil {
		return err
	}
	id, err := t.ckpts.NextID(ctx, meta.Phase, meta.Step)
	if err != nil {
		return fmt.Errorf("checkpoint at %v: %w", pos, err)
	}
	ref, err := t.ckpts.PutBlob(ctx, id, job.SnapshotBlob, b)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", id, err)
	}
	written := time.Since(began)
	t.checkpoint++
	if t.opts.CrashAfterBlobs > 0 && t.checkpoint == t.opts.CrashAfterBlobs {
		// The whole process group: with `sbtrain local` that is every
		// process of the run, as when a machine loses power mid-write.
		t.log.Warn("fault injection: killing the process group between the blobs and the commit", "checkpoint", id.String())
		_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = client.Commit(cctx, &api.CommitRequest{
		TrainerId: t.opts.ID, Generation: plan.Generation, Position: toAPI(pos), Checkpoint: id.String(),
		Blobs: []*api.Blob{{Name: ref.Name, Key: ref.Key, Size: ref.Size, Sha256: ref.SHA256}},
		Phase: int32(meta.Phase), IpfIteration: int32(meta.IPFIteration), Direction: meta.Direction,
		Step: meta.Step, PhaseEnd: meta.PhaseEnd, Bytes: ref.Size, WriteSeconds: written.Seconds(),
	})
	if err != nil {
		return fmt.Errorf("commit checkpoint %s at %v: %w", id, pos, err)
	}
	t.log.Info("checkpoint committed", "checkpoint", id.String(), "at", pos.String())
	return nil
}

// meteredRing is the ring as a step's sum uses it, adding up the time
// and the bytes sent of its collectives (a max exchange and a sum).
type meteredRing struct {
	ring  *allreduce.Ring
	sec   float64
	bytes int64
}

func (m *meteredRing) AllReduceMaxInt64(ctx context.Context, buf []int64) error {
	return m.metered(func() error { return m.ring.AllReduceMaxInt64(ctx, buf) })
}

func (m *meteredRing) AllReduceSumInt64(ctx context.Context, buf []int64) error {
	return m.metered(func() error { return m.ring.AllReduceSumInt64(ctx, buf) })
}

func (m *meteredRing) metered(op func() error) error {
	t0 := time.Now()
	err := op()
	m.sec += time.Since(t0).Seconds()
	m.bytes += m.ring.LastStats().BytesSent
	return err
}
