package coordinator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/api"
)

// recorder is an Observer that writes each fact as a line.
type recorder struct {
	mu    sync.Mutex
	facts []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.facts = append(r.facts, fmt.Sprintf(format, args...))
}

func (r *recorder) NotifyState(s RunState)    { r.add("state %s", s) }
func (r *recorder) NotifyJoin(j MemberJoined) { r.add("join %s", j.ID) }
func (r *recorder) NotifyLeave(l MemberLeft)  { r.add("leave %s", l.ID) }
func (r *recorder) NotifyPlan(p Plan)         { r.add("plan %d %s", p.Generation, p.Kind) }
func (r *recorder) NotifyCommit(c CommitRecorded) {
	r.add("commit %s at %v by %s, %d bytes", c.Checkpoint, c.Pos, c.Trainer, c.Bytes)
}
func (r *recorder) NotifyProgress(p ProgressAccepted) {
	r.add("progress %s at %v loss %g steps %d", p.ID, p.Pos, p.Loss, p.Steps)
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.facts...)
}

// has reports whether a fact starting with prefix was seen, and where.
func (r *recorder) has(prefix string) (int, bool) {
	for i, f := range r.seen() {
		if strings.HasPrefix(f, prefix) {
			return i, true
		}
	}
	return -1, false
}

// untilRun follows plans until a run plan, answering every pause.
func (f *fakeTrainer) untilRun(ps *planStream) *api.Plan {
	f.t.Helper()
	for {
		select {
		case p := <-ps.plans:
			switch p.Kind {
			case api.Plan_PAUSE:
				f.hold(p)
			case api.Plan_RUN:
				return p
			}
		case err := <-ps.err:
			f.t.Fatalf("%s: stream ended before a run plan: %v", f.id, err)
		case <-time.After(planWithin):
			f.t.Fatalf("%s: no run plan within %v", f.id, planWithin)
		}
	}
}

func (f *fakeTrainer) progress(gen uint64, pos Position, loss float64, steps int64) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	if _, err := f.client.Report(ctx, &api.Report{TrainerId: f.id, Generation: gen, Kind: api.Report_PROGRESS, HasState: true,
		Position: api.NewPosition(pos.Phase, pos.Step), Loss: loss, SamplesPerSec: 500, Steps: steps,
		StepSeconds: 0.01 * float64(steps), AllreduceSeconds: 0.002 * float64(steps), AllreduceBytes: 1000 * steps}); err != nil {
		f.t.Fatalf("report progress: %v", err)
	}
}

// TestObserverFollowsTheService runs two fake trainers through a
// coordinator with an Observer: it is told the joins, each plan once, the
// accepted progress in canonical form (an impossible report is not a
// fact), the commits with their sizes and the member that leaves, in the
// machine's order; OnCommit sees the commits, and metrics.jsonl holds
// every accepted report and commit.
func TestObserverFollowsTheService(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	store := openStore(t)
	opts := serverOptions(store, log)
	obs := &recorder{}
	opts.MinWorkers, opts.Observer, opts.Method = 2, obs, "dsb"
	opts.PhaseNames = []string{"ipf 1 backward", "ipf 1 forward"}
	var mu sync.Mutex
	var hooked []Position
	opts.OnCommit = func(_ context.Context, _ string, pos Position) {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, pos)
	}
	c := startServer(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t1, t2 := newFakeTrainer(t, c, "t1", log), newFakeTrainer(t, c, "t2", log)
	ps1, ps2 := t1.follow(t1.hello()), t2.follow(t2.hello())
	var run1, run2 *api.Plan
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); run1 = t1.untilRun(ps1) }()
	go func() { defer wg.Done(); run2 = t2.untilRun(ps2) }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if run1.Generation != run2.Generation {
		t.Fatalf("run plans of generations %d and %d", run1.Generation, run2.Generation)
	}
	gen := run1.Generation

	t1.progress(gen, Position{Phase: 0, Step: 4}, 1.5, 4)
	t2.progress(gen, Position{Phase: 0, Step: 4}, 1.5, 4)
	req := checkpointAt(t, store, "t1", gen, Position{Phase: 0, Step: 5})
	req.Bytes, req.WriteSeconds = 1234, 0.05
	if _, err := t1.client.Commit(ctx, req); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// A report from past the end of the run is no fact.
	t1.progress(gen, Position{Phase: 7, Step: 0}, 9, 1)
	if _, ok := obs.has("progress t1 at phase 7"); ok {
		t.Error("an impossible report reached the observer")
	}
	if _, ok := obs.has(fmt.Sprintf("commit %s at phase 0 step 5 by t1, 1234 bytes", req.Checkpoint)); !ok {
		t.Errorf("commit not observed: %q", obs.seen())
	}

	// The phase ends: the last report of phase 0 arrives at {1, 0}.
	t1.progress(gen, Position{Phase: 1, Step: 0}, 1.25, 6)
	t2.progress(gen, Position{Phase: 1, Step: 0}, 1.25, 6)
	end := checkpointAt(t, store, "t1", gen, Position{Phase: 1, Step: 0})
	if _, err := t1.client.Commit(ctx, end); err != nil {
		t.Fatalf("phase-end commit: %v", err)
	}
	// {1, 0} is the canonical form of the finished phase 0.
	if _, ok := obs.has("progress t2 at phase 1 step 0 loss 1.25 steps 6"); !ok {
		t.Errorf("phase-end progress not observed: %q", obs.seen())
	}

	// t2 leaves.
	ps2.stop()
	deadline := time.Now().Add(planWithin)
	for {
		if _, ok := obs.has("leave t2"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("t2's leaving not observed: %q", obs.seen())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// OnCommit saw the phase-end commit (maybe not the first: only the
	// newest waits while a call runs).
	deadline = time.Now().Add(planWithin)
	for {
		mu.Lock()
		n := len(hooked)
		last := Position{}
		if n > 0 {
			last = hooked[n-1]
		}
		mu.Unlock()
		if last == (Position{Phase: 1, Step: 0}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnCommit calls end at %v, want 1:0", last)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ps1.stop()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Joins come before the first run plan; each plan generation once.
	facts := obs.seen()
	j1, _ := obs.has("join t1")
	j2, _ := obs.has("join t2")
	r, _ := obs.has(fmt.Sprintf("plan %d run", gen))
	if j1 < 0 || j2 < 0 || r < 0 || j1 > r || j2 > r {
		t.Errorf("joins at %d and %d, run plan at %d: %q", j1, j2, r, facts)
	}
	plans := map[string]int{}
	for _, f := range facts {
		if strings.HasPrefix(f, "plan ") {
			plans[f]++
		}
	}
	for p, n := range plans {
		if n != 1 {
			t.Errorf("%q observed %d times", p, n)
		}
	}
	if facts[0] != "state waiting" {
		t.Errorf("first fact %q, want the initial state", facts[0])
	}
	recs, err := ReadMetrics(ctx, store, testRun)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range recs {
		counts[r.Kind]++
	}
	if counts[RecordRun] != 1 || counts[RecordProgress] != 4 || counts[RecordCheckpoint] != 2 {
		t.Fatalf("metrics.jsonl holds %v, want 1 run, 4 progress, 2 checkpoint records", counts)
	}
	if r := recs[0]; r.Kind != RecordRun || r.StepsPerPhase != 10 || len(r.PhaseNames) != 2 || r.Method != "dsb" {
		t.Errorf("run record %+v", r)
	}
	for _, r := range recs {
		switch {
		case r.Kind == RecordProgress && r.Loss != nil && *r.Loss == 1.25:
			// The report at {1, 0} closes phase 0.
			if r.Phase != 0 || r.Step != 10 || r.Steps != 6 || r.AllReduceBytes != 6000 {
				t.Errorf("phase-end progress record %+v, want phase 0 step 10", r)
			}
		case r.Kind == RecordCheckpoint && r.Checkpoint == req.Checkpoint:
			if r.Bytes != 1234 || r.Seconds < 0.05 || r.Phase != 0 || r.Step != 5 {
				t.Errorf("checkpoint record %+v", r)
			}
		}
	}
}
