package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"

	"github.com/sbtrain/sbtrain/position"
)

// Position is how far a run is (package position owns its rules).
type Position = position.Position

// Config is what the state machine needs to know about a run.
type Config struct {
	// Run names the run; it is copied into every plan.
	Run string
	// Phases is the number of phases (DSB: 2 per IPF iteration; SI: 1).
	Phases int
	// StepsPerPhase is the number of optimiser steps in each phase.
	StepsPerPhase int64
	// Shards is the number of virtual cache shards split among the members.
	Shards int
	// MinWorkers is how many members the first run of this machine waits
	// for; after it has run once, any member at all is enough.
	MinWorkers int
	// CheckpointEvery asks rank 0 for a checkpoint every so many steps; 0
	// means only at phase ends. It is copied into run plans.
	CheckpointEvery int64
	// FirstGeneration is the floor of the generation counter. The server
	// passes unix_seconds<<20 so that generations keep increasing across
	// coordinator restarts.
	FirstGeneration uint64
}

// End is the position of a finished run: {Phases, 0}.
func (c Config) End() Position { return c.layout().End() }

// validate names the first field of c that cannot describe a run.
func (c Config) validate() error {
	switch {
	case c.Run == "":
		return errors.New("coordinator: config Run is empty")
	case c.Phases < 1:
		return fmt.Errorf("coordinator: config Phases = %d, must be at least 1", c.Phases)
	case c.StepsPerPhase < 1:
		return fmt.Errorf("coordinator: config StepsPerPhase = %d, must be at least 1", c.StepsPerPhase)
	case c.Shards < 1:
		return fmt.Errorf("coordinator: config Shards = %d, must be at least 1", c.Shards)
	case c.MinWorkers < 1:
		return fmt.Errorf("coordinator: config MinWorkers = %d, must be at least 1", c.MinWorkers)
	case c.CheckpointEvery < 0:
		return fmt.Errorf("coordinator: config CheckpointEvery = %d, must not be negative (0 means phase ends only)", c.CheckpointEvery)
	case c.FirstGeneration == math.MaxUint64:
		return errors.New("coordinator: config FirstGeneration leaves no room for a next generation")
	}
	return nil
}

// layout is the run's shape, whose rules normalise every position a peer
// sends.
func (c Config) layout() position.Layout {
	return position.Layout{Phases: c.Phases, StepsPerPhase: c.StepsPerPhase}
}

// normalize checks that p lies inside the run and writes it canonically.
func (c Config) normalize(p Position) (Position, error) { return c.layout().Normalize(p) }

// Committed is the newest checkpoint in storage: the position it holds and
// its storage ID (storage.ID.String()). An empty Checkpoint means none, and
// then Pos must be {0, 0}.
type Committed struct {
	Pos        Position
	Checkpoint string
}

// RunState is what the machine is doing.
type RunState int

const (
	// StateWaiting: too few members for a first run, or none at all.
	StateWaiting RunState = iota
	// StatePausing: a pause plan is out and its holdings are awaited.
	StatePausing
	// StateRunning: a run plan is out and members are stepping.
	StateRunning
	// StateDone: the run is complete and a finish plan is out.
	StateDone
)

// String is the state's name in the Status RPC.
func (s RunState) String() string {
	switch s {
	case StateWaiting:
		return "waiting"
	case StatePausing:
		return "pausing"
	case StateRunning:
		return "running"
	case StateDone:
		return "done"
	}
	return fmt.Sprintf("RunState(%d)", int(s))
}

// PlanKind says what a plan asks of its members. The values match the
// Plan.Kind enum of api/control.proto.
type PlanKind int

const (
	// KindUnspecified is the zero value; no plan has it.
	KindUnspecified PlanKind = iota
	// KindWait: not enough members yet, stay idle.
	KindWait
	// KindPause: stop stepping, leave the ring, report what you hold.
	KindPause
	// KindRun: form the ring of Members and train from Start.
	KindRun
	// KindFinish: the run is complete, exit.
	KindFinish
)

// String is the kind's name in logs.
func (k PlanKind) String() string {
	switch k {
	case KindUnspecified:
		return "unspecified"
	case KindWait:
		return "wait"
	case KindPause:
		return "pause"
	case KindRun:
		return "run"
	case KindFinish:
		return "finish"
	}
	return fmt.Sprintf("PlanKind(%d)", int(k))
}

// Source says where the members of a run plan get the state at Start. The
// values match the Plan.Source enum of api/control.proto.
type Source int

const (
	// SourceUnspecified is the zero value, used by every plan but a run.
	SourceUnspecified Source = iota
	// SourceInit: fresh networks from the run seed.
	SourceInit
	// SourceCheckpoint: load the checkpoint named Plan.Checkpoint.
	SourceCheckpoint
	// SourcePeer: member Plan.SourceRank broadcasts its in-memory state.
	SourcePeer
)

// String is the source's name in logs.
func (s Source) String() string {
	switch s {
	case SourceUnspecified:
		return "unspecified"
	case SourceInit:
		return "init"
	case SourceCheckpoint:
		return "checkpoint"
	case SourcePeer:
		return "peer"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// PlanMember is one member of a plan, in ring order.
type PlanMember struct {
	ID       string
	RingAddr string
	// Shards are the virtual shards this member owns; only run plans
	// assign them.
	Shards []int
}

// Plan is what the coordinator asks of the members of one generation.
type Plan struct {
	Run        string
	Generation uint64
	Kind       PlanKind
	// Members are in ring order: sorted by ID, so that the same member set
	// always gets the same ranks (exact resume depends on it).
	Members []PlanMember
	// Start, Source, Checkpoint and SourceRank are set in run plans only.
	Start      Position
	Source     Source
	Checkpoint string // the checkpoint to load when Source is SourceCheckpoint
	SourceRank int    // the member that broadcasts when Source is SourcePeer
	// CheckpointEvery is copied from the config into run plans.
	CheckpointEvery int64
	// CommitStart, in a run plan, says that Start is a phase end that is
	// not committed: rank 0 commits the state at Start before stepping,
	// so no phase closes without its phase-end checkpoint.
	CommitStart bool
	// Reason says why this plan was made, for logs.
	Reason string
}

// AssignShards splits shards virtual shards among n ranks in contiguous
// blocks: shard i belongs to rank floor(i*n/shards). A rank owns no shard
// when n > shards. It returns one slice per rank (never nil).
func AssignShards(n, shards int) [][]int {
	owned := make([][]int, n)
	for r := range owned {
		owned[r] = []int{}
	}
	if n < 1 {
		return owned
	}
	for i := range shards {
		r := int(int64(i) * int64(n) / int64(shards))
		owned[r] = append(owned[r], i)
	}
	return owned
}

// Event is something the server tells the machine. The event types are
// MemberUp, MemberDown, Holding, Progress, RingFailed, CommitRequested,
// CheckpointCommitted, Suspend and Resume.
type Event interface{ isEvent() }

// MemberUp: a trainer opened its Follow stream (Hello). An ID that is
// already up is a reconnect, handled as that member going down and coming
// up again.
type MemberUp struct {
	ID       string
	RingAddr string
	// HasState and Held are what the trainer says it holds. They are only
	// logged: a pause always asks for an explicit Holding.
	HasState bool
	Held     Position
	// LastGeneration is the newest generation the trainer has seen; the
	// machine's next plan is above it.
	LastGeneration uint64
}

// MemberDown: a trainer's stream ended or gossip declared it dead.
type MemberDown struct {
	ID     string
	Reason string
}

// Holding: a trainer's reply to the pause plan of Generation.
type Holding struct {
	ID         string
	Generation uint64
	HasState   bool
	Held       Position
}

// Progress: how far a trainer got in the run plan of Generation, and what
// the steps since its previous report cost.
type Progress struct {
	ID                string
	Generation        uint64
	Pos               Position
	Loss              float64
	SamplesPerSec     float64
	AllReduceFraction float64
	// Steps since the trainer's previous report, their summed wall time,
	// the part of it in the all-reduce and the bytes the trainer sent.
	Steps            int64
	StepSeconds      float64
	AllReduceSeconds float64
	AllReduceBytes   int64
}

// RingFailed: a collective of the ring of Generation failed; Suspect is
// the member the trainer blames, if it knows.
type RingFailed struct {
	ID         string
	Generation uint64
	Suspect    string
	Err        string
}

// CommitRequested: a trainer has written the blobs of Checkpoint at Pos and
// asks for it to be committed. The machine answers ApproveCommit or
// RejectCommit.
type CommitRequested struct {
	ID         string
	Generation uint64
	Pos        Position
	Checkpoint string
}

// CheckpointCommitted: the server has written the manifest and LATEST for
// an approved commit. Committing the end position finishes the run.
// Trainer, Generation, Bytes and Seconds describe the write, for the
// CommitRecorded fact.
type CheckpointCommitted struct {
	Pos        Position
	Checkpoint string
	Trainer    string
	Generation uint64
	Bytes      int64
	Seconds    float64 // blob write plus commit
}

// Suspend: the server cannot commit (it lost the run's lease, or storage
// is out for longer than it tolerates). The machine pauses every member
// and starts no run, and refuses commits, until Resume.
type Suspend struct{ Reason string }

// Resume: the server can commit again; the machine pauses afresh to
// collect what the members hold, then runs.
type Resume struct{ Reason string }

func (Suspend) isEvent()             {}
func (Resume) isEvent()              {}
func (MemberUp) isEvent()            {}
func (MemberDown) isEvent()          {}
func (Holding) isEvent()             {}
func (Progress) isEvent()            {}
func (RingFailed) isEvent()          {}
func (CommitRequested) isEvent()     {}
func (CheckpointCommitted) isEvent() {}

// Output is something the machine asks the server to do, in order. The
// output types are Publish, Log, ApproveCommit, RejectCommit and Finished,
// and the facts the server passes on to its Observer: MemberJoined,
// MemberLeft, ProgressAccepted, CommitRecorded and StateChanged.
type Output interface{ isOutput() }

// MemberJoined: ID is in the member set, newly or again after a reconnect.
type MemberJoined struct{ ID, RingAddr string }

// MemberLeft: ID is no longer in the member set.
type MemberLeft struct{ ID, Reason string }

// ProgressAccepted: the machine adopted a member's progress report; its
// Pos is in canonical form.
type ProgressAccepted struct{ Progress }

// CommitRecorded: the machine adopted a committed checkpoint as the run's
// newest; its Pos is in canonical form.
type CommitRecorded struct{ CheckpointCommitted }

// StateChanged: the step moved the run to State.
type StateChanged struct{ State RunState }

// Publish: send Plan to the members named in To (for a new plan, every
// member of the current member set, in ring order).
type Publish struct {
	Plan Plan
	To   []string
}

// Log: write a log record.
type Log struct {
	Level slog.Level
	Msg   string
	Attrs []any
}

// ApproveCommit: the commit request passed; write its manifest and LATEST,
// then feed CheckpointCommitted back.
type ApproveCommit struct {
	ID         string
	Generation uint64
	Pos        Position
	Checkpoint string
}

// RejectCommit: refuse the commit request; Reason names what differed.
type RejectCommit struct {
	ID         string
	Generation uint64
	Pos        Position
	Reason     string
}

// Finished: the run is complete and its finish plan has been published;
// the server exits once the plan is delivered.
type Finished struct{}

func (Publish) isOutput()       {}
func (Log) isOutput()           {}
func (ApproveCommit) isOutput() {}
func (RejectCommit) isOutput()  {}
func (Finished) isOutput()      {}

func (MemberJoined) isOutput()     {}
func (MemberLeft) isOutput()       {}
func (ProgressAccepted) isOutput() {}
func (CommitRecorded) isOutput()   {}
func (StateChanged) isOutput()     {}

// MemberStatus is one member as the Status RPC shows it: its latest
// progress in the current run, or the run's start if it has not reported.
type MemberStatus struct {
	ID                string
	RingAddr          string
	Pos               Position
	Loss              float64
	SamplesPerSec     float64
	AllReduceFraction float64
}

// member is what the machine keeps about one member.
type member struct {
	status MemberStatus
	// heldGen is the pause generation the member last sent Holding for;
	// the holding counts only while it equals the current plan's.
	heldGen  uint64
	hasState bool
	held     Position
}

// Machine is the coordinator's run state machine. It is not safe for
// concurrent use: the server serialises events.
type Machine struct {
	cfg       Config
	end       Position
	committed Committed
	state     RunState
	// gen is the highest generation issued or seen; the next plan gets
	// gen+1.
	gen  uint64
	plan Plan // the newest plan; Generation 0 before the first
	// ran: this machine has published a run plan, so MinWorkers no longer
	// applies.
	ran      bool
	finished bool // Finished has been emitted
	members  map[string]*member
	// phasesLogged: "phase done" has been logged for every phase below it.
	phasesLogged int
	// suspended says why the machine may not start a run; "" when it may.
	suspended string
}

// NewMachine returns a machine for the run cfg whose newest checkpoint in
// storage is committed. A committed end position makes a machine that is
// done from the start: it answers every member with a finish plan.
func NewMachine(cfg Config, committed Committed) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pos, err := cfg.normalize(committed.Pos)
	if err != nil {
		return nil, fmt.Errorf("coordinator: committed checkpoint %q: %w", committed.Checkpoint, err)
	}
	if committed.Checkpoint == "" && pos != (Position{}) {
		return nil, fmt.Errorf("coordinator: committed position %v has no checkpoint", pos)
	}
	committed.Pos = pos
	m := &Machine{
		cfg:          cfg,
		end:          cfg.End(),
		committed:    committed,
		gen:          cfg.FirstGeneration,
		members:      map[string]*member{},
		phasesLogged: pos.Phase,
	}
	if pos == m.end {
		m.state = StateDone
	}
	return m, nil
}

// Config returns the run's config.
func (m *Machine) Config() Config { return m.cfg }

// State returns what the machine is doing.
func (m *Machine) State() RunState { return m.state }

// Done reports whether the run is complete.
func (m *Machine) Done() bool { return m.state == StateDone }

// Generation returns the generation of the newest plan, 0 before the first.
func (m *Machine) Generation() uint64 { return m.plan.Generation }

// Plan returns the newest plan, and false before the first.
func (m *Machine) Plan() (Plan, bool) { return clonePlan(m.plan), m.plan.Generation != 0 }

// Committed returns the newest committed checkpoint.
func (m *Machine) Committed() Committed { return m.committed }

// Members returns the current members in ring order with their status.
func (m *Machine) Members() []MemberStatus {
	ids := m.ids()
	out := make([]MemberStatus, len(ids))
	for i, id := range ids {
		out[i] = m.members[id].status
	}
	return out
}

// hasMember reports whether id is a current member.
func (m *Machine) hasMember(id string) bool {
	_, ok := m.members[id]
	return ok
}

// Step feeds one event to the machine and returns what the server must do,
// in order.
func (m *Machine) Step(e Event) []Output {
	var s step
	before := m.state
	m.step(&s, e)
	if m.state != before {
		// Finished stays last: the server exits on it.
		change := StateChanged{State: m.state}
		if n := len(s.out); n > 0 {
			if _, ok := s.out[n-1].(Finished); ok {
				s.out = append(s.out[:n-1], change, Finished{})
				return s.out
			}
		}
		s.out = append(s.out, change)
	}
	return s.out
}

func (m *Machine) step(s *step, e Event) {
	m.see(s, e)
	if m.state == StateDone {
		if up, ok := e.(MemberUp); ok {
			m.finishAgain(s, up)
		}
		return
	}
	switch e := e.(type) {
	case MemberUp:
		m.up(s, e)
	case MemberDown:
		m.down(s, e)
	case Holding:
		m.holding(s, e)
	case Progress:
		m.progress(s, e)
	case RingFailed:
		m.ringFailed(s, e)
	case CommitRequested:
		m.commitRequested(s, e)
	case CheckpointCommitted:
		m.checkpointCommitted(s, e)
	case Suspend:
		m.suspend(s, e)
	case Resume:
		m.resume(s, e)
	default:
		s.log(slog.LevelError, "unknown event ignored", "type", fmt.Sprintf("%T", e))
	}
}

// step collects the outputs of one Step.
type step struct{ out []Output }

func (s *step) log(level slog.Level, msg string, attrs ...any) {
	s.out = append(s.out, Log{Level: level, Msg: msg, Attrs: attrs})
}

// GenerationWindow is how far above the machine's counter a generation an
// event carries may be for the machine to adopt it. Generations count from
// unix seconds << 20 (Config.FirstGeneration), so a trainer that followed a
// coordinator whose clock ran up to about 17 minutes ahead of this one's
// (or that saw a million more plans) is still believed; a generation
// beyond it is impossible, and adopting it (up to 2^64, where the counter
// wraps) would make the run's next plans unrecognisable to its trainers.
const GenerationWindow = 1 << 30

// see raises the generation counter above any generation e carries, so a
// restarted coordinator never reuses one its trainers have seen.
func (m *Machine) see(s *step, e Event) {
	var g uint64
	switch e := e.(type) {
	case MemberUp:
		g = e.LastGeneration
	case Holding:
		g = e.Generation
	case Progress:
		g = e.Generation
	case RingFailed:
		g = e.Generation
	case CommitRequested:
		g = e.Generation
	}
	if g == math.MaxUint64 || (g > m.gen && g-m.gen > GenerationWindow) {
		// Adopting it would leave no next generation, or jump the counter
		// to where no trainer of this run can have been.
		s.log(slog.LevelWarn, "implausible generation ignored", "generation", g, "current", m.gen, "window", uint64(GenerationWindow))
		return
	}
	m.gen = max(m.gen, g)
}

// ids returns the member IDs in ring order.
func (m *Machine) ids() []string {
	ids := make([]string, 0, len(m.members))
	for id := range m.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (m *Machine) up(s *step, e MemberUp) {
	if e.ID == "" {
		s.log(slog.LevelWarn, "member without an ID ignored", "ring_addr", e.RingAddr)
		return
	}
	attrs := []any{"id", e.ID, "ring_addr", e.RingAddr, "has_state", e.HasState,
		"held", e.Held.String(), "last_generation", e.LastGeneration}
	reason := "member " + e.ID + " joined"
	if _, ok := m.members[e.ID]; ok {
		// A reconnect: the old stream is gone, so whatever the member was
		// doing in the current generation is void, and its ring address may
		// have changed. Down then up is one membership change: one plan.
		s.log(slog.LevelInfo, "member reconnected", attrs...)
		reason = "member " + e.ID + " reconnected"
	} else {
		s.log(slog.LevelInfo, "member joined", attrs...)
	}
	m.members[e.ID] = &member{status: MemberStatus{ID: e.ID, RingAddr: e.RingAddr}}
	s.out = append(s.out, MemberJoined{ID: e.ID, RingAddr: e.RingAddr})
	m.membershipChanged(s, reason)
}

func (m *Machine) down(s *step, e MemberDown) {
	if _, ok := m.members[e.ID]; !ok {
		s.log(slog.LevelDebug, "down of a non-member ignored", "id", e.ID, "reason", e.Reason)
		return
	}
	delete(m.members, e.ID)
	s.log(slog.LevelWarn, "member left", "id", e.ID, "reason", e.Reason)
	s.out = append(s.out, MemberLeft{ID: e.ID, Reason: e.Reason})
	reason := "member " + e.ID + " left"
	if e.Reason != "" {
		reason += ": " + e.Reason
	}
	m.membershipChanged(s, reason)
}

// membershipChanged re-plans after the member set changed: wait for more
// members before the first run, otherwise pause everyone and collect what
// they hold.
func (m *Machine) membershipChanged(s *step, reason string) {
	n := len(m.members)
	switch {
	case n == 0:
		// Nobody to tell; the next member up re-plans.
		m.state = StateWaiting
		s.log(slog.LevelInfo, "no members, waiting", "reason", reason)
	case !m.ran && n < m.cfg.MinWorkers:
		m.state = StateWaiting
		m.publish(s, Plan{Kind: KindWait,
			Reason: fmt.Sprintf("%s; waiting for %d members, have %d", reason, m.cfg.MinWorkers, n)})
	default:
		m.pause(s, reason)
	}
}

func (m *Machine) suspend(s *step, e Suspend) {
	reason := e.Reason
	if reason == "" {
		reason = "suspended"
	}
	first := m.suspended == ""
	m.suspended = reason
	if !first {
		return
	}
	s.log(slog.LevelWarn, "run suspended: pausing every member", "reason", reason)
	if len(m.members) > 0 && m.state != StateWaiting {
		m.pause(s, "suspended: "+reason)
	}
}

func (m *Machine) resume(s *step, e Resume) {
	if m.suspended == "" {
		return
	}
	s.log(slog.LevelInfo, "run resumed", "was", m.suspended, "reason", e.Reason)
	m.suspended = ""
	if len(m.members) > 0 {
		m.membershipChanged(s, "resumed: "+e.Reason)
	}
}

// Suspended says why the machine starts no run, "" when it is not
// suspended.
func (m *Machine) Suspended() string { return m.suspended }

// pause publishes a pause plan to every member; the holdings of earlier
// generations no longer count.
func (m *Machine) pause(s *step, reason string) {
	m.state = StatePausing
	m.publish(s, Plan{Kind: KindPause, Reason: reason})
}

func (m *Machine) holding(s *step, e Holding) {
	mem, ok := m.members[e.ID]
	if !ok || m.state != StatePausing || e.Generation != m.plan.Generation {
		s.log(slog.LevelDebug, "stale holding ignored", "id", e.ID, "generation", e.Generation,
			"current", m.plan.Generation, "state", m.state.String())
		return
	}
	mem.heldGen = e.Generation
	mem.hasState = e.HasState
	mem.held = Position{}
	if e.HasState {
		held, err := m.cfg.normalize(e.Held)
		if err != nil {
			// A trainer bug; its state cannot be a source, but its reply
			// still counts so the pause is not stuck on it.
			s.log(slog.LevelWarn, "held state ignored", "id", e.ID, "err", err.Error())
			mem.hasState = false
		} else {
			mem.held = held
		}
	}
	for _, id := range m.ids() {
		if m.members[id].heldGen != m.plan.Generation {
			return
		}
	}
	if m.suspended != "" {
		s.log(slog.LevelInfo, "every member holds; the run stays paused", "reason", m.suspended)
		return
	}
	m.startRun(s)
}

// startRun chooses where the members of a completed pause start from and
// publishes the run plan: the most advanced state a member holds if it is
// not behind the committed checkpoint (nothing is lost and nothing is
// loaded), else the committed checkpoint, else fresh networks.
func (m *Machine) startRun(s *step) {
	ids := m.ids()
	found, best, bestRank := false, Position{}, 0
	for r, id := range ids {
		mem := m.members[id]
		if mem.hasState && (!found || best.Less(mem.held)) {
			found, best, bestRank = true, mem.held, r
		}
	}
	n := len(ids)
	p := Plan{Kind: KindRun, CheckpointEvery: m.cfg.CheckpointEvery}
	switch {
	case found && !best.Less(m.committed.Pos):
		p.Source, p.Start, p.SourceRank = SourcePeer, best, bestRank
		p.Reason = fmt.Sprintf("%d members hold; rank %d (%s) holds %v", n, bestRank, ids[bestRank], best)
	case m.committed.Checkpoint != "":
		p.Source, p.Start, p.Checkpoint = SourceCheckpoint, m.committed.Pos, m.committed.Checkpoint
		p.Reason = fmt.Sprintf("%d members hold; no member holds state at or after the committed %v", n, m.committed.Pos)
	default:
		p.Source = SourceInit
		p.Reason = fmt.Sprintf("%d members hold; no state and no checkpoint: fresh start", n)
	}
	if p.Start.Step == 0 && p.Start.Phase > 0 && m.committed.Pos.Less(p.Start) {
		// Only a peer can hold a phase end uncommitted: its commit failed
		// or was lost. Rank 0 commits it before anyone steps on (at the
		// end of the run that is all the plan asks).
		p.CommitStart = true
		s.log(slog.LevelWarn, "a phase end is held but not committed; rank 0 commits it first",
			"start", p.Start.String(), "committed", m.committed.Pos.String(), "held_by", ids[bestRank])
	}
	owned := AssignShards(n, m.cfg.Shards)
	p.Members = make([]PlanMember, n)
	for r, id := range ids {
		p.Members[r] = PlanMember{ID: id, RingAddr: m.members[id].status.RingAddr, Shards: owned[r]}
		st := &m.members[id].status
		*st = MemberStatus{ID: st.ID, RingAddr: st.RingAddr, Pos: p.Start}
	}
	m.ran = true
	m.state = StateRunning
	m.publish(s, p)
	m.observe(s, p.Start)
}

func (m *Machine) progress(s *step, e Progress) {
	mem, ok := m.members[e.ID]
	if !ok || m.state != StateRunning || e.Generation != m.plan.Generation {
		s.log(slog.LevelDebug, "stale progress ignored", "id", e.ID, "generation", e.Generation,
			"current", m.plan.Generation, "state", m.state.String())
		return
	}
	pos, err := m.cfg.normalize(e.Pos)
	if err != nil {
		s.log(slog.LevelWarn, "progress ignored", "id", e.ID, "err", err.Error())
		return
	}
	if pos.Less(mem.status.Pos) {
		// Members start at the plan's start and only move forward.
		s.log(slog.LevelWarn, "progress ignored", "id", e.ID, "err",
			fmt.Sprintf("position %v is before %v, where the member already was in generation %d", pos, mem.status.Pos, e.Generation))
		return
	}
	mem.status.Pos = pos
	mem.status.Loss = e.Loss
	mem.status.SamplesPerSec = e.SamplesPerSec
	mem.status.AllReduceFraction = e.AllReduceFraction
	accepted := e
	accepted.Pos = pos
	s.out = append(s.out, ProgressAccepted{accepted})
	m.observe(s, pos)
}

// observe logs "phase done" once for every phase that pos shows finished.
func (m *Machine) observe(s *step, pos Position) {
	for ; m.phasesLogged < pos.Phase; m.phasesLogged++ {
		s.log(slog.LevelInfo, "phase done", "phase", m.phasesLogged)
	}
}

func (m *Machine) ringFailed(s *step, e RingFailed) {
	if _, ok := m.members[e.ID]; !ok || m.state != StateRunning || e.Generation != m.plan.Generation {
		s.log(slog.LevelDebug, "stale ring failure ignored", "id", e.ID, "generation", e.Generation,
			"current", m.plan.Generation, "state", m.state.String())
		return
	}
	s.log(slog.LevelWarn, "ring failed", "id", e.ID, "generation", e.Generation, "suspect", e.Suspect, "err", e.Err)
	reason := fmt.Sprintf("ring of generation %d failed at %s", e.Generation, e.ID)
	if e.Suspect != "" {
		reason += " (suspect " + e.Suspect + ")"
	}
	m.pause(s, reason+": "+e.Err)
}

func (m *Machine) commitRequested(s *step, e CommitRequested) {
	pos, reason := m.checkCommit(e)
	if reason != "" {
		s.log(slog.LevelWarn, "commit rejected", "id", e.ID, "generation", e.Generation,
			"position", e.Pos.String(), "checkpoint", e.Checkpoint, "reason", reason)
		s.out = append(s.out, RejectCommit{ID: e.ID, Generation: e.Generation, Pos: e.Pos, Reason: reason})
		return
	}
	s.log(slog.LevelDebug, "commit approved", "id", e.ID, "generation", e.Generation,
		"position", pos.String(), "checkpoint", e.Checkpoint)
	s.out = append(s.out, ApproveCommit{ID: e.ID, Generation: e.Generation, Pos: pos, Checkpoint: e.Checkpoint})
}

// checkCommit returns the normalised position of an acceptable commit, or
// why it is not acceptable.
func (m *Machine) checkCommit(e CommitRequested) (Position, string) {
	if m.suspended != "" {
		return e.Pos, "the run is suspended: " + m.suspended
	}
	if m.state != StateRunning {
		return e.Pos, fmt.Sprintf("no run in progress (coordinator is %s)", m.state)
	}
	if e.Generation != m.plan.Generation {
		return e.Pos, fmt.Sprintf("generation %d is not the current run generation %d", e.Generation, m.plan.Generation)
	}
	if rank0 := m.plan.Members[0].ID; e.ID != rank0 {
		return e.Pos, fmt.Sprintf("trainer %s is not rank 0 of generation %d (%s is)", e.ID, e.Generation, rank0)
	}
	if e.Checkpoint == "" {
		return e.Pos, "checkpoint is empty"
	}
	pos, err := m.cfg.normalize(e.Pos)
	if err != nil {
		return e.Pos, err.Error()
	}
	if !m.committed.Pos.Less(pos) {
		return pos, fmt.Sprintf("position %v is not after the committed position %v", pos, m.committed.Pos)
	}
	if pos.Less(m.plan.Start) {
		return pos, fmt.Sprintf("position %v is before the run start %v", pos, m.plan.Start)
	}
	return pos, ""
}

func (m *Machine) checkpointCommitted(s *step, e CheckpointCommitted) {
	pos, err := m.cfg.normalize(e.Pos)
	switch {
	case err != nil:
		s.log(slog.LevelWarn, "committed checkpoint ignored", "checkpoint", e.Checkpoint, "err", err.Error())
		return
	case e.Checkpoint == "":
		s.log(slog.LevelWarn, "committed checkpoint ignored", "position", pos.String(), "err", "checkpoint is empty")
		return
	case !m.committed.Pos.Less(pos):
		// Two approved commits can land out of order; the newer one stays.
		s.log(slog.LevelWarn, "committed checkpoint not after the newest ignored", "checkpoint", e.Checkpoint,
			"position", pos.String(), "committed", m.committed.Pos.String())
		return
	}
	m.committed = Committed{Pos: pos, Checkpoint: e.Checkpoint}
	recorded := e
	recorded.Pos = pos
	s.out = append(s.out, CommitRecorded{recorded})
	// Phase ends are milestones; periodic checkpoints would drown them.
	level := slog.LevelDebug
	if pos.Step == 0 {
		level = slog.LevelInfo
	}
	s.log(level, "checkpoint committed", "position", pos.String(), "checkpoint", e.Checkpoint)
	m.observe(s, pos)
	if pos == m.end {
		m.finish(s, fmt.Sprintf("run complete: checkpoint %s at the end %v", e.Checkpoint, pos))
	}
}

// finish publishes the finish plan and tells the server to exit.
func (m *Machine) finish(s *step, reason string) {
	m.state = StateDone
	m.observe(s, m.end)
	m.publish(s, Plan{Kind: KindFinish, Reason: reason})
	m.finished = true
	s.out = append(s.out, Finished{})
}

// finishAgain answers a member that comes up after the run is done with
// the finish plan, making it first if this machine started done.
func (m *Machine) finishAgain(s *step, e MemberUp) {
	if !m.finished {
		if e.ID != "" {
			m.members[e.ID] = &member{status: MemberStatus{ID: e.ID, RingAddr: e.RingAddr, Pos: m.end}}
			s.out = append(s.out, MemberJoined{ID: e.ID, RingAddr: e.RingAddr})
		}
		m.finish(s, fmt.Sprintf("run complete: checkpoint %s at the end %v", m.committed.Checkpoint, m.end))
		return
	}
	if e.ID == "" {
		return
	}
	s.log(slog.LevelInfo, "finish plan sent again", "id", e.ID, "generation", m.plan.Generation)
	s.out = append(s.out, Publish{Plan: clonePlan(m.plan), To: []string{e.ID}})
}

// publish gives p the next generation and the current members (when it
// does not name them itself), makes it the current plan, logs it and
// publishes it to every member.
func (m *Machine) publish(s *step, p Plan) {
	m.gen++
	p.Run = m.cfg.Run
	p.Generation = m.gen
	ids := m.ids()
	if p.Members == nil {
		p.Members = make([]PlanMember, len(ids))
		for r, id := range ids {
			p.Members[r] = PlanMember{ID: id, RingAddr: m.members[id].status.RingAddr}
		}
	}
	m.plan = p
	attrs := []any{"generation", p.Generation, "kind", p.Kind.String(), "members", strings.Join(ids, ",")}
	if p.Kind == KindRun {
		attrs = append(attrs, "start", p.Start.String(), "source", p.Source.String())
		switch p.Source {
		case SourcePeer:
			attrs = append(attrs, "source_rank", p.SourceRank)
		case SourceCheckpoint:
			attrs = append(attrs, "checkpoint", p.Checkpoint)
		}
	}
	attrs = append(attrs, "reason", p.Reason)
	s.log(slog.LevelInfo, "plan", attrs...)
	if len(ids) > 0 {
		s.out = append(s.out, Publish{Plan: clonePlan(p), To: ids})
	}
}

// clonePlan copies p deeply, so that neither the server nor a test can
// change the machine's plan through an output.
func clonePlan(p Plan) Plan {
	if p.Members != nil {
		ms := make([]PlanMember, len(p.Members))
		for i, pm := range p.Members {
			pm.Shards = slices.Clone(pm.Shards)
			ms[i] = pm
		}
		p.Members = ms
	}
	return p
}
