package trainer

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
)

func fromAPI(p *api.Position) job.Position {
	return job.Position{Phase: int(p.GetPhase()), Step: p.GetStep()}
}

func toAPI(p job.Position) *api.Position {
	return &api.Position{Phase: int32(p.Phase), Step: p.Step}
}

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
		Deadline: t.opts.RingDeadline, Endpoint: t.ep, Logger: t.log,
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

// loadCheckpoint reads the latest verified checkpoint, which must be the
// one the plan names.
func (t *Trainer) loadCheckpoint(ctx context.Context, name string) (*job.State, error) {
	l, err := t.ckpts.LoadLatest(ctx)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", name, err)
	}
	id := storage.ID{Seq: l.Manifest.Seq, Phase: l.Manifest.Phase, Step: l.Manifest.Step}
	if id.String() != name {
		return nil, fmt.Errorf("load checkpoint %s: the latest verified checkpoint is %s", name, id)
	}
	b, ok := l.Blobs[job.SnapshotBlob]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no blob %s", name, job.SnapshotBlob)
	}
	st, err := t.opts.Job.Decode(b, "checkpoint "+name+"/"+job.SnapshotBlob)
	if err != nil {
		return nil, err
	}
	t.log.Info("loaded checkpoint", "checkpoint", name, "at", st.Position().String())
	return st, nil
}

// steps is the step loop of one generation.
func (t *Trainer) steps(ctx context.Context, client api.ControlClient, ring *allreduce.Ring, plan *api.Plan, owned []int) error {
	st := t.state
	every := plan.CheckpointEvery
	lastReport := time.Now()
	// Sums over the steps since the last progress report.
	var stepSec, reduceSec float64
	var samples, steps int
	var reduceBytes int64
	var loss float64
	if st.Done() && ring.Rank() == 0 {
		// The run ended before the final checkpoint was committed.
		return t.writeCheckpoint(ctx, client, plan)
	}
	for !st.Done() {
		t0 := time.Now()
		buf, err := st.Gradient(ctx, owned, t.shards)
		if err != nil {
			return fmt.Errorf("gradient at %v: %w", st.Position(), err)
		}
		t1 := time.Now()
		if err := ring.AllReduceSum(ctx, buf); err != nil {
			return fmt.Errorf("all-reduce at %v: %w", st.Position(), err)
		}
		t2 := time.Now()
		if loss, err = st.Apply(buf); err != nil {
			return err
		}
		stepSec += time.Since(t0).Seconds()
		reduceSec += t2.Sub(t1).Seconds()
		reduceBytes += ring.LastStats().BytesSent
		samples += t.opts.Job.Batch()
		steps++
		if t.opts.AfterStep != nil {
			t.opts.AfterStep(plan.Generation, st)
		}
		pos := st.Position()
		if ring.Rank() == 0 && (pos.Step == 0 || every > 0 && pos.Step%every == 0) {
			if err := t.writeCheckpoint(ctx, client, plan); err != nil {
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
