package clustertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
	"github.com/sbtrain/sbtrain/trainer"
)

// Run is the run ID of every harness cluster.
const Run = "harness"

// DebugEnv, when set, makes a failing cluster print its last 5000 log
// lines at Debug (memberlist's own among them) instead of 300 at Info.
const DebugEnv = "SBTRAIN_HARNESS_DEBUG"

// Options shape a Cluster.
type Options struct {
	// Trainers start with the cluster; the coordinator waits for all of
	// them before the first phase (its MinWorkers).
	Trainers int
	// Steps per phase of the run (2 phases: one DSB iteration); 0 is 30.
	Steps int
	// CheckpointEvery is the checkpoint interval in steps; 0 is Steps/3.
	CheckpointEvery int64
	// NoSecret runs without a run secret (every channel unauthenticated);
	// by default the cluster has one.
	NoSecret bool
	// RingDeadline bounds a trainer's wait on a silent ring peer; 0 is 2s.
	RingDeadline time.Duration
	// Seed draws the gossip network's random losses and delays.
	Seed uint64
	// StepPause is how long each replica waits after each step: a run
	// slow enough for a test to act in the middle of it.
	StepPause time.Duration
}

func (o *Options) fill() {
	if o.Trainers <= 0 {
		o.Trainers = 3
	}
	if o.Steps <= 0 {
		o.Steps = 30
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = int64(max(1, o.Steps/3))
	}
	if o.RingDeadline <= 0 {
		o.RingDeadline = 2 * time.Second
	}
}

// ConfigYAML is the harness run: 2D moons, a small MLP, one DSB iteration
// (two phases) of steps steps each, 6 virtual shards.
func ConfigYAML(steps int) string {
	return fmt.Sprintf(`name: %s
method: dsb
seed: 7
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16, 16]}
train: {batch: 24, lr: 0.002, steps: %d, ema_decay: 0.9}
dsb:
  steps: 6
  iterations: 1
  cache_size: 96
  cache_shards: 6
  cache_refresh: 10
eval: {samples: 50, trajectories: 4}
`, Run, steps)
}

// Cluster is a running in-process cluster.
type Cluster struct {
	t      testing.TB
	opts   Options
	cfg    *config.Config
	Store  storage.Store
	Gossip *GossipNet
	Ring   *allreduce.MemNetwork
	secret *runauth.Secret
	logs   *tailLog
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	coord    *coordinator.Coordinator
	coordNet *GossipTransport
	trainers map[string]*Trainer
	nextID   int
	// Replica parameters after each step, by generation and position:
	// every replica that applies a step in a generation must hold the
	// same bytes after it.
	replicas map[replicaKey]replicaHash
	diverged []string
	progress int64 // the furthest step any replica applied, over phases
	stepped  map[string]int
	// What the status poller saw committed, in order.
	committed []committedSeen
	firstGen  uint64
	lastGen   uint64
	pollStop  chan struct{}
	pollDone  chan struct{}
	pollOnce  sync.Once
}

// Trainer is one trainer of a Cluster.
type Trainer struct {
	ID     string
	Host   string // its own 127.0.0.x: ring address Host:0 on the ring network
	gossip *GossipTransport
	cancel context.CancelFunc
	exited chan struct{} // closed when trainer.Run returned, with err
	err    error
	killed bool
}

type replicaKey struct {
	gen uint64
	pos job.Position
}

type replicaHash struct {
	hash [32]byte
	by   string
}

type committedSeen struct {
	pos        coordinator.Position
	checkpoint string
}

// Start starts a coordinator and opts.Trainers trainers; Close (run by
// t.Cleanup) stops what is left. On failure the tail of the cluster's log
// is printed.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	opts.fill()
	cfg, err := config.Parse([]byte(ConfigYAML(opts.Steps)), "harness config")
	if err != nil {
		t.Fatalf("harness config: %v", err)
	}
	dir := t.TempDir()
	store, err := storage.Open(context.Background(), "file://"+dir, storage.Options{})
	if err != nil {
		t.Fatalf("harness store: %v", err)
	}
	c := &Cluster{t: t, opts: opts, cfg: cfg, Store: store, Gossip: NewGossipNet(opts.Seed), Ring: allreduce.NewMemNetwork(),
		logs: newTailLog(300), trainers: map[string]*Trainer{}, replicas: map[replicaKey]replicaHash{}, stepped: map[string]int{}}
	level := slog.LevelInfo
	if os.Getenv(DebugEnv) != "" {
		level = slog.LevelDebug
		c.logs = newTailLog(5000)
	}
	c.log = slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: level}))
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if !opts.NoSecret {
		if c.secret, err = runauth.Generate(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("the cluster's last log lines:\n%s", c.logs.String())
		}
	})
	c.coordNet = c.Gossip.NewTransport()
	if err := c.startCoordinator(); err != nil {
		t.Fatal(err)
	}
	c.pollStop, c.pollDone = make(chan struct{}), make(chan struct{})
	go c.poll()
	for range opts.Trainers {
		c.AddTrainer()
	}
	return c
}

// newJob builds the run's job; each process of the cluster gets its own,
// as separate processes would.
func (c *Cluster) newJob() (*job.Job, error) {
	return job.New(c.cfg)
}

func (c *Cluster) startCoordinator() error {
	j, err := c.newJob()
	if err != nil {
		return err
	}
	names := make([]string, j.Phases())
	for p := range names {
		names[p] = j.PhaseName(p)
	}
	co, err := coordinator.Start(c.ctx, coordinator.Options{
		Run: Run, ConfigHash: j.Hash, Version: "harness",
		Phases: j.Phases(), StepsPerPhase: j.StepsPerPhase(), Shards: j.Shards(),
		MinWorkers: c.opts.Trainers, CheckpointEvery: c.opts.CheckpointEvery, Store: c.Store,
		GRPCAddr: "127.0.0.1:0", LeaseTTL: 5 * time.Second, Logger: c.log.With("proc", "coordinator"),
		Method: j.Method(), PhaseNames: names, Secret: c.secret, GossipTransport: c.coordNet,
	})
	if err != nil {
		return fmt.Errorf("start the coordinator: %w", err)
	}
	c.mu.Lock()
	c.coord = co
	c.mu.Unlock()
	return nil
}

// Coordinator is the running coordinator.
func (c *Cluster) Coordinator() *coordinator.Coordinator {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coord
}

// CoordinatorGossip is the coordinator's gossip address.
func (c *Cluster) CoordinatorGossip() string { return c.coordNet.Addr() }

// RestartCoordinator stops the coordinator (releasing its lease) and
// starts a new one at the same gossip address, which takes the run over
// from the trainers or the newest checkpoint.
func (c *Cluster) RestartCoordinator() {
	c.t.Helper()
	old := c.Coordinator()
	if err := old.Close(); err != nil {
		c.t.Errorf("close the coordinator: %v", err)
	}
	c.Gossip.Kill(c.coordNet.Addr())
	c.coordNet = c.Gossip.NewTransportAt(c.coordNet.Addr())
	if err := c.startCoordinator(); err != nil {
		c.t.Fatal(err)
	}
}

// AddTrainer starts a trainer with a fresh ID and host and returns the ID.
func (c *Cluster) AddTrainer() string {
	c.t.Helper()
	j, err := c.newJob()
	if err != nil {
		c.t.Fatal(err)
	}
	gt := c.Gossip.NewTransport()
	c.mu.Lock()
	id := fmt.Sprintf("trainer-%02d", c.nextID)
	c.nextID++
	host, _, _ := net.SplitHostPort(gt.Addr())
	tr := &Trainer{ID: id, Host: host, gossip: gt, exited: make(chan struct{})}
	c.trainers[id] = tr
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(c.ctx)
	tr.cancel = cancel
	go func() {
		defer close(tr.exited)
		tr.err = trainer.Run(ctx, trainer.Options{
			ID: id, Run: Run, Job: j, Store: c.Store, Version: "harness", Join: c.coordNet.Addr(), Host: host,
			RingDeadline: c.opts.RingDeadline, CoordinatorTimeout: 20 * time.Second, ReportEvery: 100 * time.Millisecond,
			Logger: c.log.With("proc", id), Secret: c.secret, GossipTransport: gt, RingTransport: c.Ring,
			AfterStep: func(gen uint64, st *job.State) { c.afterStep(id, gen, st) },
		})
	}()
	return id
}

// RingAddr is the trainer's ring address on the ring network.
func (tr *Trainer) RingAddr() string { return net.JoinHostPort(tr.Host, "0") }

// GossipAddr is the trainer's gossip address.
func (tr *Trainer) GossipAddr() string { return tr.gossip.Addr() }

// Trainer returns the trainer with the given ID, nil if none.
func (c *Cluster) Trainer(id string) *Trainer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trainers[id]
}

// Live lists the trainers not killed, sorted.
func (c *Cluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, tr := range c.trainers {
		if !tr.killed {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Kill makes a trainer vanish as a killed process does: its ring links
// close, its gossip goes silent (no leave), and its control stream breaks
// (the kernel of a killed process closes its sockets). It returns once
// the trainer's goroutines are gone.
func (c *Cluster) Kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	tr := c.trainers[id]
	if tr == nil || tr.killed {
		c.mu.Unlock()
		return
	}
	tr.killed = true
	c.mu.Unlock()
	c.Ring.Kill(tr.RingAddr())
	c.Gossip.Kill(tr.GossipAddr())
	tr.cancel()
	select {
	case <-tr.exited:
	case <-time.After(15 * time.Second):
		c.t.Errorf("killed trainer %s still running after 15s", id)
	}
}

// afterStep records a replica's parameters after a step.
func (c *Cluster) afterStep(id string, gen uint64, st *job.State) {
	b, err := st.Encode()
	var h [32]byte
	if err == nil {
		var params map[string][]byte
		if params, err = job.ParamBytes(b); err == nil {
			h = hashParams(params)
		}
	}
	pos := st.Position()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.diverged = append(c.diverged, fmt.Sprintf("%s: encode the state at %v: %v", id, pos, err))
		return
	}
	k := replicaKey{gen, pos}
	if prev, ok := c.replicas[k]; !ok {
		c.replicas[k] = replicaHash{h, id}
	} else if prev.hash != h {
		c.diverged = append(c.diverged, fmt.Sprintf("generation %d, %v: %s and %s hold different parameters", gen, pos, prev.by, id))
	}
	g := int64(pos.Phase)*int64(c.opts.Steps) + pos.Step
	c.progress = max(c.progress, g)
	c.stepped[id]++
	if c.opts.StepPause > 0 {
		c.mu.Unlock()
		time.Sleep(c.opts.StepPause)
		c.mu.Lock()
	}
}

// Stepped is how many steps the trainer has applied.
func (c *Cluster) Stepped(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stepped[id]
}

// Status is the coordinator's status, nil while it does not answer.
func (c *Cluster) Status() *api.RunStatus {
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	st, err := c.Coordinator().Status(ctx)
	if err != nil {
		return nil
	}
	return st
}

// WaitStatus polls the coordinator's status until cond holds, and fails
// the test after limit.
func (c *Cluster) WaitStatus(t testing.TB, what string, limit time.Duration, cond func(*api.RunStatus) bool) *api.RunStatus {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if st := c.Status(); st != nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (status %v)", what, limit, c.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Members lists the trainers in a status, in its order.
func Members(st *api.RunStatus) []string {
	var out []string
	for _, m := range st.GetMembers() {
		out = append(out, m.TrainerId)
	}
	return out
}

func hashParams(params map[string][]byte) [32]byte {
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s:%d:", n, len(params[n]))
		h.Write(params[n])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Progress is the furthest step any replica has applied, counted over
// phases (phase*Steps + step).
func (c *Cluster) Progress() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.progress
}

// TotalSteps is the run's length in steps over all phases.
func (c *Cluster) TotalSteps() int64 { return 2 * int64(c.opts.Steps) }

// poll samples the coordinator's status: the committed position must
// never go back, and each commit seen is checked at the end.
func (c *Cluster) poll() {
	defer close(c.pollDone)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.pollStop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		st, err := c.Coordinator().Status(ctx)
		cancel()
		if err != nil {
			continue // a coordinator restarting
		}
		c.observe(st)
	}
}

func (c *Cluster) observe(st *api.RunStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.firstGen == 0 && st.Generation != 0 {
		c.firstGen = st.Generation
	}
	c.lastGen = max(c.lastGen, st.Generation)
	pos := coordinator.Position{Phase: int(st.GetCommitted().GetPhase()), Step: st.GetCommitted().GetStep()}
	if n := len(c.committed); n > 0 && c.committed[n-1].checkpoint == st.CommittedCheckpoint {
		return
	}
	if n := len(c.committed); n > 0 && pos.Less(c.committed[n-1].pos) {
		c.diverged = append(c.diverged, fmt.Sprintf("committed position went back from %v (%s) to %v (%s)",
			c.committed[n-1].pos, c.committed[n-1].checkpoint, pos, st.CommittedCheckpoint))
	}
	c.committed = append(c.committed, committedSeen{pos, st.CommittedCheckpoint})
}

// Generations is how many generations the coordinator planned so far.
func (c *Cluster) Generations() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.firstGen == 0 {
		return 0
	}
	return c.lastGen - c.firstGen + 1
}

// Wait waits for the run to finish (the coordinator's Wait) and then for
// every live trainer to exit without error.
func (c *Cluster) Wait(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	if err := c.Coordinator().Wait(ctx); err != nil {
		return fmt.Errorf("the run did not finish within %s: %w", timeout, err)
	}
	// The poller stops first: its last status, taken before this one,
	// would otherwise be recorded after it.
	c.stopPoll()
	st, err := c.Coordinator().Status(ctx)
	if err != nil {
		return err
	}
	c.observe(st)
	if !st.Done {
		return fmt.Errorf("the coordinator's Wait returned, its status says not done: %v", st)
	}
	// The coordinator sends FINISH; trainers leave on their own.
	c.mu.Lock()
	var live []*Trainer
	for _, tr := range c.trainers {
		if !tr.killed {
			live = append(live, tr)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, tr := range live {
		select {
		case <-tr.exited:
			// A fault schedule may still kill a trainer after the run
			// finished: its context's error is the kill, not a failure.
			c.mu.Lock()
			killed := tr.killed
			c.mu.Unlock()
			if tr.err != nil && !killed {
				errs = append(errs, fmt.Errorf("trainer %s: %w", tr.ID, tr.err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("trainer %s still running after the run finished", tr.ID))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) stopPoll() {
	if c.pollStop == nil {
		return
	}
	c.pollOnce.Do(func() {
		close(c.pollStop)
		<-c.pollDone
	})
}

// Close stops everything still running.
func (c *Cluster) Close() {
	c.stopPoll()
	c.mu.Lock()
	trs := make([]*Trainer, 0, len(c.trainers))
	for _, tr := range c.trainers {
		trs = append(trs, tr)
	}
	co := c.coord
	c.mu.Unlock()
	for _, tr := range trs {
		tr.cancel()
	}
	for _, tr := range trs {
		select {
		case <-tr.exited:
		case <-time.After(15 * time.Second):
			c.t.Errorf("trainer %s still running 15s after Close", tr.ID)
		}
	}
	if co != nil {
		_ = co.Close()
	}
	c.cancel()
}

// CheckReplicas fails the test if two replicas ever held different
// parameters after the same step of the same generation, or the committed
// position went back.
func (c *Cluster) CheckReplicas(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.diverged {
		t.Error(d)
	}
	if len(c.replicas) == 0 {
		t.Error("no replica applied a step")
	}
}

// CheckCommitted fails the test unless every checkpoint the coordinator
// reported committed that the store must keep (each phase end, and the
// newest) still verifies, and the newest is the end of the run.
func (c *Cluster) CheckCommitted(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	ckpts, err := storage.NewCheckpoints(c.Store, Run, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ckpts.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	committed := map[string]*storage.Manifest{}
	for _, e := range entries {
		if e.Manifest != nil {
			committed[e.ID.String()] = e.Manifest
		}
	}
	c.mu.Lock()
	seen := slices.Clone(c.committed)
	c.mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("the coordinator never reported a committed checkpoint")
	}
	for i, s := range seen {
		if s.checkpoint == "" {
			continue
		}
		id, err := storage.ParseID(s.checkpoint)
		if err != nil {
			t.Errorf("committed checkpoint %q: %v", s.checkpoint, err)
			continue
		}
		if _, kept := committed[s.checkpoint]; kept {
			if _, err := ckpts.Verify(ctx, id); err != nil {
				t.Errorf("committed checkpoint %s does not verify: %v", s.checkpoint, err)
			}
		} else if i == len(seen)-1 || id.Step == int64(c.opts.Steps) {
			// GC keeps the newest checkpoints and every phase end.
			t.Errorf("checkpoint %s was committed (at %v) and is gone", s.checkpoint, s.pos)
		}
	}
	last := seen[len(seen)-1]
	if last.pos != (coordinator.Position{Phase: 2}) {
		t.Errorf("the last committed position is %v (%s), want the end of the run", last.pos, last.checkpoint)
	}
}

// Final is the run's final checkpoint: every parameter, Adam and EMA
// tensor by name.
type Final struct {
	Checkpoint string
	Params     map[string][]byte
	Tensors    map[string]storage.Tensor
}

// Final reads the newest checkpoint, which must be the end of the run.
func (c *Cluster) Final(t testing.TB) Final {
	t.Helper()
	return ReadFinal(t, c.Store, c.opts.Steps)
}

// ReadFinal reads the newest checkpoint of the harness run in store.
func ReadFinal(t testing.TB, store storage.Store, steps int) Final {
	t.Helper()
	ckpts, err := storage.NewCheckpoints(store, Run, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ckpts.LoadLatest(context.Background())
	if err != nil {
		t.Fatalf("load the final checkpoint: %v", err)
	}
	m := l.Manifest
	id := storage.ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}
	if m.Phase != 1 || m.Step != int64(steps) || !m.PhaseEnd {
		t.Fatalf("newest checkpoint %s is not the end of the run", id)
	}
	b := l.Blobs[job.SnapshotBlob]
	params, err := job.ParamBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	ts, _, err := storage.DecodeSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	f := Final{Checkpoint: id.String(), Params: params, Tensors: map[string]storage.Tensor{}}
	for _, tn := range ts {
		if _, ok := params[tn.Name]; ok {
			f.Tensors[tn.Name] = tn
		}
	}
	if len(params) == 0 {
		t.Fatalf("checkpoint %s holds no parameters", id)
	}
	return f
}

// Distance is the largest relative L2 distance between a tensor of got
// and the same of want; an error when they hold different tensors.
func Distance(got, want Final) (float64, error) {
	if len(got.Tensors) != len(want.Tensors) {
		return 0, fmt.Errorf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	worst := 0.0
	for name, w := range want.Tensors {
		g, ok := got.Tensors[name]
		if !ok {
			return 0, fmt.Errorf("no tensor %s", name)
		}
		if bytes.Equal(got.Params[name], want.Params[name]) {
			continue
		}
		av, err := g.Float32s()
		if err != nil {
			return 0, fmt.Errorf("tensor %s: %w", name, err)
		}
		bv, err := w.Float32s()
		if err != nil {
			return 0, fmt.Errorf("tensor %s: %w", name, err)
		}
		if len(av) != len(bv) {
			return 0, fmt.Errorf("tensor %s: %d elements, want %d", name, len(av), len(bv))
		}
		var diff, norm float64
		for i := range av {
			d := float64(av[i]) - float64(bv[i])
			diff += d * d
			norm += float64(bv[i]) * float64(bv[i])
		}
		rel := math.Sqrt(diff)
		if norm > 0 {
			rel = math.Sqrt(diff / norm)
		}
		if math.IsNaN(rel) {
			rel = math.Inf(1)
		}
		worst = max(worst, rel)
	}
	return worst, nil
}

// tailLog keeps the last lines written to it.
type tailLog struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newTailLog(n int) *tailLog { return &tailLog{lines: make([]string, n)} }

func (l *tailLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ln := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		l.lines[l.next] = ln
		l.next = (l.next + 1) % len(l.lines)
		l.full = l.full || l.next == 0
	}
	return len(p), nil
}

func (l *tailLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	if l.full {
		out = append(out, l.lines[l.next:]...)
	}
	out = append(out, l.lines[:l.next]...)
	return strings.Join(out, "\n")
}
