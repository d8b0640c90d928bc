package clustertest

import (
	"slices"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
)

// Trainers come and go during a run: one is killed, the rest carry on
// from their memory, a late one joins and takes shards; the run finishes
// with the bytes of the undisturbed run.
func TestElasticMembership(t *testing.T) {
	base := faultFree(t)
	c := Start(t, Options{Trainers: scheduleTrainers, StepPause: 5 * time.Millisecond})
	c.WaitStatus(t, "a committed checkpoint", time.Minute, func(st *api.RunStatus) bool { return st.CommittedCheckpoint != "" })
	before := c.Status().Generation
	killed := time.Now()
	c.Kill("trainer-01")
	c.WaitStatus(t, "trainer-01 gone from the status", 5*time.Second, func(st *api.RunStatus) bool {
		return !slices.Contains(Members(st), "trainer-01")
	})
	t.Logf("trainer-01 gone %s after the kill", time.Since(killed).Round(time.Millisecond))
	c.WaitStatus(t, "a run of trainer-00 and trainer-02", 30*time.Second, func(st *api.RunStatus) bool {
		return st.State == "running" && st.Generation > before && slices.Equal(Members(st), []string{"trainer-00", "trainer-02"})
	})
	late := c.AddTrainer()
	c.WaitStatus(t, "a run with "+late, 30*time.Second, func(st *api.RunStatus) bool {
		return st.State == "running" && slices.Contains(Members(st), late)
	})
	if err := c.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if c.Stepped(late) == 0 {
		t.Errorf("%s joined and trained no step", late)
	}
	c.CheckReplicas(t)
	c.CheckCommitted(t)
	d, err := Distance(c.Final(t), base)
	if err != nil {
		t.Fatal(err)
	}
	if d != 0 {
		t.Errorf("final parameters at relative L2 distance %.3g from the undisturbed run's, want the same bytes (0)", d)
	}
}

// A trainer cut off from gossip long enough that the coordinator drops
// it, and it in turn gives up on every peer, comes back when the
// partition heals. It once waited on its control stream for a first plan
// that never came: memberlist probes only the nodes it thinks alive, so
// neither side looked for the other again, and after its coordinator
// timeout the trainer exited with an error.
func TestPartitionedTrainerRejoins(t *testing.T) {
	c := Start(t, Options{Trainers: scheduleTrainers, Steps: 150, StepPause: 20 * time.Millisecond})
	c.WaitStatus(t, "a run of 3", time.Minute, func(st *api.RunStatus) bool {
		return st.State == "running" && len(st.Members) == 3
	})
	tr := c.Trainer("trainer-01")
	c.Gossip.CutOff(tr.GossipAddr(), true)
	c.WaitStatus(t, "trainer-01 dropped", 15*time.Second, func(st *api.RunStatus) bool {
		return !slices.Contains(Members(st), "trainer-01")
	})
	// Long enough for trainer-01 to declare every peer dead too.
	time.Sleep(3 * time.Second)
	c.Gossip.CutOff(tr.GossipAddr(), false)
	healed := time.Now()
	c.WaitStatus(t, "trainer-01 back in the run", 10*time.Second, func(st *api.RunStatus) bool {
		return slices.Contains(Members(st), "trainer-01")
	})
	t.Logf("trainer-01 back %s after the partition healed", time.Since(healed).Round(time.Millisecond))
	if err := c.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	c.CheckReplicas(t)
	c.CheckCommitted(t)
}

// A coordinator restarted mid-run takes the run over from its trainers
// (or the newest checkpoint), and the run finishes with the bytes of the
// undisturbed one.
func TestCoordinatorRestart(t *testing.T) {
	base := faultFree(t)
	c := Start(t, Options{Trainers: scheduleTrainers, StepPause: 5 * time.Millisecond})
	c.WaitStatus(t, "a checkpoint mid-phase", time.Minute, func(st *api.RunStatus) bool {
		return st.GetCommitted().GetStep() > 0
	})
	c.RestartCoordinator()
	c.WaitStatus(t, "the new coordinator running the 3", 30*time.Second, func(st *api.RunStatus) bool {
		return st.State == "running" && len(st.Members) == 3
	})
	if err := c.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	c.CheckReplicas(t)
	c.CheckCommitted(t)
	d, err := Distance(c.Final(t), base)
	if err != nil {
		t.Fatal(err)
	}
	if d != 0 {
		t.Errorf("final parameters at relative L2 distance %.3g from the undisturbed run's, want the same bytes (0)", d)
	}
}

// A ring link that fails every connection fails every generation while it
// lasts. The trainers back off between those generations: each answers
// the coordinator's next pause only after its backoff, and the coordinator
// plans no run before every member has answered. The pause once cut the
// backoff short, and the coordinator re-planned hundreds of times a
// second for as long as the link failed.
func TestFailingRingLinkBacksOff(t *testing.T) {
	const fault = 4 * time.Second
	c := Start(t, Options{Trainers: scheduleTrainers, Steps: 150, StepPause: 20 * time.Millisecond})
	st := c.WaitStatus(t, "a run of 3", time.Minute, func(st *api.RunStatus) bool {
		return st.State == "running" && len(st.Members) == 3
	})
	a, b := c.Trainer("trainer-00").RingAddr(), c.Trainer("trainer-01").RingAddr()
	before := st.Generation
	c.Ring.SetFault(a, b, allreduce.Fault{Cut: 1})
	c.Ring.SetFault(b, a, allreduce.Fault{Cut: 1})
	time.Sleep(fault)
	during := c.Status().Generation - before
	c.Ring.SetFault(a, b, allreduce.Fault{})
	c.Ring.SetFault(b, a, allreduce.Fault{})
	// Backoff from 200 ms doubling to 5 s fits about 5 failures in 4 s,
	// each a run and a pause; without it there are hundreds.
	if during > 30 {
		t.Errorf("%d generations planned in %s of a failing ring link, want at most 30: the trainers did not back off", during, fault)
	}
	t.Logf("%d generations planned in %s of a failing ring link", during, fault)
	if err := c.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	c.CheckReplicas(t)
	c.CheckCommitted(t)
}
