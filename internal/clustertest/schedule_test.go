package clustertest

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	seedFlag      = flag.Uint64("seed", 0, "replay the fault schedule of this seed only (also "+seedEnv+")")
	schedulesFlag = flag.Int("schedules", 50, "how many seeded fault schedules TestFaultSchedules runs")
)

const seedEnv = "SBTRAIN_HARNESS_SEED"

func TestMain(m *testing.M) {
	if spec := os.Getenv(coordinatorProcEnv); spec != "" {
		os.Exit(runCoordinatorProc(spec))
	}
	flag.Parse()
	// The schedules spend their time waiting on failure detectors and
	// deadlines, not computing: run more of them at once than there are
	// cores, unless -parallel says otherwise.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(m.Run())
}

// The harness's run: 3 trainers from the start.
const scheduleTrainers = 3

// The fault-free run every schedule is compared with, run once.
var (
	baseOnce sync.Once
	baseRes  Final
	baseErr  error
)

func faultFree(t *testing.T) Final {
	t.Helper()
	baseOnce.Do(func() {
		baseErr = fmt.Errorf("the fault-free run failed in %s", t.Name())
		c := Start(t, Options{Trainers: scheduleTrainers, Seed: 1})
		if err := c.Wait(2 * time.Minute); err != nil {
			t.Fatalf("fault-free run: %v", err)
		}
		c.CheckReplicas(t)
		c.CheckCommitted(t)
		baseRes, baseErr = c.Final(t), nil
		t.Logf("fault-free run: %d generations", c.Generations())
	})
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseRes
}

// schedules lists the seeds to run: the one asked for, or -schedules
// consecutive seeds from a base drawn from the clock (printed, so a
// failing one can be replayed with -seed).
func schedules(t *testing.T) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	if s := os.Getenv(seedEnv); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil || seed == 0 {
			t.Fatalf("%s=%q: want a positive integer", seedEnv, s)
		}
		return []uint64{seed}
	}
	if *schedulesFlag <= 0 {
		return nil
	}
	base := uint64(time.Now().UnixNano()) & (1<<40 - 1)
	out := make([]uint64, *schedulesFlag)
	for i := range out {
		out[i] = base + uint64(i)
	}
	t.Logf("schedules from seed %d to %d (replay one with -seed N or %s=N)", out[0], out[len(out)-1], seedEnv)
	return out
}

// Seeded random fault schedules on a 3-trainer run: kills (with and
// without replacements), gossip partitions of a trainer or the
// coordinator, lossy and slow gossip, dropped, cut, truncated, stalled
// and delayed ring frames, and forged ring handshakes, gossip
// packets and control calls. Each run must finish, its replicas must
// never diverge, its final parameters must be the bytes of the
// fault-free run's, and nothing committed may be lost.
func TestFaultSchedules(t *testing.T) {
	base := faultFree(t)
	for _, seed := range schedules(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			c := Start(t, Options{Trainers: scheduleTrainers, Seed: seed})
			s := NewSchedule(seed, c.TotalSteps())
			stop := c.Play(s)
			err := c.Wait(2 * time.Minute)
			fired := stop()
			defer func() {
				if t.Failed() {
					t.Logf("failed schedule %s (fired %d of %d events); replay with -seed %d", s, len(fired), len(s.Events), seed)
				}
			}()
			if err != nil {
				t.Fatal(err)
			}
			c.CheckReplicas(t)
			c.CheckCommitted(t)
			d, err := Distance(c.Final(t), base)
			if err != nil {
				t.Fatal(err)
			}
			if d != 0 {
				t.Errorf("final parameters at relative L2 distance %.3g from the fault-free run's, want the same bytes (0)", d)
			}
			// A forged hello or report once made the coordinator re-plan
			// hundreds of times a second, and so did a ring link that
			// fails every connection (TestFailingRingLinkBacksOff).
			// The bound is a rate, which leaves room for the failures a
			// starved machine adds (probes and ring deadlines missed under
			// the race detector on busy cores cost about one a second).
			wall := time.Since(began)
			if g := c.Generations(); float64(g) > 20+10*wall.Seconds() {
				t.Errorf("%d generations in %s for %d faults: re-planning without cause", g, wall.Round(time.Millisecond), len(fired))
			}
			t.Logf("%d generations, %d of %d faults fired", c.Generations(), len(fired), len(s.Events))
		})
	}
}
