package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/membership"
	"github.com/sbtrain/sbtrain/storage"
)

// These tests run a real Coordinator in-process on loopback, with a fake
// trainer that speaks gossip and gRPC but trains nothing.

const (
	testRun     = "unit-run"
	testHash    = "cfg-hash-1"
	testVersion = "test-1"
	testRing    = "127.0.0.1:1"
	// planWithin bounds every wait for a plan or an answer.
	planWithin = 10 * time.Second
)

// logBuffer collects the logs of a test and prints them only if it fails:
// gossip logs a lot, and a goroutine may still log after the test ends.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkGoroutines fails the test if goroutines started after this call
// outlive it. Call it first, so its cleanup runs after every other one.
func checkGoroutines(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// memberlist's last probe may end shortly after Close: look again
		// for a while (goleak itself retries for about half a second).
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := goleak.Find(ignore)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines outlive the test: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func openStore(t *testing.T) storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), "file://"+t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serverOptions(store storage.Store, log *slog.Logger) Options {
	return Options{
		Run: testRun, ConfigHash: testHash, Version: testVersion,
		Phases: 2, StepsPerPhase: 10, Shards: 4, MinWorkers: 1,
		Store: store, GossipAddr: "127.0.0.1:0", Logger: log,
	}
}

// startServer starts a coordinator and closes it when the test ends (a
// test may close it earlier; Close is idempotent).
func startServer(t *testing.T, opts Options) *Coordinator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start coordinator: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close coordinator: %v", err)
		}
	})
	return c
}

// fakeTrainer is a trainer's control side: a gossip node in the run and a
// gRPC client of the coordinator.
type fakeTrainer struct {
	t      *testing.T
	id     string
	node   *membership.Node
	conn   *grpc.ClientConn
	client api.ControlClient
}

func newFakeTrainer(t *testing.T, c *Coordinator, id string, log *slog.Logger) *fakeTrainer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	node, err := membership.Start(ctx, membership.Options{
		Name: id, BindAddr: "127.0.0.1:0", Logger: log,
		Meta: membership.Meta{Role: membership.RoleTrainer, Run: testRun, Ring: testRing,
			ConfigHash: testHash, Version: testVersion},
	})
	if err != nil {
		t.Fatalf("gossip node %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := node.Close(ctx); err != nil {
			t.Errorf("close gossip node %s: %v", id, err)
		}
	})
	if err := node.Join(ctx, []string{c.GossipAddr()}); err != nil {
		t.Fatalf("%s joins %s: %v", id, c.GossipAddr(), err)
	}
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client of %s: %v", c.GRPCAddr(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &fakeTrainer{t: t, id: id, node: node, conn: conn, client: api.NewControlClient(conn)}
}

func (f *fakeTrainer) hello() *api.Hello {
	return &api.Hello{TrainerId: f.id, ConfigHash: testHash, Version: testVersion, RingAddr: testRing}
}

// planStream is an open Follow stream whose plans a goroutine forwards.
type planStream struct {
	t      *testing.T
	cancel context.CancelFunc
	plans  chan *api.Plan
	err    chan error // the stream's end; buffered
	done   chan struct{}
}

// follow opens a Follow stream; it ends when the test does, or on stop.
func (f *fakeTrainer) follow(h *api.Hello) *planStream {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	stream, err := f.client.Follow(ctx, h)
	if err != nil {
		cancel()
		f.t.Fatalf("follow: %v", err)
	}
	ps := &planStream{t: f.t, cancel: cancel, plans: make(chan *api.Plan, 16), err: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(ps.done)
		for {
			p, err := stream.Recv()
			if err != nil {
				ps.err <- err
				return
			}
			select {
			case ps.plans <- p:
			case <-ctx.Done():
				ps.err <- ctx.Err()
				return
			}
		}
	}()
	f.t.Cleanup(ps.stop)
	return ps
}

// stop cancels the stream and waits for its goroutine.
func (ps *planStream) stop() {
	ps.cancel()
	<-ps.done
}

// next returns the next plan, which must be of kind.
func (ps *planStream) next(kind api.Plan_Kind) *api.Plan {
	ps.t.Helper()
	select {
	case p := <-ps.plans:
		if p.Kind != kind {
			ps.t.Fatalf("got a %v plan (generation %d, reason %q), want %v", p.Kind, p.Generation, p.Reason, kind)
		}
		return p
	case err := <-ps.err:
		ps.t.Fatalf("waiting for a %v plan: stream ended: %v", kind, err)
	case <-time.After(planWithin):
		ps.t.Fatalf("no %v plan within %v", kind, planWithin)
	}
	return nil
}

// hold answers a pause plan without state.
func (f *fakeTrainer) hold(pause *api.Plan) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	if _, err := f.client.Report(ctx, &api.Report{TrainerId: f.id, Generation: pause.Generation, Kind: api.Report_HOLDING}); err != nil {
		f.t.Fatalf("report holding: %v", err)
	}
}

// runPlan follows until the first run plan, answering the pause before it.
func (f *fakeTrainer) runPlan(ps *planStream) (pause, run *api.Plan) {
	f.t.Helper()
	pause = ps.next(api.Plan_PAUSE)
	f.hold(pause)
	run = ps.next(api.Plan_RUN)
	if run.Generation <= pause.Generation {
		f.t.Errorf("run generation %d is not after the pause generation %d", run.Generation, pause.Generation)
	}
	if len(run.Members) != 1 || run.Members[0].TrainerId != f.id || run.Members[0].RingAddr != testRing ||
		!slices.Equal(run.Members[0].Shards, []int32{0, 1, 2, 3}) {
		f.t.Errorf("run plan members = %v, want %s at %s owning shards 0..3", run.Members, f.id, testRing)
	}
	if run.Run != testRun {
		f.t.Errorf("run plan names run %q, want %q", run.Run, testRun)
	}
	return pause, run
}

// checkpointAt writes a snapshot blob for position pos of a 2-phase,
// 10-step run and returns the commit request for it (as trainer id in
// generation gen).
func checkpointAt(t *testing.T, store storage.Store, id string, gen uint64, pos Position) *api.CommitRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	ck, err := storage.NewCheckpoints(store, testRun, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint at a phase end is named by the phase it ends.
	phase, step, end := pos.Phase, pos.Step, false
	if step == 0 && phase > 0 {
		phase, step, end = phase-1, 10, true
	}
	dir := storage.DirectionBackward
	if phase%2 == 1 {
		dir = storage.DirectionForward
	}
	cid, err := ck.NextID(ctx, phase, step)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ck.PutBlob(ctx, cid, "state.bin", []byte(fmt.Sprintf("state at %v", pos)))
	if err != nil {
		t.Fatal(err)
	}
	return &api.CommitRequest{
		TrainerId: id, Generation: gen, Position: api.NewPosition(pos.Phase, pos.Step), Checkpoint: cid.String(),
		Blobs: []*api.Blob{{Name: ref.Name, Key: ref.Key, Size: ref.Size, Sha256: ref.SHA256}},
		Phase: int32(phase), IpfIteration: int32(phase/2 + 1), Direction: dir, Step: step, PhaseEnd: end,
	}
}

// latest is the checkpoint LoadLatest returns, by name.
func latest(t *testing.T, store storage.Store) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	ck, err := storage.NewCheckpoints(store, testRun, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ck.LoadLatest(ctx)
	if err != nil {
		t.Fatalf("load latest: %v", err)
	}
	return storage.ID{Seq: l.Manifest.Seq, Phase: l.Manifest.Phase, Step: l.Manifest.Step}.String()
}

// wantCode checks err's gRPC code and that its message contains every
// part of want.
func wantCode(t *testing.T, what string, err error, code codes.Code, want ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code {
		t.Errorf("%s: got %v, want %v", what, err, code)
		return
	}
	for _, w := range want {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("%s: message %q does not name %q", what, st.Message(), w)
		}
	}
}

func TestFollowRefusesMismatch(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	c := startServer(t, serverOptions(openStore(t), log))
	f := newFakeTrainer(t, c, "t1", log)
	for _, tc := range []struct {
		name          string
		hash, version string
		want          []string
	}{
		{"config hash", "other-hash", testVersion, []string{"config hash other-hash", testHash}},
		{"version", testHash, "test-2", []string{`binary version "test-2"`, `"` + testVersion + `"`}},
		{"both", "other-hash", "test-2", []string{"config hash other-hash", `binary version "test-2"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), planWithin)
			defer cancel()
			h := f.hello()
			h.ConfigHash, h.Version = tc.hash, tc.version
			stream, err := f.client.Follow(ctx, h)
			if err == nil {
				_, err = stream.Recv()
			}
			wantCode(t, "follow", err, codes.FailedPrecondition, tc.want...)
		})
	}
	// A refused hello does not make a member.
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	st, err := f.client.Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 0 || st.State != "waiting" {
		t.Errorf("after refused hellos: state %s, members %v; want waiting, none", st.State, st.Members)
	}
}

// TestServiceRun drives one run through the service: first run from
// scratch, commits (accepted and refused), status, a refused second
// coordinator, a coordinator restart that resumes from the committed
// checkpoint, and the final commit that finishes the run.
func TestServiceRun(t *testing.T) {
	checkGoroutines(t)
	log := testLogger(t)
	store := openStore(t)
	opts := serverOptions(store, log)
	c1 := startServer(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t1 := newFakeTrainer(t, c1, "t1", log)
	ps := t1.follow(t1.hello())
	_, run := t1.runPlan(ps)
	if run.Source != api.Plan_INIT || run.Start.GetPhase() != 0 || run.Start.GetStep() != 0 {
		t.Fatalf("first run plan: source %v from %v, want INIT from 0:0", run.Source, run.Start)
	}

	// Rank 0 commits {0, 5}.
	req := checkpointAt(t, store, "t1", run.Generation, Position{Phase: 0, Step: 5})
	reply, err := t1.client.Commit(ctx, req)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if reply.Checkpoint != req.Checkpoint {
		t.Errorf("commit reply names %s, want %s", reply.Checkpoint, req.Checkpoint)
	}
	first := req.Checkpoint
	if got := latest(t, store); got != first {
		t.Errorf("latest checkpoint %s, want %s", got, first)
	}

	// Refused commits change nothing.
	for _, tc := range []struct {
		name string
		edit func(*api.CommitRequest)
		code codes.Code
		want []string
	}{
		{"unknown trainer", func(r *api.CommitRequest) { r.TrainerId = "ghost" }, codes.FailedPrecondition,
			[]string{"trainer ghost is not rank 0", "t1 is"}},
		{"stale generation", func(r *api.CommitRequest) { r.Generation = run.Generation - 1 }, codes.FailedPrecondition,
			[]string{fmt.Sprintf("generation %d is not the current run generation %d", run.Generation-1, run.Generation)}},
		{"not after committed", func(r *api.CommitRequest) { r.Position = api.NewPosition(0, 5) }, codes.FailedPrecondition,
			[]string{"not after the committed position phase 0 step 5"}},
		{"malformed name", func(r *api.CommitRequest) { r.Checkpoint = "not-a-checkpoint" }, codes.InvalidArgument,
			[]string{"not-a-checkpoint"}},
		{"empty name", func(r *api.CommitRequest) { r.Checkpoint = "" }, codes.InvalidArgument, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkpointAt(t, store, "t1", run.Generation, Position{Phase: 0, Step: 7})
			tc.edit(r)
			_, err := t1.client.Commit(ctx, r)
			wantCode(t, "commit", err, tc.code, tc.want...)
			if got := latest(t, store); got != first {
				t.Errorf("latest checkpoint %s after a refused commit, want %s", got, first)
			}
		})
	}

	// Progress and status.
	if _, err := t1.client.Report(ctx, &api.Report{TrainerId: "t1", Generation: run.Generation, Kind: api.Report_PROGRESS,
		HasState: true, Position: api.NewPosition(0, 7), Loss: 0.25, SamplesPerSec: 100}); err != nil {
		t.Fatalf("report progress: %v", err)
	}
	st, err := t1.client.Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Run != testRun || st.State != "running" || st.Generation != run.Generation || st.Done ||
		st.Phases != 2 || st.StepsPerPhase != 10 {
		t.Errorf("status: run %s state %s generation %d done %v shape %dx%d; want %s running %d false 2x10",
			st.Run, st.State, st.Generation, st.Done, st.Phases, st.StepsPerPhase, testRun, run.Generation)
	}
	if st.CommittedCheckpoint != first || st.Committed.GetPhase() != 0 || st.Committed.GetStep() != 5 {
		t.Errorf("status committed %s at %v, want %s at 0:5", st.CommittedCheckpoint, st.Committed, first)
	}
	if len(st.Members) != 1 || st.Members[0].TrainerId != "t1" || st.Members[0].RingAddr != testRing ||
		st.Members[0].Position.GetStep() != 7 || st.Members[0].Loss != 0.25 {
		t.Errorf("status members %v, want t1 at %s, step 7, loss 0.25", st.Members, testRing)
	}

	// A second coordinator of the same run is refused, naming the holder.
	sctx, scancel := context.WithTimeout(ctx, planWithin)
	c2, err := Start(sctx, opts)
	scancel()
	if err == nil {
		_ = c2.Close()
		t.Fatal("a second coordinator started on a leased run")
	}
	if !errors.Is(err, storage.ErrLeaseHeld) || !strings.Contains(err.Error(), "coordinator@") ||
		!strings.Contains(err.Error(), c1.GRPCAddr()) {
		t.Errorf("second coordinator: %v; want ErrLeaseHeld naming the holder at %s", err, c1.GRPCAddr())
	}

	// Restart: the trainer goes away with its state, the coordinator
	// restarts and resumes from the committed checkpoint.
	ps.stop()
	if err := c1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	c2 = startServer(t, opts)
	cm, err := c2.Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cm != (Committed{Pos: Position{Phase: 0, Step: 5}, Checkpoint: first}) {
		t.Errorf("restarted coordinator committed %+v, want %s at 0:5", cm, first)
	}
	t1b := newFakeTrainer(t, c2, "t1", log)
	h := t1b.hello()
	h.LastGeneration = run.Generation
	ps2 := t1b.follow(h)
	pause2, run2 := t1b.runPlan(ps2)
	if pause2.Generation <= run.Generation {
		t.Errorf("restarted coordinator's generation %d is not above the %d the trainer saw", pause2.Generation, run.Generation)
	}
	if run2.Source != api.Plan_CHECKPOINT || run2.Checkpoint != first || run2.Start.GetPhase() != 0 || run2.Start.GetStep() != 5 {
		t.Fatalf("run plan after restart: source %v checkpoint %q from %v, want CHECKPOINT %s from 0:5",
			run2.Source, run2.Checkpoint, run2.Start, first)
	}

	// The final commit finishes the run.
	end := checkpointAt(t, store, "t1", run2.Generation, Position{Phase: 2, Step: 0})
	if _, err := t1b.client.Commit(ctx, end); err != nil {
		t.Fatalf("final commit: %v", err)
	}
	ps2.next(api.Plan_FINISH)
	wctx, wcancel := context.WithTimeout(ctx, planWithin)
	defer wcancel()
	if err := c2.Wait(wctx); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if got := latest(t, store); got != end.Checkpoint {
		t.Errorf("latest checkpoint %s, want the final %s", got, end.Checkpoint)
	}
	st, err = c2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Done || st.State != "done" || st.Committed.GetPhase() != 2 || st.Committed.GetStep() != 0 {
		t.Errorf("status after the end: state %s done %v committed %v, want done at 2:0", st.State, st.Done, st.Committed)
	}
	ps2.stop()
}
