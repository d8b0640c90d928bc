package coordinator

import "time"

// Observer is told the facts of a run as the state machine decides them:
// on the coordinator's loop goroutine, one at a time, in the order the
// machine decided them, as memberlist tells its EventDelegate of joins and
// leaves. A method must return quickly and must not call the coordinator
// back. The metrics log is one observer; the command adds the dashboard.
type Observer interface {
	NotifyState(RunState)
	NotifyJoin(MemberJoined)
	NotifyLeave(MemberLeft)
	// NotifyPlan is called once per plan generation: a plan sent again to
	// one member is not news.
	NotifyPlan(Plan)
	NotifyProgress(ProgressAccepted)
	NotifyCommit(CommitRecorded)
}

// observers tells each of several observers, in order.
type observers []Observer

func (os observers) NotifyState(s RunState) {
	for _, o := range os {
		o.NotifyState(s)
	}
}

func (os observers) NotifyJoin(j MemberJoined) {
	for _, o := range os {
		o.NotifyJoin(j)
	}
}

func (os observers) NotifyLeave(l MemberLeft) {
	for _, o := range os {
		o.NotifyLeave(l)
	}
}

func (os observers) NotifyPlan(p Plan) {
	for _, o := range os {
		o.NotifyPlan(p)
	}
}

func (os observers) NotifyProgress(p ProgressAccepted) {
	for _, o := range os {
		o.NotifyProgress(p)
	}
}

func (os observers) NotifyCommit(c CommitRecorded) {
	for _, o := range os {
		o.NotifyCommit(c)
	}
}

// metricsObserver writes progress and commits into metrics.jsonl.
type metricsObserver struct {
	log           *metricsLog
	stepsPerPhase int64
}

func (metricsObserver) NotifyState(RunState)    {}
func (metricsObserver) NotifyJoin(MemberJoined) {}
func (metricsObserver) NotifyLeave(MemberLeft)  {}
func (metricsObserver) NotifyPlan(Plan)         {}

func (m metricsObserver) NotifyProgress(p ProgressAccepted) {
	// The loss is that of the last step the report covers: a report at
	// the start of a phase closes the previous one.
	last := p.Pos
	if last.Step == 0 && last.Phase > 0 {
		last = Position{Phase: last.Phase - 1, Step: m.stepsPerPhase}
	}
	loss := p.Loss
	m.log.add(MetricsRecord{Time: time.Now(), Kind: RecordProgress, Trainer: p.ID, Generation: p.Generation,
		Phase: last.Phase, Step: last.Step, Loss: &loss, SamplesPerSec: p.SamplesPerSec, Steps: p.Steps,
		StepSeconds: p.StepSeconds, AllReduceSeconds: p.AllReduceSeconds, AllReduceBytes: p.AllReduceBytes})
}

func (m metricsObserver) NotifyCommit(c CommitRecorded) {
	m.log.add(MetricsRecord{Time: time.Now(), Kind: RecordCheckpoint, Trainer: c.Trainer, Generation: c.Generation,
		Phase: c.Pos.Phase, Step: c.Pos.Step, Checkpoint: c.Checkpoint, Bytes: c.Bytes, Seconds: c.Seconds})
}
