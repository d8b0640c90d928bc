package coordinator

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testConfig is a small run: 4 phases of 100 steps, 8 shards, 3 workers.
func testConfig() Config {
	return Config{
		Run: "run-a", Phases: 4, StepsPerPhase: 100, Shards: 8,
		MinWorkers: 3, CheckpointEvery: 25, FirstGeneration: 1000,
	}
}

// harness drives a Machine and keeps every output it gave.
type harness struct {
	t   *testing.T
	m   *Machine
	all []Output
}

func newHarness(t *testing.T, cfg Config, c Committed) *harness {
	t.Helper()
	m, err := NewMachine(cfg, c)
	if err != nil {
		t.Fatalf("NewMachine: %v", err)
	}
	return &harness{t: t, m: m}
}

// step feeds events in order and returns the outputs of all of them.
func (h *harness) step(events ...Event) []Output {
	var outs []Output
	for _, e := range events {
		outs = append(outs, h.m.Step(e)...)
	}
	h.all = append(h.all, outs...)
	return outs
}

// up brings members up with no state.
func (h *harness) up(ids ...string) []Output {
	var outs []Output
	for _, id := range ids {
		outs = append(outs, h.step(MemberUp{ID: id, RingAddr: id + ":7000"})...)
	}
	return outs
}

// holdAll answers the current pause for every member: with state at the
// position given in held, without state otherwise.
func (h *harness) holdAll(held map[string]Position) []Output {
	h.t.Helper()
	p, ok := h.m.Plan()
	if !ok || p.Kind != KindPause {
		h.t.Fatalf("holdAll: current plan is %v, not a pause", p.Kind)
	}
	var outs []Output
	for _, pm := range p.Members {
		pos, has := held[pm.ID]
		outs = append(outs, h.step(Holding{ID: pm.ID, Generation: p.Generation, HasState: has, Held: pos})...)
	}
	return outs
}

// running brings ids up and through the first pause to a fresh run.
func (h *harness) running(ids ...string) Plan {
	h.t.Helper()
	h.up(ids...)
	return onePlan(h.t, h.holdAll(nil), KindRun)
}

func publishes(outs []Output) []Publish {
	var ps []Publish
	for _, o := range outs {
		if p, ok := o.(Publish); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// onePlan returns the only plan published in outs, which must be of kind.
func onePlan(t *testing.T, outs []Output, kind PlanKind) Plan {
	t.Helper()
	ps := publishes(outs)
	if len(ps) != 1 {
		t.Fatalf("published %d plans, want 1: %+v", len(ps), outs)
	}
	p := ps[0].Plan
	if p.Kind != kind {
		t.Fatalf("published a %v plan, want %v: %+v", p.Kind, kind, p)
	}
	if want := memberIDs(p); !slices.Equal(ps[0].To, want) {
		t.Fatalf("plan sent to %v, want its members %v", ps[0].To, want)
	}
	return p
}

func noPlan(t *testing.T, outs []Output) {
	t.Helper()
	if ps := publishes(outs); len(ps) != 0 {
		t.Fatalf("published %d plans, want none: %+v", len(ps), ps)
	}
}

func memberIDs(p Plan) []string {
	ids := make([]string, len(p.Members))
	for i, pm := range p.Members {
		ids[i] = pm.ID
	}
	return ids
}

func hasLog(outs []Output, level slog.Level, msg string) bool {
	for _, o := range outs {
		if l, ok := o.(Log); ok && l.Level == level && l.Msg == msg {
			return true
		}
	}
	return false
}

// checkShards holds a run plan's shard split to the rule: every shard
// exactly once, each rank a contiguous block, blocks in rank order.
func checkShards(t *testing.T, p Plan, shards int) {
	t.Helper()
	owners := make([][]int, len(p.Members))
	for r, pm := range p.Members {
		owners[r] = pm.Shards
	}
	if err := shardSplitError(owners, shards); err != nil {
		t.Fatalf("generation %d: %v", p.Generation, err)
	}
}

func shardSplitError(owners [][]int, shards int) error {
	next := 0
	for r, own := range owners {
		if own == nil {
			return fmt.Errorf("rank %d has nil shards", r)
		}
		for _, s := range own {
			if s != next {
				return fmt.Errorf("rank %d owns shard %d, want %d next (owners %v)", r, s, next, owners)
			}
			if want := s * len(owners) / shards; want != r {
				return fmt.Errorf("shard %d owned by rank %d, want floor(i*n/shards) = %d", s, r, want)
			}
			next++
		}
	}
	if next != shards {
		return fmt.Errorf("%d shards owned, want %d (owners %v)", next, shards, owners)
	}
	return nil
}

func TestMinWorkersWaitThenRunFromInit(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	if h.m.State() != StateWaiting {
		t.Fatalf("new machine is %v, want waiting", h.m.State())
	}
	w1 := onePlan(t, h.up("b"), KindWait)
	w2 := onePlan(t, h.up("a"), KindWait)
	if !slices.Equal(memberIDs(w2), []string{"a", "b"}) {
		t.Fatalf("wait plan members %v, want ring order [a b]", memberIDs(w2))
	}
	if w2.Generation != w1.Generation+1 || w1.Generation != 1001 {
		t.Fatalf("wait generations %d, %d, want 1001, 1002", w1.Generation, w2.Generation)
	}
	if h.m.State() != StateWaiting {
		t.Fatalf("state %v with 2 of 3 members, want waiting", h.m.State())
	}
	pause := onePlan(t, h.up("c"), KindPause)
	if h.m.State() != StatePausing || !slices.Equal(memberIDs(pause), []string{"a", "b", "c"}) {
		t.Fatalf("state %v, pause members %v", h.m.State(), memberIDs(pause))
	}
	// Two holdings are not enough.
	for _, id := range []string{"a", "c"} {
		noPlan(t, h.step(Holding{ID: id, Generation: pause.Generation}))
	}
	run := onePlan(t, h.step(Holding{ID: "b", Generation: pause.Generation}), KindRun)
	if run.Source != SourceInit || run.Start != (Position{}) || run.Checkpoint != "" {
		t.Fatalf("run plan %+v, want a fresh start at 0:0", run)
	}
	if run.Generation != pause.Generation+1 || run.Run != "run-a" || run.CheckpointEvery != 25 {
		t.Fatalf("run plan %+v: generation, run or checkpoint_every wrong", run)
	}
	if run.Members[1].RingAddr != "b:7000" {
		t.Fatalf("rank 1 ring address %q, want b:7000", run.Members[1].RingAddr)
	}
	checkShards(t, run, 8)
	if h.m.State() != StateRunning || h.m.Generation() != run.Generation {
		t.Fatalf("state %v generation %d after the run plan", h.m.State(), h.m.Generation())
	}
}

func TestMemberDownMidRunResumesFromPeer(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 1, Step: 0}, Checkpoint: "ckpt-1"})
	run := h.running("a", "b", "c")
	if run.Source != SourceCheckpoint || run.Checkpoint != "ckpt-1" || run.Start != (Position{Phase: 1, Step: 0}) {
		t.Fatalf("first run %+v, want the committed checkpoint", run)
	}
	for _, id := range []string{"a", "b", "c"} {
		h.step(Progress{ID: id, Generation: run.Generation, Pos: Position{Phase: 1, Step: 40}, Loss: 0.5})
	}
	outs := h.step(MemberDown{ID: "b", Reason: "gossip: dead"})
	if !hasLog(outs, slog.LevelWarn, "member left") {
		t.Fatalf("no warning for the member that left: %+v", outs)
	}
	pause := onePlan(t, outs, KindPause)
	if !slices.Equal(memberIDs(pause), []string{"a", "c"}) || !strings.Contains(pause.Reason, "gossip: dead") {
		t.Fatalf("pause %+v, want members [a c] and the down reason", pause)
	}
	if h.m.State() != StatePausing {
		t.Fatalf("state %v, want pausing", h.m.State())
	}
	// c applied one more step than a before the ring broke: c is the source.
	run2 := onePlan(t, h.holdAll(map[string]Position{"a": {Phase: 1, Step: 41}, "c": {Phase: 1, Step: 42}}), KindRun)
	if run2.Source != SourcePeer || run2.SourceRank != 1 || run2.Start != (Position{Phase: 1, Step: 42}) {
		t.Fatalf("run %+v, want peer rank 1 at 1:42", run2)
	}
	if !slices.Equal(memberIDs(run2), []string{"a", "c"}) {
		t.Fatalf("run members %v, want [a c]", memberIDs(run2))
	}
	checkShards(t, run2, 8)
	if got := run2.Members[0].Shards; !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("rank 0 shards %v, want [0 1 2 3]", got)
	}
	for _, ms := range h.m.Members() {
		if ms.Pos != run2.Start {
			t.Fatalf("member %s status at %v, want the run start %v", ms.ID, ms.Pos, run2.Start)
		}
	}
}

func TestLateJoinerPausesAndRunsWithFour(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	h.step(Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 0, Step: 10}})
	pause := onePlan(t, h.up("d"), KindPause)
	if len(pause.Members) != 4 || pause.Generation != run.Generation+1 {
		t.Fatalf("pause %+v, want 4 members and the next generation", pause)
	}
	held := map[string]Position{"a": {Phase: 0, Step: 12}, "b": {Phase: 0, Step: 12}, "c": {Phase: 0, Step: 12}} // d has nothing
	run2 := onePlan(t, h.holdAll(held), KindRun)
	if run2.Source != SourcePeer || run2.SourceRank != 0 || run2.Start != (Position{Phase: 0, Step: 12}) {
		t.Fatalf("run %+v, want the lowest-ranked holder of 0:12", run2)
	}
	if !slices.Equal(memberIDs(run2), []string{"a", "b", "c", "d"}) {
		t.Fatalf("members %v", memberIDs(run2))
	}
	checkShards(t, run2, 8)
}

func TestStaleHoldingsIgnored(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	p1 := onePlan(t, h.step(RingFailed{ID: "a", Generation: run.Generation, Suspect: "c", Err: "timeout"}), KindPause)
	// Holdings of p1 from a and b, then c reconnects: a new pause.
	h.step(Holding{ID: "a", Generation: p1.Generation, HasState: true, Held: Position{Phase: 0, Step: 50}})
	h.step(Holding{ID: "b", Generation: p1.Generation, HasState: true, Held: Position{Phase: 0, Step: 50}})
	p2 := onePlan(t, h.up("c"), KindPause)
	tests := []struct {
		name string
		e    Holding
	}{
		{"previous pause", Holding{ID: "c", Generation: p1.Generation, HasState: true, Held: Position{Phase: 0, Step: 50}}},
		{"run generation", Holding{ID: "a", Generation: run.Generation}},
		{"future generation", Holding{ID: "b", Generation: p2.Generation + 7}},
		{"non-member", Holding{ID: "z", Generation: p2.Generation}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noPlan(t, h.step(tt.e))
			if h.m.State() != StatePausing {
				t.Fatalf("state %v, want pausing", h.m.State())
			}
		})
	}
	// The holdings of p1 do not count toward p2: a and b must answer again.
	noPlan(t, h.step(Holding{ID: "c", Generation: p2.Generation}))
	noPlan(t, h.step(Holding{ID: "a", Generation: p2.Generation, HasState: true, Held: Position{Phase: 0, Step: 50}}))
	run2 := onePlan(t, h.step(Holding{ID: "b", Generation: p2.Generation, HasState: true, Held: Position{Phase: 0, Step: 50}}), KindRun)
	// The future generation seen above lifts the counter.
	if run2.Generation != p2.Generation+8 {
		t.Fatalf("run generation %d, want %d (above the generation seen)", run2.Generation, p2.Generation+8)
	}
	if run2.Source != SourcePeer || run2.Start != (Position{Phase: 0, Step: 50}) {
		t.Fatalf("run %+v", run2)
	}
}

func TestRingFailed(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	noPlan(t, h.step(RingFailed{ID: "a", Generation: run.Generation - 1, Err: "old"}))
	noPlan(t, h.step(RingFailed{ID: "z", Generation: run.Generation, Err: "not a member"}))
	outs := h.step(RingFailed{ID: "b", Generation: run.Generation, Suspect: "c", Err: "deadline exceeded"})
	p := onePlan(t, outs, KindPause)
	if len(p.Members) != 3 || !strings.Contains(p.Reason, "suspect c") || !strings.Contains(p.Reason, "deadline exceeded") {
		t.Fatalf("pause %+v, want all 3 members and the failure in the reason", p)
	}
	// A second report of the same failure is now stale.
	noPlan(t, h.step(RingFailed{ID: "a", Generation: run.Generation, Err: "deadline exceeded"}))
}

func TestMemberWithoutIDIgnored(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	outs := h.step(MemberUp{RingAddr: "x:1"})
	noPlan(t, outs)
	if !hasLog(outs, slog.LevelWarn, "member without an ID ignored") || len(h.m.Members()) != 0 {
		t.Fatalf("member without an ID: %+v", outs)
	}
}

func TestReconnectPauses(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	outs := h.step(MemberUp{ID: "b", RingAddr: "b:7001"})
	p := onePlan(t, outs, KindPause)
	if !hasLog(outs, slog.LevelInfo, "member reconnected") || !strings.Contains(p.Reason, "reconnected") {
		t.Fatalf("reconnect not logged or not the reason: %+v", outs)
	}
	if p.Generation != run.Generation+1 || len(p.Members) != 3 || p.Members[1].RingAddr != "b:7001" {
		t.Fatalf("pause %+v, want one new generation with b's new address", p)
	}
}

func TestNoMembersAfterFirstRun(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	h.running("a", "b", "c")
	h.step(MemberDown{ID: "a", Reason: "x"}, MemberDown{ID: "b", Reason: "x"})
	noPlan(t, h.step(MemberDown{ID: "c", Reason: "x"}))
	if h.m.State() != StateWaiting || len(h.m.Members()) != 0 {
		t.Fatalf("state %v with %d members, want waiting with none", h.m.State(), len(h.m.Members()))
	}
	noPlan(t, h.step(MemberDown{ID: "c", Reason: "again"}))
	// One member is enough after the first run.
	p := onePlan(t, h.up("d"), KindPause)
	run := onePlan(t, h.step(Holding{ID: "d", Generation: p.Generation}), KindRun)
	if len(run.Members) != 1 || len(run.Members[0].Shards) != 8 {
		t.Fatalf("run %+v, want d alone with all 8 shards", run)
	}
}

func TestMembersFallBelowMinWorkersBeforeFirstRun(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	h.up("a", "b", "c")
	w := onePlan(t, h.step(MemberDown{ID: "b", Reason: "x"}), KindWait)
	if h.m.State() != StateWaiting || !slices.Equal(memberIDs(w), []string{"a", "c"}) {
		t.Fatalf("state %v, wait members %v", h.m.State(), memberIDs(w))
	}
	onePlan(t, h.up("b"), KindPause)
}

func TestRestartChoosesSource(t *testing.T) {
	committed := Committed{Pos: Position{Phase: 2, Step: 0}, Checkpoint: "ckpt-2"}
	tests := []struct {
		name      string
		committed Committed
		held      map[string]Position
		source    Source
		start     Position
		rank      int
	}{
		{"members ahead of the checkpoint", committed, map[string]Position{"a": {Phase: 2, Step: 30}, "b": {Phase: 2, Step: 31}, "c": {Phase: 2, Step: 31}}, SourcePeer, Position{Phase: 2, Step: 31}, 1},
		{"member exactly at the checkpoint", committed, map[string]Position{"c": {Phase: 2, Step: 0}}, SourcePeer, Position{Phase: 2, Step: 0}, 2},
		{"finished phase spelled as its last step", committed, map[string]Position{"b": {Phase: 1, Step: 100}}, SourcePeer, Position{Phase: 2, Step: 0}, 1},
		{"members behind the checkpoint", committed, map[string]Position{"a": {Phase: 1, Step: 99}}, SourceCheckpoint, Position{Phase: 2, Step: 0}, 0},
		{"members without state", committed, nil, SourceCheckpoint, Position{Phase: 2, Step: 0}, 0},
		{"no checkpoint, no state", Committed{}, nil, SourceInit, Position{}, 0},
		{"no checkpoint, state", Committed{}, map[string]Position{"b": {Phase: 0, Step: 7}}, SourcePeer, Position{Phase: 0, Step: 7}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), tt.committed)
			// The trainers say what they hold and the generation they saw
			// from the previous coordinator; Hello's state is not a holding.
			for _, id := range []string{"a", "b", "c"} {
				pos, has := tt.held[id]
				noRun := h.step(MemberUp{ID: id, RingAddr: id + ":1", HasState: has, Held: pos, LastGeneration: 5000})
				for _, p := range publishes(noRun) {
					if p.Plan.Kind == KindRun {
						t.Fatalf("run plan without holdings")
					}
				}
			}
			run := onePlan(t, h.holdAll(tt.held), KindRun)
			if run.Source != tt.source || run.Start != tt.start || run.SourceRank != tt.rank {
				t.Fatalf("run source %v start %v rank %d, want %v %v %d", run.Source, run.Start, run.SourceRank, tt.source, tt.start, tt.rank)
			}
			if wantCkpt := tt.source == SourceCheckpoint; (run.Checkpoint == "ckpt-2") != wantCkpt {
				t.Fatalf("run checkpoint %q with source %v", run.Checkpoint, run.Source)
			}
			if run.Generation <= 5000 {
				t.Fatalf("generation %d not above the trainers' last generation 5000", run.Generation)
			}
		})
	}
}

func TestHeldBeyondEndIgnored(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 1, Step: 0}, Checkpoint: "ckpt-1"})
	h.up("a", "b", "c")
	outs := h.holdAll(map[string]Position{"a": {Phase: 9, Step: 0}, "b": {Phase: 1, Step: 200}, "c": {Phase: -1, Step: 0}})
	for _, o := range outs {
		if l, ok := o.(Log); ok && l.Msg == "held state ignored" && l.Level != slog.LevelWarn {
			t.Fatalf("held state ignored at level %v, want warn", l.Level)
		}
	}
	n := 0
	for _, o := range outs {
		if l, ok := o.(Log); ok && l.Msg == "held state ignored" {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d warnings for impossible held positions, want 3", n)
	}
	run := onePlan(t, outs, KindRun)
	if run.Source != SourceCheckpoint {
		t.Fatalf("run source %v, want checkpoint", run.Source)
	}
}

func TestCommit(t *testing.T) {
	type want struct {
		approve bool
		reason  string // a word the rejection must contain
	}
	setup := func(t *testing.T) (*harness, Plan) {
		h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 1, Step: 0}, Checkpoint: "c1"})
		h.up("a", "b", "c")
		run := onePlan(t, h.holdAll(map[string]Position{"b": {Phase: 1, Step: 50}}), KindRun)
		return h, run
	}
	tests := []struct {
		name string
		e    func(run Plan) CommitRequested
		want want
	}{
		{"rank 0 ahead", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 75}, "c2"}
		}, want{approve: true}},
		{"rank 0 at the start", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 50}, "c2"}
		}, want{approve: true}},
		{"phase end spelled as last step", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 100}, "c2"}
		}, want{approve: true}},
		{"run end", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 4, Step: 0}, "c2"}
		}, want{approve: true}},
		{"not rank 0", func(r Plan) CommitRequested {
			return CommitRequested{"b", r.Generation, Position{Phase: 1, Step: 75}, "c2"}
		}, want{reason: "rank 0"}},
		{"stale generation", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation - 1, Position{Phase: 1, Step: 75}, "c2"}
		}, want{reason: "generation"}},
		{"not after committed", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 0}, "c2"}
		}, want{reason: "committed"}},
		{"before the run start", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 49}, "c2"}
		}, want{reason: "run start"}},
		{"beyond the end", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 4, Step: 1}, "c2"}
		}, want{reason: "beyond the end"}},
		{"too many steps", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 101}, "c2"}
		}, want{reason: "steps"}},
		{"empty checkpoint", func(r Plan) CommitRequested {
			return CommitRequested{"a", r.Generation, Position{Phase: 1, Step: 75}, ""}
		}, want{reason: "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, run := setup(t)
			e := tt.e(run)
			outs := h.step(e)
			checkCommitAnswer(t, outs, e, tt.want.approve, tt.want.reason)
			if h.m.Committed().Checkpoint != "c1" {
				t.Fatalf("a commit request alone changed the committed checkpoint")
			}
		})
	}
	t.Run("during a pause", func(t *testing.T) {
		h, run := setup(t)
		h.step(MemberDown{ID: "c", Reason: "x"})
		e := CommitRequested{"a", run.Generation, Position{Phase: 1, Step: 75}, "c2"}
		checkCommitAnswer(t, h.step(e), e, false, "no run in progress")
	})
	t.Run("normalised position approved", func(t *testing.T) {
		h, run := setup(t)
		outs := h.step(CommitRequested{"a", run.Generation, Position{Phase: 1, Step: 100}, "c2"})
		if a, ok := outs[len(outs)-1].(ApproveCommit); !ok || a.Pos != (Position{Phase: 2, Step: 0}) {
			t.Fatalf("approval %+v, want position 2:0", outs[len(outs)-1])
		}
	})
}

func checkCommitAnswer(t *testing.T, outs []Output, e CommitRequested, approve bool, reason string) {
	t.Helper()
	var answers []Output
	for _, o := range outs {
		switch o.(type) {
		case ApproveCommit, RejectCommit:
			answers = append(answers, o)
		}
	}
	if len(answers) != 1 {
		t.Fatalf("%d commit answers, want 1: %+v", len(answers), outs)
	}
	switch a := answers[0].(type) {
	case ApproveCommit:
		if !approve {
			t.Fatalf("approved %+v, want a rejection naming %q", e, reason)
		}
		if a.ID != e.ID || a.Generation != e.Generation || a.Checkpoint != e.Checkpoint {
			t.Fatalf("approval %+v does not match the request %+v", a, e)
		}
	case RejectCommit:
		if approve {
			t.Fatalf("rejected %+v: %s", e, a.Reason)
		}
		if !strings.Contains(a.Reason, reason) {
			t.Fatalf("rejection reason %q does not name %q", a.Reason, reason)
		}
		if !hasLog(outs, slog.LevelWarn, "commit rejected") {
			t.Fatalf("rejection not logged")
		}
	}
}

func TestCheckpointCommitted(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	h.step(CheckpointCommitted{Pos: Position{Phase: 0, Step: 50}, Checkpoint: "c50"})
	// An older commit landing late and a bogus one change nothing.
	h.step(CheckpointCommitted{Pos: Position{Phase: 0, Step: 25}, Checkpoint: "c25"},
		CheckpointCommitted{Pos: Position{Phase: 0, Step: 75}, Checkpoint: ""},
		CheckpointCommitted{Pos: Position{Phase: 7, Step: 0}, Checkpoint: "c7"})
	if got := h.m.Committed(); got != (Committed{Pos: Position{Phase: 0, Step: 50}, Checkpoint: "c50"}) {
		t.Fatalf("committed %+v, want 0:50 c50", got)
	}
	e := CommitRequested{"a", run.Generation, Position{Phase: 0, Step: 50}, "again"}
	checkCommitAnswer(t, h.step(e), e, false, "committed")
}

func TestFinish(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, Committed{Pos: Position{Phase: 3, Step: 90}, Checkpoint: "c3"})
	h.up("a", "b", "c")
	run := onePlan(t, h.holdAll(map[string]Position{"a": {Phase: 3, Step: 95}}), KindRun)
	e := CommitRequested{"a", run.Generation, Position{Phase: 3, Step: 100}, "final"}
	outs := h.step(e)
	checkCommitAnswer(t, outs, e, true, "")
	noPlan(t, outs)
	outs = h.step(CheckpointCommitted{Pos: Position{Phase: 4, Step: 0}, Checkpoint: "final"})
	fin := onePlan(t, outs, KindFinish)
	if _, ok := outs[len(outs)-1].(Finished); !ok {
		t.Fatalf("last output %+v, want Finished", outs[len(outs)-1])
	}
	if !hasLog(outs, slog.LevelInfo, "phase done") {
		t.Fatalf("the last phase's end was not logged")
	}
	if h.m.State() != StateDone || !h.m.Done() || fin.Generation != run.Generation+1 {
		t.Fatalf("state %v, finish generation %d", h.m.State(), fin.Generation)
	}
	// After done only a member coming up gets an answer: the same finish plan.
	for _, e := range []Event{
		Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 4, Step: 0}},
		MemberDown{ID: "b", Reason: "exited"},
		Holding{ID: "a", Generation: fin.Generation},
		RingFailed{ID: "a", Generation: run.Generation},
		CommitRequested{"a", run.Generation, Position{Phase: 4, Step: 0}, "x"},
		CheckpointCommitted{Pos: Position{Phase: 4, Step: 0}, Checkpoint: "x"},
	} {
		if outs := h.step(e); len(outs) != 0 {
			t.Fatalf("%T after done gave %+v", e, outs)
		}
	}
	outs = h.step(MemberUp{ID: "late", RingAddr: "late:1"})
	ps := publishes(outs)
	if len(ps) != 1 || !reflect.DeepEqual(ps[0].Plan, fin) || !slices.Equal(ps[0].To, []string{"late"}) {
		t.Fatalf("late member got %+v, want the finish plan sent to it", ps)
	}
	for _, o := range outs {
		if _, ok := o.(Finished); ok {
			t.Fatalf("Finished emitted twice")
		}
	}
}

// TestEndHeldButNotCommitted: the final checkpoint's commit was lost; the
// holder of the end becomes the source of a run plan with nothing to
// train, whose rank 0 commits the end, and only that commit finishes.
func TestEndHeldButNotCommitted(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 3, Step: 0}, Checkpoint: "c3"})
	h.up("a", "b", "c")
	outs := h.holdAll(map[string]Position{"b": {Phase: 3, Step: 100}})
	run := onePlan(t, outs, KindRun)
	if run.Start != (Position{Phase: 4, Step: 0}) || run.Source != SourcePeer || run.SourceRank != 1 || !run.CommitStart || h.m.Done() {
		t.Fatalf("plan %+v, done %v: want a run from the end with rank 1 as source that commits its start", run, h.m.Done())
	}
	if !hasLog(outs, slog.LevelWarn, "a phase end is held but not committed; rank 0 commits it first") {
		t.Fatalf("no warning about the uncommitted end")
	}
	outs = h.step(CommitRequested{"a", run.Generation, Position{Phase: 4, Step: 0}, "end"})
	if !slices.ContainsFunc(outs, func(o Output) bool { _, ok := o.(ApproveCommit); return ok }) {
		t.Fatalf("final commit not approved: %+v", outs)
	}
	outs = h.step(CheckpointCommitted{Pos: Position{Phase: 4, Step: 0}, Checkpoint: "end"})
	onePlan(t, outs, KindFinish)
	if !h.m.Done() {
		t.Fatal("not done after the end was committed")
	}
}

func TestStartedDone(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 3, Step: 100}, Checkpoint: "end"})
	if !h.m.Done() || h.m.Committed().Pos != (Position{Phase: 4, Step: 0}) {
		t.Fatalf("machine with the end committed: done %v, committed %v", h.m.Done(), h.m.Committed())
	}
	outs := h.step(MemberUp{ID: "a", RingAddr: "a:1", LastGeneration: 2000})
	fin := onePlan(t, outs, KindFinish)
	if fin.Generation != 2001 {
		t.Fatalf("finish generation %d, want 2001", fin.Generation)
	}
	if _, ok := outs[len(outs)-1].(Finished); !ok {
		t.Fatalf("no Finished: %+v", outs)
	}
	ps := publishes(h.step(MemberUp{ID: "b", RingAddr: "b:1"}))
	if len(ps) != 1 || ps[0].Plan.Generation != fin.Generation || !slices.Equal(ps[0].To, []string{"b"}) {
		t.Fatalf("second member got %+v", ps)
	}
}

func TestFinishWithNoMembers(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{Pos: Position{Phase: 3, Step: 0}, Checkpoint: "c3"})
	h.running("a", "b", "c")
	h.step(MemberDown{ID: "a"}, MemberDown{ID: "b"}, MemberDown{ID: "c"})
	outs := h.step(CheckpointCommitted{Pos: Position{Phase: 4, Step: 0}, Checkpoint: "end"})
	noPlan(t, outs)
	if _, ok := outs[len(outs)-1].(Finished); !ok || !h.m.Done() {
		t.Fatalf("commit of the end with no members: %+v", outs)
	}
}

func TestProgressAndPhaseLogs(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	phaseDone := func(outs []Output) []int {
		var phases []int
		for _, o := range outs {
			if l, ok := o.(Log); ok && l.Msg == "phase done" {
				phases = append(phases, l.Attrs[1].(int))
			}
		}
		return phases
	}
	tests := []struct {
		e    Progress
		want []int
	}{
		{Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 0, Step: 60}, Loss: 1.5, SamplesPerSec: 900, AllReduceFraction: 0.25}, nil},
		{Progress{ID: "b", Generation: run.Generation, Pos: Position{Phase: 0, Step: 100}}, []int{0}},
		{Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 1, Step: 0}}, nil},
		{Progress{ID: "c", Generation: run.Generation, Pos: Position{Phase: 1, Step: 3}}, nil},
		{Progress{ID: "c", Generation: run.Generation, Pos: Position{Phase: 3, Step: 3}}, []int{1, 2}},
		{Progress{ID: "c", Generation: run.Generation - 1, Pos: Position{Phase: 3, Step: 100}}, nil},
		{Progress{ID: "c", Generation: run.Generation, Pos: Position{Phase: 5, Step: 0}}, nil},
	}
	for i, tt := range tests {
		if got := phaseDone(h.step(tt.e)); !slices.Equal(got, tt.want) {
			t.Fatalf("progress %d %+v logged phases %v, want %v", i, tt.e, got, tt.want)
		}
	}
	ms := h.m.Members()
	want := []MemberStatus{
		{ID: "a", RingAddr: "a:7000", Pos: Position{Phase: 1, Step: 0}},
		{ID: "b", RingAddr: "b:7000", Pos: Position{Phase: 1, Step: 0}},
		{ID: "c", RingAddr: "c:7000", Pos: Position{Phase: 3, Step: 3}},
	}
	if !reflect.DeepEqual(ms, want) {
		t.Fatalf("members %+v, want %+v", ms, want)
	}
}

func TestNewMachineValidates(t *testing.T) {
	good := testConfig()
	tests := []struct {
		name  string
		edit  func(*Config)
		c     Committed
		field string
	}{
		{"run", func(c *Config) { c.Run = "" }, Committed{}, "Run"},
		{"phases", func(c *Config) { c.Phases = 0 }, Committed{}, "Phases"},
		{"steps", func(c *Config) { c.StepsPerPhase = 0 }, Committed{}, "StepsPerPhase"},
		{"shards", func(c *Config) { c.Shards = 0 }, Committed{}, "Shards"},
		{"min workers", func(c *Config) { c.MinWorkers = 0 }, Committed{}, "MinWorkers"},
		{"checkpoint every", func(c *Config) { c.CheckpointEvery = -1 }, Committed{}, "CheckpointEvery"},
		{"first generation", func(c *Config) { c.FirstGeneration = ^uint64(0) }, Committed{}, "FirstGeneration"},
		{"committed beyond end", func(*Config) {}, Committed{Pos: Position{Phase: 4, Step: 1}, Checkpoint: "x"}, "beyond the end"},
		{"committed without checkpoint", func(*Config) {}, Committed{Pos: Position{Phase: 1, Step: 0}}, "no checkpoint"},
		{"committed negative", func(*Config) {}, Committed{Pos: Position{Phase: 0, Step: -1}, Checkpoint: "x"}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := NewMachine(cfg, tt.c)
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %v, want one naming %q", err, tt.field)
			}
		})
	}
	if _, err := NewMachine(good, Committed{}); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

func TestAssignShards(t *testing.T) {
	if got := AssignShards(0, 8); len(got) != 0 {
		t.Fatalf("AssignShards(0, 8) = %v, want no ranks", got)
	}
	for n := 1; n <= 9; n++ {
		for shards := 1; shards <= 16; shards++ {
			owners := AssignShards(n, shards)
			if len(owners) != n {
				t.Fatalf("n=%d shards=%d: %d ranks", n, shards, len(owners))
			}
			if err := shardSplitError(owners, shards); err != nil {
				t.Fatalf("n=%d shards=%d: %v", n, shards, err)
			}
			// Blocks differ in size by at most one.
			lo, hi := shards, 0
			for _, own := range owners {
				lo, hi = min(lo, len(own)), max(hi, len(own))
			}
			if hi-lo > 1 {
				t.Fatalf("n=%d shards=%d: block sizes %d..%d", n, shards, lo, hi)
			}
		}
	}
}

// randomEvents drives a machine with a seeded mix of plausible and stale
// events, returning the events it fed.
func randomEvents(t *testing.T, seed uint64, n int) (*harness, []Event) {
	t.Helper()
	cfg := testConfig()
	cfg.Phases, cfg.StepsPerPhase, cfg.MinWorkers = 2, 20, 2
	h := newHarness(t, cfg, Committed{})
	r := rand.New(rand.NewPCG(seed, 1))
	ids := []string{"a", "b", "c", "d", "e"}
	var events []Event
	for range n {
		id := ids[r.IntN(len(ids))]
		p, _ := h.m.Plan()
		g := p.Generation
		if g > 2 && r.IntN(8) == 0 {
			g -= uint64(r.IntN(3)) // sometimes stale
		}
		pos := Position{Phase: r.IntN(cfg.Phases + 1), Step: r.Int64N(cfg.StepsPerPhase + 1)}
		if p.Kind == KindRun && r.IntN(3) > 0 {
			id = p.Members[0].ID // commits mostly from rank 0
		}
		var e Event
		switch k := r.IntN(20); {
		case k < 3:
			e = MemberUp{ID: id, RingAddr: id + ":1", LastGeneration: uint64(r.IntN(1100))}
		case k < 5:
			e = MemberDown{ID: id, Reason: "random"}
		case k < 10:
			e = Holding{ID: id, Generation: g, HasState: r.IntN(2) == 0, Held: pos}
		case k < 13:
			e = Progress{ID: id, Generation: g, Pos: pos, Loss: r.Float64()}
		case k < 14:
			e = RingFailed{ID: id, Generation: g, Err: "random"}
		case k < 17:
			e = CommitRequested{ID: id, Generation: g, Pos: pos, Checkpoint: fmt.Sprintf("c%d", r.IntN(100))}
		default:
			// The server commits what the machine approved.
			for i := len(h.all) - 1; i >= 0; i-- {
				if a, ok := h.all[i].(ApproveCommit); ok {
					e = CheckpointCommitted{Pos: a.Pos, Checkpoint: a.Checkpoint}
					break
				}
			}
			if e == nil {
				e = MemberDown{ID: id, Reason: "random"}
			}
		}
		events = append(events, e)
		h.step(e)
	}
	return h, events
}

func TestDeterminism(t *testing.T) {
	for seed := range uint64(20) {
		h, events := randomEvents(t, seed, 400)
		again := newHarness(t, h.m.Config(), Committed{})
		again.step(events...)
		if !reflect.DeepEqual(h.all, again.all) {
			t.Fatalf("seed %d: the same events gave different outputs", seed)
		}
		if !reflect.DeepEqual(h.m.Members(), again.m.Members()) || h.m.State() != again.m.State() {
			t.Fatalf("seed %d: the same events left different states", seed)
		}
	}
}

// TestInvariantsUnderRandomEvents holds every output of seeded random
// histories to the rules: generations strictly increase and stay above
// every generation seen, plans reach exactly their members in ring order,
// run plans split the shards exactly, and only rank 0 of the current run
// gets a commit approved.
func TestInvariantsUnderRandomEvents(t *testing.T) {
	runs, finishes := 0, 0
	for seed := range uint64(200) {
		h, events := randomEvents(t, seed, 300)
		m, _ := NewMachine(h.m.Config(), Committed{})
		var last Plan
		var seen uint64 = m.Config().FirstGeneration
		for i, e := range events {
			before, _ := m.Plan()
			state := m.State()
			outs := m.Step(e)
			for _, o := range outs {
				switch o := o.(type) {
				case Publish:
					p := o.Plan
					if state == StateDone {
						// A member up after the finish gets the finish plan again.
						up, ok := e.(MemberUp)
						if !ok || !reflect.DeepEqual(p, before) || p.Kind != KindFinish || !slices.Equal(o.To, []string{up.ID}) {
							t.Fatalf("seed %d event %d: after done, %T gave %+v to %v", seed, i, e, p, o.To)
						}
						continue
					}
					if p.Generation <= last.Generation || p.Generation <= seen {
						t.Fatalf("seed %d event %d: generation %d after %d (seen %d)", seed, i, p.Generation, last.Generation, seen)
					}
					if !slices.Equal(o.To, memberIDs(p)) || !slices.IsSorted(o.To) || len(o.To) == 0 {
						t.Fatalf("seed %d event %d: plan to %v, members %v", seed, i, o.To, memberIDs(p))
					}
					if p.Kind == KindRun {
						runs++
						checkShards(t, p, m.Config().Shards)
					}
					if p.Kind == KindFinish {
						finishes++
					}
					last = p
				case ApproveCommit:
					if before.Kind != KindRun || o.ID != before.Members[0].ID || o.Generation != before.Generation {
						t.Fatalf("seed %d event %d: approved %+v under plan %+v", seed, i, o, before)
					}
				}
			}
			seen = max(seen, eventGeneration(e))
		}
	}
	if runs == 0 || finishes == 0 {
		t.Fatalf("random histories reached %d runs and %d finishes; the generator needs both", runs, finishes)
	}
}

func eventGeneration(e Event) uint64 {
	switch e := e.(type) {
	case MemberUp:
		return e.LastGeneration
	case Holding:
		return e.Generation
	case Progress:
		return e.Generation
	case RingFailed:
		return e.Generation
	case CommitRequested:
		return e.Generation
	}
	return 0
}

func TestGenerationOutOfRangeIgnored(t *testing.T) {
	const first = 1000 // testConfig's FirstGeneration
	for _, c := range []struct {
		name    string
		last    uint64
		adopted bool
	}{
		{"no successor", ^uint64(0), false},
		{"near the wrap", ^uint64(0) - 1, false},
		{"past the window", first + GenerationWindow + 1, false},
		{"at the window", first + GenerationWindow, true},
		{"just ahead", first + 5, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), Committed{})
			outs := h.step(MemberUp{ID: "a", RingAddr: "a:1", LastGeneration: c.last})
			want := uint64(first + 1)
			if c.adopted {
				want = c.last + 1
			}
			if warned := hasLog(outs, slog.LevelWarn, "implausible generation ignored"); warned == c.adopted {
				t.Fatalf("warned %v for generation %d: %+v", warned, c.last, outs)
			}
			if w := onePlan(t, outs, KindWait); w.Generation != want {
				t.Fatalf("wait generation %d, want %d", w.Generation, want)
			}
		})
	}
}

// A progress report before the member's position in this generation is
// impossible and changes nothing.
func TestProgressBackwardsIgnored(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	h.step(Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 0, Step: 5}})
	outs := h.step(Progress{ID: "a", Generation: run.Generation, Pos: Position{Phase: 0, Step: 2}})
	if !hasLog(outs, slog.LevelWarn, "progress ignored") {
		t.Fatalf("no warning for a position going backwards: %+v", outs)
	}
	for _, m := range h.m.Members() {
		if m.ID == "a" && m.Pos != (Position{Phase: 0, Step: 5}) {
			t.Fatalf("member a at %v after a backwards report, want 0:5", m.Pos)
		}
	}
}

func TestOutputsDoNotAlias(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	run.Members[0].Shards[0] = 99
	run.Members[1].ID = "zz"
	p, _ := h.m.Plan()
	if p.Members[0].Shards[0] != 0 || p.Members[1].ID != "b" {
		t.Fatalf("changing a published plan changed the machine's plan: %+v", p)
	}
}

// TestPhaseEndNotCommittedIsCommittedFirst: a phase end whose commit
// failed is where the next run starts, and its plan makes rank 0 commit it
// before anyone steps into the next phase; a phase end already committed
// asks for nothing.
func TestPhaseEndNotCommittedIsCommittedFirst(t *testing.T) {
	cases := []struct {
		name      string
		committed Committed
		held      Position
		want      bool
	}{
		{"phase end failed to commit", Committed{Pos: Position{Phase: 1, Step: 75}, Checkpoint: "c"}, Position{Phase: 2, Step: 0}, true},
		{"phase end committed", Committed{Pos: Position{Phase: 2, Step: 0}, Checkpoint: "c"}, Position{Phase: 2, Step: 0}, false},
		{"mid-phase", Committed{Pos: Position{Phase: 1, Step: 75}, Checkpoint: "c"}, Position{Phase: 1, Step: 80}, false},
		{"first phase start", Committed{}, Position{Phase: 0, Step: 0}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), tc.committed)
			h.up("a", "b", "c")
			run := onePlan(t, h.holdAll(map[string]Position{"a": tc.held, "b": tc.held, "c": tc.held}), KindRun)
			if run.Start != tc.held || run.CommitStart != tc.want {
				t.Fatalf("plan starts at %v with CommitStart %v, want %v and %v", run.Start, run.CommitStart, tc.held, tc.want)
			}
		})
	}
}

// TestSuspendPausesUntilResume: a suspended machine pauses its members,
// refuses commits and starts no run however the members answer or come
// and go; Resume pauses afresh and then runs.
func TestSuspendPausesUntilResume(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	outs := h.step(Suspend{Reason: "lost the lease"})
	pause := onePlan(t, outs, KindPause)
	if !strings.Contains(pause.Reason, "lost the lease") {
		t.Errorf("pause reason %q does not say why", pause.Reason)
	}
	if h.m.Suspended() != "lost the lease" {
		t.Errorf("Suspended() = %q", h.m.Suspended())
	}
	noPlan(t, h.step(Suspend{Reason: "again"})) // one pause per suspension
	outs = h.holdAll(map[string]Position{"a": {Phase: 0, Step: 30}, "b": {Phase: 0, Step: 30}, "c": {Phase: 0, Step: 30}})
	noPlan(t, outs)
	if !hasLog(outs, slog.LevelInfo, "every member holds; the run stays paused") {
		t.Errorf("no log that the run stays paused: %+v", outs)
	}
	outs = h.step(CommitRequested{"a", run.Generation, Position{Phase: 0, Step: 25}, "x"})
	if len(outs) == 0 || !slices.ContainsFunc(outs, func(o Output) bool { r, ok := o.(RejectCommit); return ok && strings.Contains(r.Reason, "suspended") }) {
		t.Fatalf("commit while suspended: %+v, want a rejection saying so", outs)
	}
	// A member leaving while suspended re-pauses but still starts no run.
	onePlan(t, h.step(MemberDown{ID: "c", Reason: "gone"}), KindPause)
	noPlan(t, h.holdAll(map[string]Position{"a": {Phase: 0, Step: 30}, "b": {Phase: 0, Step: 30}}))
	p := onePlan(t, h.step(Resume{Reason: "lease taken back"}), KindPause)
	if h.m.Suspended() != "" {
		t.Errorf("still suspended after Resume: %q", h.m.Suspended())
	}
	got := onePlan(t, h.holdAll(map[string]Position{"a": {Phase: 0, Step: 30}, "b": {Phase: 0, Step: 30}}), KindRun)
	if got.Generation <= p.Generation || got.Start != (Position{Phase: 0, Step: 30}) || got.Source != SourcePeer {
		t.Fatalf("after Resume: %+v, want a run from the members' state", got)
	}
}

// facts are the Observer outputs of outs, written as lines.
func facts(outs []Output) []string {
	var f []string
	for _, o := range outs {
		switch o := o.(type) {
		case MemberJoined:
			f = append(f, "join "+o.ID)
		case MemberLeft:
			f = append(f, "leave "+o.ID)
		case ProgressAccepted:
			f = append(f, fmt.Sprintf("progress %s %v", o.ID, o.Pos))
		case CommitRecorded:
			f = append(f, fmt.Sprintf("commit %s %v %d", o.Checkpoint, o.Pos, o.Bytes))
		case StateChanged:
			f = append(f, "state "+o.State.String())
		}
	}
	return f
}

// The machine's facts are what it adopted, in canonical form; what it
// ignored is no fact.
func TestMachineFacts(t *testing.T) {
	h := newHarness(t, testConfig(), Committed{})
	run := h.running("a", "b", "c")
	gen := run.Generation
	cases := []struct {
		name  string
		event Event
		want  []string
	}{
		{"progress", Progress{ID: "a", Generation: gen, Pos: Position{Phase: 0, Step: 7}}, []string{"progress a phase 0 step 7"}},
		{"finished phase in canonical form", Progress{ID: "a", Generation: gen, Pos: Position{Phase: 0, Step: 100}}, []string{"progress a phase 1 step 0"}},
		{"backwards progress", Progress{ID: "a", Generation: gen, Pos: Position{Phase: 0, Step: 8}}, nil},
		{"stale generation", Progress{ID: "b", Generation: gen - 1, Pos: Position{Phase: 0, Step: 9}}, nil},
		{"impossible position", Progress{ID: "b", Generation: gen, Pos: Position{Phase: 9, Step: 0}}, nil},
		{"not a member", Progress{ID: "z", Generation: gen, Pos: Position{Phase: 0, Step: 9}}, nil},
		{"commit", CheckpointCommitted{Pos: Position{Phase: 0, Step: 100}, Checkpoint: "c1", Bytes: 42}, []string{"commit c1 phase 1 step 0 42"}},
		{"older commit", CheckpointCommitted{Pos: Position{Phase: 0, Step: 50}, Checkpoint: "c0"}, nil},
		{"leave of a non-member", MemberDown{ID: "z"}, nil},
		{"leave", MemberDown{ID: "b"}, []string{"leave b", "state pausing"}},
		{"join", MemberUp{ID: "d", RingAddr: "d:1"}, []string{"join d"}},
	}
	for _, tc := range cases {
		got := facts(h.step(tc.event))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: facts %q, want %q", tc.name, got, tc.want)
		}
	}
}
