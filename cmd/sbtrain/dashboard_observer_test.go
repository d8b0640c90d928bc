package main

import (
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/dashboard"
)

// The coordinator's facts, passed through dashboardObserver, are what the
// dashboard shows: members, the plan, the loss curve, the last checkpoint
// and a member that left.
func TestDashboardObserverShowsTheFacts(t *testing.T) {
	d := dashboard.New(dashboard.Options{Run: "r", Method: "dsb", PhaseNames: []string{"ipf 1 backward", "ipf 1 forward"}, StepsPerPhase: 10})
	defer d.Close()
	var o coordinator.Observer = dashboardObserver{d}
	o.NotifyState(coordinator.StateWaiting)
	o.NotifyJoin(coordinator.MemberJoined{ID: "t1", RingAddr: "127.0.0.1:1"})
	o.NotifyJoin(coordinator.MemberJoined{ID: "t2", RingAddr: "127.0.0.1:2"})
	o.NotifyPlan(coordinator.Plan{Generation: 7, Kind: coordinator.KindRun, Source: coordinator.SourceInit,
		Members: []coordinator.PlanMember{{ID: "t1", RingAddr: "127.0.0.1:1", Shards: []int{0}}, {ID: "t2", RingAddr: "127.0.0.1:2", Shards: []int{1}}}})
	o.NotifyState(coordinator.StateRunning)
	for _, id := range []string{"t1", "t2"} {
		o.NotifyProgress(coordinator.ProgressAccepted{Progress: coordinator.Progress{ID: id, Generation: 7,
			Pos: coordinator.Position{Phase: 0, Step: 4}, Loss: 1.5, SamplesPerSec: 500, Steps: 4, StepSeconds: 0.04}})
	}
	o.NotifyCommit(coordinator.CommitRecorded{CheckpointCommitted: coordinator.CheckpointCommitted{
		Pos: coordinator.Position{Phase: 0, Step: 5}, Checkpoint: "c5", Bytes: 1234, Seconds: 0.1}})
	o.NotifyLeave(coordinator.MemberLeft{ID: "t2", Reason: "stream ended"})

	st := d.Status()
	if st.State != "running" || st.Generation != 7 || st.Live != 1 || strings.Join(st.Ring, ",") != "t1,t2" {
		t.Errorf("status: state %s generation %d live %d ring %v", st.State, st.Generation, st.Live, st.Ring)
	}
	if st.Checkpoint == nil || st.Checkpoint.Name != "c5" || st.Checkpoint.Bytes != 1234 {
		t.Errorf("last checkpoint %+v, want c5 of 1234 bytes", st.Checkpoint)
	}
	if len(st.LossCurves) == 0 || st.LossCurves[0].Name != "ipf 1 backward" || len(st.LossCurves[0].Steps) != 1 {
		t.Errorf("loss curves %+v", st.LossCurves)
	}
	if g := st.Members[len(st.Members)-1]; g.ID != "t2" || g.State != "gone" || g.Reason != "stream ended" {
		t.Errorf("departed member %+v", g)
	}
}
