package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/dashboard"
)

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

func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return mf
}

// sample is the value of name's series whose trainer label is trainer
// ("" for a family without labels): a counter, a gauge or a histogram's
// count.
func sample(t *testing.T, mf map[string]*dto.MetricFamily, name, trainer string) float64 {
	t.Helper()
	f := mf[name]
	if f == nil {
		t.Fatalf("family %s missing", name)
	}
	for _, m := range f.Metric {
		got := ""
		for _, l := range m.Label {
			if l.GetName() == "trainer" {
				got = l.GetValue()
			}
		}
		if got != trainer {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("family %s has no series for trainer %q", name, trainer)
	return 0
}

func dashboardStatus(t *testing.T, base string) *dashboard.Status {
	t.Helper()
	resp, err := http.Get(base + "api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st dashboard.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// TestDashboardFollowsTheService runs two fake trainers through a
// coordinator that serves its dashboard: /metrics scraped twice during the
// run parses and its counters advance, /api/status shows the members and
// the one that leaves, OnCommit sees the commits, and metrics.jsonl holds
// every report and commit.
func TestDashboardFollowsTheService(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	store := openStore(t)
	opts := serverOptions(store, log)
	opts.MinWorkers, opts.HTTPAddr, opts.Method = 2, "127.0.0.1:0", "dsb"
	opts.PhaseNames = []string{"ipf 1 backward", "ipf 1 forward"}
	var mu sync.Mutex
	var hooked []Position
	opts.OnCommit = func(_ context.Context, _ string, pos Position) {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, pos)
	}
	c := startServer(t, opts)
	base := c.DashboardURL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") || c.Dashboard() == nil {
		t.Fatalf("dashboard URL %q", base)
	}
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
	first := scrapeMetrics(t, base)

	st := dashboardStatus(t, base)
	if st.Run != testRun || st.State != "running" || st.Generation != gen || st.Live != 2 || strings.Join(st.Ring, ",") != "t1,t2" {
		t.Fatalf("status: run %s state %s generation %d live %d ring %v", st.Run, st.State, st.Generation, st.Live, st.Ring)
	}
	if st.Checkpoint == nil || st.Checkpoint.Name != req.Checkpoint || st.Checkpoint.Bytes != 1234 {
		t.Errorf("last checkpoint %+v, want %s of 1234 bytes", st.Checkpoint, req.Checkpoint)
	}
	if len(st.LossCurves) != 2 || len(st.LossCurves[0].Steps) != 1 || st.LossCurves[0].Name != "ipf 1 backward" {
		t.Errorf("loss curves %+v", st.LossCurves)
	}

	// The phase ends: the last report of phase 0 arrives at {1, 0}.
	t1.progress(gen, Position{Phase: 1, Step: 0}, 1.25, 6)
	t2.progress(gen, Position{Phase: 1, Step: 0}, 1.25, 6)
	end := checkpointAt(t, store, "t1", gen, Position{Phase: 1, Step: 0})
	if _, err := t1.client.Commit(ctx, end); err != nil {
		t.Fatalf("phase-end commit: %v", err)
	}
	second := scrapeMetrics(t, base)
	for _, c := range []struct{ name, trainer string }{
		{"sbtrain_steps_total", "t1"}, {"sbtrain_steps_total", "t2"},
		{"sbtrain_allreduce_duration_seconds_total", "t1"}, {"sbtrain_allreduce_bytes_total", "t2"},
		{"sbtrain_step_duration_seconds", "t1"},
		{"sbtrain_checkpoints_total", ""}, {"sbtrain_checkpoint_bytes_total", ""}, {"sbtrain_checkpoint_duration_seconds", ""},
	} {
		if a, b := sample(t, first, c.name, c.trainer), sample(t, second, c.name, c.trainer); b <= a {
			t.Errorf("%s{trainer=%q} did not advance: %v then %v", c.name, c.trainer, a, b)
		}
	}
	for name, want := range map[string]float64{"sbtrain_members": 2, "sbtrain_generation": float64(gen), "sbtrain_phase": 1} {
		if got := sample(t, second, name, ""); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := sample(t, second, "sbtrain_steps_total", "t1"); got != 10 {
		t.Errorf("t1 applied %v steps, want 10", got)
	}
	if _, ok := second["sbtrain_samples_per_second"]; !ok {
		t.Error("sbtrain_samples_per_second missing")
	}
	if _, ok := second["sbtrain_loss"]; !ok {
		t.Error("sbtrain_loss missing")
	}

	// t2 leaves: its row turns gone and its series stays, at 0.
	ps2.stop()
	deadline := time.Now().Add(planWithin)
	for {
		st = dashboardStatus(t, base)
		if st.Live == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("t2 still live after its stream ended: %+v", st.Members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if g := st.Members[len(st.Members)-1]; g.ID != "t2" || g.State != "gone" || g.Reason == "" {
		t.Errorf("departed member %+v", g)
	}
	if got := sample(t, scrapeMetrics(t, base), "sbtrain_member_up", "t2"); got != 0 {
		t.Errorf("sbtrain_member_up{trainer=t2} = %v, want 0", got)
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
	if _, err := http.Get(base + "healthz"); err == nil {
		t.Error("the dashboard still answers after Close")
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
