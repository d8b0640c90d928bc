package dashboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var phaseNames = []string{"ipf 1 backward", "ipf 1 forward", "ipf 2 backward", "ipf 2 forward"}

func newDashboard(t *testing.T) *Dashboard {
	t.Helper()
	return New(Options{Run: "demo", Method: "dsb", PhaseNames: phaseNames, StepsPerPhase: 100, EventInterval: 20 * time.Millisecond})
}

// feedRun tells d about a run of three trainers: a wait, a pause and a run
// plan, a progress report from each and a committed checkpoint.
func feedRun(d *Dashboard) {
	d.PlanPublished(Plan{Generation: 10, Kind: "wait", Members: []PlanMember{{ID: "t0"}}, Reason: "waiting for 3 members, have 1"})
	for _, id := range []string{"t0", "t1", "t2"} {
		d.MemberJoined(id, "127.0.0.1:1"+id[1:])
	}
	d.PlanPublished(Plan{Generation: 11, Kind: "pause", Members: []PlanMember{{ID: "t0"}, {ID: "t1"}, {ID: "t2"}}})
	d.PlanPublished(Plan{Generation: 12, Kind: "run", Source: "init",
		Members: []PlanMember{{ID: "t0", Shards: []int{0, 1}}, {ID: "t1", Shards: []int{2, 3}}, {ID: "t2", Shards: []int{4, 5}}}})
	for i, id := range []string{"t0", "t1", "t2"} {
		d.Progress(Progress{Trainer: id, Generation: 12, Pos: Position{Phase: 0, Step: int64(10 + i)}, Loss: 2 - 0.1*float64(i),
			SamplesPerSec: 1000, Steps: int64(10 + i), StepSeconds: 0.1, AllReduceSeconds: 0.02, AllReduceBytes: 4096})
	}
	d.CheckpointCommitted(Checkpoint{Name: "00000001-p0000-s000000000010", Pos: Position{Phase: 0, Step: 10}, Bytes: 5000, Seconds: 0.05})
}

func getStatus(t *testing.T, url string) *Status {
	t.Helper()
	resp, err := http.Get(url + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/api/status: %s, content type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/api/status: %v", err)
	}
	return &st
}

func TestStatusFollowsEvents(t *testing.T) {
	d := newDashboard(t)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	if st := getStatus(t, srv.URL); st.State != "starting" || len(st.Members) != 0 || len(st.Phases) != 4 {
		t.Fatalf("fresh dashboard: state %q, %d members, %d phases", st.State, len(st.Members), len(st.Phases))
	}
	feedRun(d)
	d.MemberLeft("t1", "gossip declared it dead")
	d.PlanPublished(Plan{Generation: 13, Kind: "pause", Members: []PlanMember{{ID: "t0"}, {ID: "t2"}}, Reason: "member t1 left"})

	st := getStatus(t, srv.URL)
	if st.Run != "demo" || st.State != "pausing" || st.Generation != 13 || st.Live != 2 {
		t.Fatalf("run %q state %q generation %d live %d, want demo pausing 13 2", st.Run, st.State, st.Generation, st.Live)
	}
	if got := strings.Join(st.Ring, ","); got != "t0,t1,t2" {
		t.Errorf("ring %s, want the newest run plan's t0,t1,t2", got)
	}
	if st.Position != (Position{Phase: 0, Step: 12}) {
		t.Errorf("position %+v, want the leading member's 0:12", st.Position)
	}
	want := []struct {
		id, state string
		rank      int
	}{{"t0", "live", 0}, {"t2", "live", 2}, {"t1", "gone", -1}}
	if len(st.Members) != len(want) {
		t.Fatalf("%d members, want %d", len(st.Members), len(want))
	}
	for i, w := range want {
		m := st.Members[i]
		if m.ID != w.id || m.State != w.state || m.Rank != w.rank {
			t.Errorf("member %d: %s %s rank %d, want %s %s rank %d", i, m.ID, m.State, m.Rank, w.id, w.state, w.rank)
		}
	}
	if g := st.Members[2]; g.Reason != "gossip declared it dead" || g.Left.IsZero() {
		t.Errorf("gone member: reason %q left %v", g.Reason, g.Left)
	}
	if m := st.Members[0]; m.Loss == nil || *m.Loss != 2 || m.Steps != 10 || math.Abs(float64(m.StepSeconds)-0.01) > 1e-12 ||
		math.Abs(float64(m.AllReduceFrac)-0.2) > 1e-12 || len(m.Shards) != 2 {
		t.Errorf("member t0: %+v", m)
	}
	if st.Loss == nil || math.Abs(float64(*st.Loss)-1.8) > 1e-12 || st.SamplesPerSec != 1000 {
		t.Errorf("loss %v, samples/s %v, want 1.8 and 1000", st.Loss, st.SamplesPerSec)
	}
	if c := st.Checkpoint; c == nil || c.Name != "00000001-p0000-s000000000010" || c.Bytes != 5000 || st.Checkpoints != 1 {
		t.Errorf("last checkpoint %+v (%d)", c, st.Checkpoints)
	}
	if len(st.LossCurves) != 4 || len(st.LossCurves[0].Steps) != 3 || st.LossCurves[0].Steps[2] != 12 {
		t.Errorf("loss curves %+v", st.LossCurves)
	}
	if got := []string{st.Phases[0].State, st.Phases[1].State}; got[0] != "running" || got[1] != "pending" {
		t.Errorf("phase states %v", got)
	}
	kinds := []string{}
	for _, e := range st.Timeline {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); got != "wait,pause,run,pause" {
		t.Errorf("timeline %s", got)
	}
	if run := st.Timeline[2]; run.Start == nil || run.Source != "init" || len(run.Members) != 3 {
		t.Errorf("run entry %+v", run)
	}
	// A rejoin makes the member live again.
	d.MemberJoined("t1", "127.0.0.1:2")
	if st := getStatus(t, srv.URL); st.Live != 3 {
		t.Errorf("after a rejoin: %d live, want 3", st.Live)
	}
}

// The loss a report at the start of phase p+1 carries is the last loss of
// phase p; a finish plan marks every phase done.
func TestPhaseEndLossAndFinish(t *testing.T) {
	d := newDashboard(t)
	d.PlanPublished(Plan{Generation: 1, Kind: "run", Members: []PlanMember{{ID: "t0"}}})
	d.MemberJoined("t0", "a")
	d.Progress(Progress{Trainer: "t0", Generation: 1, Pos: Position{Phase: 1}, Loss: 0.5, Steps: 100})
	st := d.Status()
	if c := st.LossCurves[0]; len(c.Steps) != 1 || c.Steps[0] != 100 || len(st.LossCurves[1].Steps) != 0 {
		t.Fatalf("curves after a phase-end report: %+v", st.LossCurves)
	}
	d.PlanPublished(Plan{Generation: 2, Kind: "finish", Members: []PlanMember{{ID: "t0"}}})
	st = d.Status()
	if st.State != "done" || st.Position.Phase != 4 {
		t.Fatalf("after finish: %s at %+v", st.State, st.Position)
	}
	for _, p := range st.Phases {
		if p.State != "done" {
			t.Errorf("phase %d is %s after finish", p.Index, p.State)
		}
	}
}

// The page reads every list without a null check.
func TestStatusListsAreNeverNull(t *testing.T) {
	d := newDashboard(t)
	check := func(when string) {
		b, _, _ := d.snapshot()
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"phases", "timeline", "ring", "members", "loss_curves"} {
			if _, ok := doc[k].([]any); !ok {
				t.Errorf("%s: %s is %v, want a list", when, k, doc[k])
			}
		}
		for _, c := range doc["loss_curves"].([]any) {
			c := c.(map[string]any)
			if _, ok := c["steps"].([]any); !ok {
				t.Errorf("%s: loss curve steps %v", when, c["steps"])
			}
			if _, ok := c["loss"].([]any); !ok {
				t.Errorf("%s: loss curve values %v", when, c["loss"])
			}
		}
		for _, m := range doc["members"].([]any) {
			if _, ok := m.(map[string]any)["shards"].([]any); !ok {
				t.Errorf("%s: member shards %v", when, m)
			}
		}
	}
	check("fresh")
	d.MemberJoined("t0", "a")
	d.MemberJoined("t1", "b")
	// t1 owns no shard (more members than shards).
	d.PlanPublished(Plan{Generation: 1, Kind: "run", Members: []PlanMember{{ID: "t0", Shards: []int{0}}, {ID: "t1"}}})
	check("running")
}

func TestNonFiniteLossKeepsJSONValid(t *testing.T) {
	d := newDashboard(t)
	d.MemberJoined("t0", "a")
	d.Progress(Progress{Trainer: "t0", Pos: Position{Step: 1}, Loss: math.NaN(), SamplesPerSec: math.Inf(1)})
	b, _, _ := d.snapshot()
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status with a NaN loss: %v\n%s", err, b)
	}
	if st.Members[0].Loss != nil || len(st.LossCurves[0].Steps) != 0 {
		t.Errorf("NaN loss shown: %+v %+v", st.Members[0], st.LossCurves[0])
	}
}

// readEvent reads one server-sent event of type status and decodes it.
func readEvent(t *testing.T, r *bufio.Reader) *Status {
	t.Helper()
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if event == "status" {
				var st Status
				if err := json.Unmarshal([]byte(data), &st); err != nil {
					t.Fatalf("event data: %v", err)
				}
				return &st
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func openEvents(t *testing.T, ctx context.Context, url string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/events: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return resp, bufio.NewReader(resp.Body)
}

// waitClients waits until n event streams are open.
func waitClients(t *testing.T, d *Dashboard, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(d.clients) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d event streams open, want %d", len(d.clients), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEventsPushChangesAndEndWithTheClient(t *testing.T) {
	d := newDashboard(t)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, r := openEvents(t, ctx, srv.URL)
	defer resp.Body.Close()
	first := readEvent(t, r)
	if first.State != "starting" {
		t.Fatalf("first event: state %q", first.State)
	}
	d.MemberJoined("t0", "a")
	d.PlanPublished(Plan{Generation: 5, Kind: "run", Members: []PlanMember{{ID: "t0"}}})
	// Changes may arrive in one event or several; wait for the last.
	deadline := time.Now().Add(5 * time.Second)
	for st := readEvent(t, r); st.Generation != 5 || len(st.Members) != 1; st = readEvent(t, r) {
		if time.Now().After(deadline) {
			t.Fatal("no event with the run plan")
		}
	}
	waitClients(t, d, 1)
	cancel()
	waitClients(t, d, 0)
}

// Events are at most one per EventInterval however fast changes come.
func TestEventsAreRateLimited(t *testing.T) {
	d := New(Options{Run: "r", PhaseNames: phaseNames, StepsPerPhase: 100, EventInterval: 200 * time.Millisecond})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, r := openEvents(t, ctx, srv.URL)
	defer resp.Body.Close()
	readEvent(t, r)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.MemberJoined("t0", "a")
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				d.Progress(Progress{Trainer: "t0", Pos: Position{Step: i}, Loss: 1, Steps: 1})
			}
		}
	}()
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		readEvent(t, r)
		n++
	}
	close(stop)
	<-done
	if n > 7 { // 1 s / 200 ms, plus slack for the first
		t.Errorf("%d events in %v, want at most about 5", n, time.Since(start))
	}
	if n < 2 {
		t.Errorf("%d events in %v of constant change", n, time.Since(start))
	}
}

func TestServerShutdownEndsEventStreams(t *testing.T) {
	d := newDashboard(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(d, lis)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %s", s.URL())
	}
	resp, r := openEvents(t, context.Background(), strings.TrimSuffix(s.URL(), "/"))
	defer resp.Body.Close()
	readEvent(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open event stream: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if _, err := io.ReadAll(r); err != nil {
		t.Logf("stream ended with %v", err)
	}
	// A stream opened after Close ends at once (after its first event).
	d2 := newDashboard(t)
	d2.Close()
	srv := httptest.NewServer(d2.Handler())
	defer srv.Close()
	resp2, r2 := openEvents(t, context.Background(), srv.URL)
	defer resp2.Body.Close()
	readEvent(t, r2)
	if _, err := io.ReadAll(r2); err != nil {
		t.Fatalf("closed dashboard's stream: %v", err)
	}
}

func TestEventClientsAreBounded(t *testing.T) {
	d := New(Options{Run: "r", PhaseNames: phaseNames, StepsPerPhase: 1, MaxEventClients: 1})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, r := openEvents(t, ctx, srv.URL)
	defer resp.Body.Close()
	readEvent(t, r)
	resp2, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second stream over the bound: %s", resp2.Status)
	}
	cancel()
	waitClients(t, d, 0)
}

func TestSamplesPNG(t *testing.T) {
	d := newDashboard(t)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/samples.png")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("samples before any: %s", resp.Status)
	}
	png := []byte("\x89PNG\r\n\x1a\nnot really")
	d.SetSamples(png, "after ipf 1 backward")
	d.SetSamples(png, "after ipf 1 forward")
	resp, err = http.Get(srv.URL + "/samples.png")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" || !bytes.Equal(body, png) {
		t.Fatalf("samples: %s %q, %d bytes", resp.Status, resp.Header.Get("Content-Type"), len(body))
	}
	st := getStatus(t, srv.URL)
	if st.Samples == nil || st.Samples.Version != 2 || st.Samples.URL != "/samples.png?v=2" || st.Samples.Caption != "after ipf 1 forward" {
		t.Fatalf("samples info %+v", st.Samples)
	}
}

func TestPageAndAssets(t *testing.T) {
	d := newDashboard(t)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	for _, c := range []struct{ path, ctype, want string }{
		{"/", "text/html", `id="loss-canvas"`},
		{"/app.js", "text/javascript", "EventSource('/events')"},
		{"/style.css", "text/css", "[data-state=\"gone\"]"},
		{"/healthz", "text/plain", "ok"},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %s %q, body has %q: %v", c.path, resp.Status, resp.Header.Get("Content-Type"), c.want, strings.Contains(string(body), c.want))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: CSP %q", c.path, csp)
		}
		// The page must not reach outside this server.
		if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
			t.Errorf("%s names an outside URL", c.path)
		}
	}
	resp, err := http.Get(srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nope: %s", resp.Status)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	d := newDashboard(t)
	d.MemberJoined("t0", "a")
	const steps = 50000
	for s := int64(1); s <= steps; s++ {
		d.Progress(Progress{Trainer: "t0", Pos: Position{Phase: 2, Step: s}, Loss: 1 / float64(s)})
	}
	// A replayed step (a resume from an earlier checkpoint) adds nothing.
	d.Progress(Progress{Trainer: "t0", Pos: Position{Phase: 2, Step: 10}, Loss: 7})
	c := d.Status().LossCurves[2]
	if n := len(c.Steps); n > MaxLossPoints+1 || n < MaxLossPoints/2 {
		t.Fatalf("%d points kept of %d, want between %d and %d", n, steps, MaxLossPoints/2, MaxLossPoints+1)
	}
	if c.Steps[0] != 1 || c.Steps[len(c.Steps)-1] != steps {
		t.Errorf("curve spans %d..%d, want 1..%d", c.Steps[0], c.Steps[len(c.Steps)-1], steps)
	}
	// Evenly thinned: no gap much wider than the mean.
	mean := float64(steps) / float64(len(c.Steps))
	for i := 1; i < len(c.Steps); i++ {
		if g := float64(c.Steps[i] - c.Steps[i-1]); g > 3*mean {
			t.Fatalf("gap of %v steps at point %d, mean %v", g, i, mean)
		}
	}
	for g := uint64(1); g <= MaxTimeline+100; g++ {
		d.PlanPublished(Plan{Generation: g, Kind: "pause"})
	}
	tl := d.Status().Timeline
	if len(tl) != MaxTimeline || tl[len(tl)-1].Generation != MaxTimeline+100 || tl[0].Generation != 101 {
		t.Errorf("timeline of %d entries, generations %d..%d", len(tl), tl[0].Generation, tl[len(tl)-1].Generation)
	}
	for i := range MaxGoneMembers + 20 {
		id := fmt.Sprintf("x%03d", i)
		d.MemberJoined(id, "a")
		d.MemberLeft(id, "test")
	}
	gone := 0
	for _, m := range d.Status().Members {
		if m.State == "gone" {
			gone++
		}
	}
	if gone != MaxGoneMembers {
		t.Errorf("%d gone members kept, want %d", gone, MaxGoneMembers)
	}
	if d.metrics.memberUp.DeleteLabelValues("x000") {
		t.Error("a forgotten member's sbtrain_member_up series is still there")
	}
}

// families the package doc lists; every one must be scraped.
var families = []string{
	"sbtrain_step_duration_seconds", "sbtrain_samples_per_second", "sbtrain_loss", "sbtrain_steps_total",
	"sbtrain_allreduce_duration_seconds_total", "sbtrain_allreduce_bytes_total", "sbtrain_checkpoint_duration_seconds",
	"sbtrain_checkpoint_bytes_total", "sbtrain_checkpoints_total", "sbtrain_members", "sbtrain_generation",
	"sbtrain_phase", "sbtrain_member_up",
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return mf
}

// value is the sample of family name whose labels include want (counter,
// gauge, or a histogram's count).
func value(t *testing.T, mf map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := mf[name]
	if f == nil {
		t.Fatalf("family %s missing", name)
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
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
	t.Fatalf("family %s has no series %v", name, want)
	return 0
}

// The /metrics families exist once a run is under way, parse with the
// Prometheus text parser, and the counters advance between two scrapes.
func TestMetricsScrapedTwiceAdvance(t *testing.T) {
	d := newDashboard(t)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	feedRun(d)
	first := scrape(t, srv.URL)
	for _, name := range families {
		if first[name] == nil {
			t.Errorf("family %s missing from the first scrape", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t0 := map[string]string{"trainer": "t0"}
	if got := value(t, first, "sbtrain_step_duration_seconds", t0); got != 10 {
		t.Errorf("step histogram of t0 counts %v steps, want 10", got)
	}
	if got := value(t, first, "sbtrain_members", nil); got != 3 {
		t.Errorf("members %v, want 3", got)
	}
	if got := value(t, first, "sbtrain_generation", nil); got != 12 {
		t.Errorf("generation %v, want 12", got)
	}
	// More steps, another checkpoint, one member gone.
	for _, id := range []string{"t0", "t2"} {
		d.Progress(Progress{Trainer: id, Generation: 12, Pos: Position{Phase: 1, Step: 5}, Loss: 1.5,
			SamplesPerSec: 1100, Steps: 95, StepSeconds: 0.9, AllReduceSeconds: 0.1, AllReduceBytes: 8192})
	}
	d.CheckpointCommitted(Checkpoint{Name: "00000002-p0000-s000000000100", Pos: Position{Phase: 1}, Bytes: 5000, Seconds: 0.07})
	d.MemberLeft("t1", "control stream ended")
	second := scrape(t, srv.URL)
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"sbtrain_steps_total", t0},
		{"sbtrain_allreduce_duration_seconds_total", t0},
		{"sbtrain_allreduce_bytes_total", t0},
		{"sbtrain_step_duration_seconds", t0},
		{"sbtrain_checkpoint_bytes_total", nil},
		{"sbtrain_checkpoints_total", nil},
		{"sbtrain_checkpoint_duration_seconds", nil},
	} {
		if a, b := value(t, first, c.name, c.labels), value(t, second, c.name, c.labels); b <= a {
			t.Errorf("%s%v did not advance: %v then %v", c.name, c.labels, a, b)
		}
	}
	if got := value(t, second, "sbtrain_member_up", map[string]string{"trainer": "t1"}); got != 0 {
		t.Errorf("gone trainer's sbtrain_member_up = %v, want 0", got)
	}
	if got := value(t, second, "sbtrain_members", nil); got != 2 {
		t.Errorf("members %v, want 2", got)
	}
	if got := value(t, second, "sbtrain_phase", nil); got != 1 {
		t.Errorf("phase %v, want 1", got)
	}
	if got := value(t, second, "sbtrain_loss", map[string]string{"phase": "1"}); got != 1.5 {
		t.Errorf("loss of phase 1 %v, want 1.5", got)
	}
	// Labels stay bounded: only trainer and phase.
	for name, f := range second {
		if !strings.HasPrefix(name, "sbtrain_") {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if n := l.GetName(); n != "trainer" && n != "phase" && n != "le" {
					t.Errorf("%s has label %s", name, n)
				}
			}
		}
	}
}
