package clustertest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/membership"
	"github.com/sbtrain/sbtrain/storage"
)

// The control-plane benchmark: one coordinator (a child process, so that
// its CPU and memory can be read from /proc) and -trainers stand-ins in
// this process, each with its own 127.0.0.x, real memberlist over UDP and
// TCP, real gRPC with the run's TLS, and a real TCP ring on which they do
// a 16-float all-reduce every -step. They follow plans, report progress
// every 500 ms as trainers do, and hold and answer PAUSE; they compute
// nothing and hold no state (a PEER start is taken as given).
//
//	go test -run '^$' -bench ControlPlane -benchtime 1x ./internal/clustertest/

var (
	trainersFlag = flag.Int("trainers", 128, "stand-in trainers of BenchmarkControlPlane")
	stepFlag     = flag.Duration("step", time.Second, "BenchmarkControlPlane: a stand-in's compute time per step")
	steadyFlag   = flag.Duration("steady", 10*time.Second, "BenchmarkControlPlane: the steady-state window measured")
)

// coordinatorProcEnv makes the test binary a coordinator (see TestMain):
// its value is the JSON of coordinatorProc.
const coordinatorProcEnv = "SBTRAIN_HARNESS_COORDINATOR"

type coordinatorProc struct {
	Store   string
	Gossip  string
	Workers int
	Shards  int
}

const (
	controlRun  = "control"
	controlVer  = "bench"
	reportEvery = 500 * time.Millisecond
)

func controlHash() string {
	h := sha256.Sum256([]byte("control-plane benchmark"))
	return hex.EncodeToString(h[:])
}

// runCoordinatorProc is the child: it starts a coordinator, prints READY
// with its addresses, and stops when stdin closes or on SIGTERM.
func runCoordinatorProc(spec string) int {
	var p coordinatorProc
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		fmt.Fprintln(os.Stderr, "coordinator spec:", err)
		return 2
	}
	secret, err := runauth.Load("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	store, err := storage.Open(ctx, "file://"+p.Store, storage.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := coordinator.Start(ctx, coordinator.Options{
		Run: controlRun, ConfigHash: controlHash(), Version: controlVer,
		Phases: 1, StepsPerPhase: 1 << 40, Shards: p.Shards, MinWorkers: p.Workers, Store: store,
		GossipAddr: p.Gossip, GRPCAddr: "127.0.0.1:0", Secret: secret,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("READY %s %s\n", c.GRPCAddr(), c.GossipAddr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	<-ctx.Done()
	_ = c.Close()
	return 0
}

// traffic counts the control messages the stand-ins exchange.
type traffic struct {
	reports, reportBytes, plans, planBytes atomic.Int64
}

// killable wraps memberlist's UDP/TCP transport so a node can go silent
// without leaving, as a machine that vanished.
type killable struct {
	*memberlist.NetTransport
	dead    atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
}

func newKillable(ip string) (*killable, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: 0,
		Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, err
	}
	k := &killable{NetTransport: nt, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn)}
	go func() {
		for p := range nt.PacketCh() {
			if !k.dead.Load() {
				k.packets <- p
			}
		}
	}()
	go func() {
		for c := range nt.StreamCh() {
			if k.dead.Load() {
				c.Close()
				continue
			}
			k.streams <- c
		}
	}()
	return k, nil
}

func (k *killable) PacketCh() <-chan *memberlist.Packet { return k.packets }
func (k *killable) StreamCh() <-chan net.Conn           { return k.streams }

func (k *killable) WriteTo(b []byte, addr string) (time.Time, error) {
	if k.dead.Load() {
		return time.Now(), nil
	}
	return k.NetTransport.WriteTo(b, addr)
}

func (k *killable) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return k.WriteTo(b, a.Addr)
}

func (k *killable) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if k.dead.Load() {
		return nil, errors.New("dead")
	}
	return k.NetTransport.DialTimeout(addr, timeout)
}

func (k *killable) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return k.DialTimeout(a.Addr, timeout)
}

// standIn is a trainer that computes nothing.
type standIn struct {
	id     string
	ip     string
	join   string
	kt     *killable
	node   *membership.Node
	ep     *allreduce.Endpoint
	conn   *grpc.ClientConn
	client api.ControlClient
	tr     *traffic
	step   time.Duration
	dead   atomic.Bool
	// trainedGen is the newest generation in which this stand-in has
	// completed an all-reduce.
	trainedGen atomic.Uint64
	joined     time.Time
}

func startStandIn(ctx context.Context, id, ip, join string, secret *runauth.Secret, tr *traffic, step time.Duration) (*standIn, error) {
	s := &standIn{id: id, ip: ip, join: join, tr: tr, step: step}
	var err error
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if s.ep, err = allreduce.ListenWith(allreduce.TCP{}, net.JoinHostPort(ip, "0"),
		allreduce.ListenOptions{HandshakeTimeout: 5 * time.Second, Key: secret.RingKey(), Logger: quiet}); err != nil {
		return nil, err
	}
	if s.kt, err = newKillable(ip); err != nil {
		return nil, err
	}
	s.node, err = membership.Start(ctx, membership.Options{Name: id, BindAddr: net.JoinHostPort(ip, "0"), Logger: quiet,
		Secret: secret, Transport: s.kt,
		Meta: membership.Meta{Role: membership.RoleTrainer, Run: controlRun, Ring: s.ep.Addr(), ConfigHash: controlHash(), Version: controlVer}})
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.node.Join(jctx, []string{join})
		cancel()
		if err == nil {
			break
		}
		// As a trainer does: 128 joining at once overrun the seed's
		// stream handling on a busy machine, and a retry a moment later
		// gets through.
		if attempt == 30 {
			return nil, fmt.Errorf("%s: join: %w", id, err)
		}
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
	}
	s.joined = time.Now()
	creds, err := secret.ClientCredentials()
	if err != nil {
		return nil, err
	}
	coord, ok := s.node.Find(membership.RoleCoordinator)
	for attempt := 0; !ok; attempt++ {
		if attempt == 30 {
			return nil, fmt.Errorf("%s: no coordinator in gossip", id)
		}
		time.Sleep(500 * time.Millisecond)
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = s.node.Join(jctx, []string{join})
		cancel()
		coord, ok = s.node.Find(membership.RoleCoordinator)
	}
	if s.conn, err = grpc.NewClient(coord.Meta.GRPC, append(runauth.WithInstance(runauth.NewInstance()), grpc.WithTransportCredentials(creds))...); err != nil {
		return nil, err
	}
	s.client = api.NewControlClient(s.conn)
	return s, nil
}

// run follows plans until ctx ends or the stand-in is killed; like a
// trainer, it follows again when the coordinator drops it.
func (s *standIn) run(ctx context.Context) {
	for ctx.Err() == nil && !s.dead.Load() {
		s.follow(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
		jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = s.node.Join(jctx, []string{s.join})
		cancel()
	}
}

func (s *standIn) follow(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.client.Follow(ctx, &api.Hello{TrainerId: s.id, ConfigHash: controlHash(), Version: controlVer, RingAddr: s.ep.Addr()})
	if err != nil {
		return
	}
	latest := make(chan *api.Plan, 1)
	go func() {
		for {
			p, err := stream.Recv()
			if err != nil {
				close(latest)
				return
			}
			s.tr.plans.Add(1)
			s.tr.planBytes.Add(int64(proto.Size(p)))
			select {
			case <-latest:
			default:
			}
			latest <- p
		}
	}()
	var held *api.Position
	for plan := range latest {
		for plan != nil && !s.dead.Load() {
			switch plan.Kind {
			case api.Plan_FINISH:
				return
			case api.Plan_PAUSE:
				s.report(ctx, &api.Report{TrainerId: s.id, Generation: plan.Generation, Kind: api.Report_HOLDING,
					HasState: held != nil, Position: held})
				plan = nil
			case api.Plan_RUN:
				plan, held = s.generation(ctx, plan, latest)
			default:
				plan = nil
			}
		}
		if s.dead.Load() {
			<-ctx.Done() // a vanished machine: the stream stays open, silent
			return
		}
	}
}

func (s *standIn) report(ctx context.Context, r *api.Report) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s.tr.reports.Add(1)
	s.tr.reportBytes.Add(int64(proto.Size(r)))
	_, _ = s.client.Report(rctx, r)
}

// generation runs one RUN plan until a newer plan (returned) arrives.
func (s *standIn) generation(ctx context.Context, plan *api.Plan, latest chan *api.Plan) (*api.Plan, *api.Position) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next *api.Plan
	var nextMu sync.Mutex
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case p, ok := <-latest:
			nextMu.Lock()
			if ok {
				next = p
			}
			nextMu.Unlock()
			cancel()
		case <-gctx.Done():
		}
	}()
	pos := &api.Position{Phase: plan.GetStart().GetPhase(), Step: plan.GetStart().GetStep()}
	rank := -1
	members := make([]allreduce.Member, len(plan.Members))
	for i, m := range plan.Members {
		members[i] = allreduce.Member{ID: m.TrainerId, Addr: m.RingAddr}
		if m.TrainerId == s.id {
			rank = i
		}
	}
	fail := func(err error) {
		if gctx.Err() != nil || s.dead.Load() {
			return
		}
		r := &api.Report{TrainerId: s.id, Generation: plan.Generation, Kind: api.Report_RING_FAILED, Error: err.Error()}
		var pe *allreduce.PeerError
		if errors.As(err, &pe) && pe.Rank >= 0 && pe.Rank < len(plan.Members) {
			r.Suspect = plan.Members[pe.Rank].TrainerId
		}
		s.report(ctx, r)
		<-gctx.Done()
	}
	if rank >= 0 {
		ring, err := allreduce.NewRing(gctx, allreduce.Config{Run: plan.Run, Rank: rank, Members: members,
			Generation: plan.Generation, Deadline: 5 * time.Second, Endpoint: s.ep, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fail(err)
		} else {
			buf := make([]float32, 16)
			last := time.Now()
			for gctx.Err() == nil && !s.dead.Load() {
				if err := ring.AllReduceSum(gctx, buf); err != nil {
					fail(err)
					break
				}
				pos.Step++
				s.trainedGen.Store(plan.Generation)
				if time.Since(last) >= reportEvery {
					s.report(gctx, &api.Report{TrainerId: s.id, Generation: plan.Generation, Kind: api.Report_PROGRESS,
						HasState: true, Position: pos, Steps: 1})
					last = time.Now()
				}
				select {
				case <-gctx.Done():
				case <-time.After(s.step):
				}
			}
			ring.Close()
		}
	}
	<-gctx.Done()
	<-watched
	nextMu.Lock()
	defer nextMu.Unlock()
	return next, pos
}

// kill makes the stand-in vanish: gossip silent, ring closed, control
// stream left open and silent (no FIN from a machine that lost power).
func (s *standIn) kill() {
	s.dead.Store(true)
	s.kt.dead.Store(true)
	s.ep.Close()
}

func (s *standIn) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if !s.dead.Load() {
		_ = s.node.Close(ctx)
	}
	s.ep.Close()
	if s.conn != nil {
		s.conn.Close()
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// procStat is a process's CPU time (user+system) and memory.
type procStat struct {
	cpu      time.Duration
	rss, hwm int64 // bytes
}

func readProc(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st := procStat{cpu: time.Duration(utime+stime) * time.Second / 100} // USER_HZ
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStat{}, err
	}
	for _, ln := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(ln, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			st.rss = kb << 10
		case "VmHWM":
			st.hwm = kb << 10
		}
	}
	return st, nil
}

func BenchmarkControlPlane(b *testing.B) {
	if l, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		b.Skipf("127.0.0.2 is not a local address here (%v): the stand-ins need 127.0.0.0/8 on lo", err)
	} else {
		l.Close()
	}
	for range b.N {
		controlPlane(b, *trainersFlag)
	}
}

func controlPlane(b *testing.B, n int) {
	secret, err := runauth.Generate()
	if err != nil {
		b.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gossip := gl.Addr().String()
	gl.Close()
	spec, _ := json.Marshal(coordinatorProc{Store: b.TempDir(), Gossip: gossip, Workers: n, Shards: 2 * n})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), coordinatorProcEnv+"="+string(spec), runauth.EnvVar+"="+secret.Reveal())
	// The coordinator's warnings (members leaving at the end, mostly)
	// are shown only if the benchmark fails.
	var childLog strings.Builder
	var childMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		childMu.Lock()
		defer childMu.Unlock()
		if childLog.Len() < 1<<20 {
			childLog.Write(p)
		}
		return len(p), nil
	})
	defer func() {
		if b.Failed() {
			childMu.Lock()
			b.Logf("coordinator's log:\n%s", childLog.String())
			childMu.Unlock()
		}
	}()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		b.Fatalf("coordinator did not start: %q %v", line, err)
	}
	pid := cmd.Process.Pid
	idle, _ := readProc(pid)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &traffic{}
	start := time.Now()
	standIns := make([]*standIn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 20 * time.Millisecond)
			// 127.0.1.x, 127.0.2.x, ...: a host of its own for each.
			ip := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
			s, err := startStandIn(ctx, fmt.Sprintf("trainer-%03d", i), ip, gossip, secret, tr, *stepFlag)
			if err != nil {
				errs <- err
				return
			}
			standIns[i] = s
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	defer func() {
		for _, s := range standIns {
			s.close()
		}
	}()
	joined := time.Since(start)
	for _, s := range standIns {
		go s.run(ctx)
	}
	status := func() *api.RunStatus {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		st, err := standIns[1].client.Status(sctx, &api.StatusRequest{})
		if err != nil {
			return nil
		}
		return st
	}
	// Converged: gossip lists everyone everywhere, and every stand-in has
	// done an all-reduce in the coordinator's current generation.
	waitFor := func(what string, limit time.Duration, cond func() bool) time.Duration {
		t0 := time.Now()
		for !cond() {
			if time.Since(t0) > limit {
				b.Fatalf("%s: not within %s", what, limit)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(t0)
	}
	views := func() (lo, hi int) {
		lo = n + 1
		for _, s := range standIns {
			k := len(s.node.Members())
			lo, hi = min(lo, k), max(hi, k)
		}
		return lo, hi
	}
	var gossipConverged time.Duration
	{
		t0 := time.Now()
		for lo, hi := views(); lo != n+1; lo, hi = views() {
			if time.Since(t0) > 3*time.Minute {
				b.Fatalf("gossip convergence: not within 3m; views from %d to %d members, want %d", lo, hi, n+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
		gossipConverged = time.Since(t0) + joined
	}
	byID := map[string]*standIn{}
	for _, s := range standIns {
		byID[s.id] = s
	}
	// Every live stand-in is a member of the coordinator's current run
	// plan and has done an all-reduce in it.
	allTrain := func(except *standIn, newer uint64) func() bool {
		want := n
		if except != nil {
			want--
		}
		return func() bool {
			st := status()
			if st == nil || st.State != "running" || st.Generation <= newer || len(st.Members) != want {
				return false
			}
			for _, m := range st.Members {
				s := byID[m.TrainerId]
				if s == nil || s == except || s.trainedGen.Load() != st.Generation {
					return false
				}
			}
			return true
		}
	}
	training := waitFor("every stand-in training", time.Minute, allTrain(nil, 0)) + gossipConverged
	gen0 := status().Generation

	// Steady state.
	r0, rb0, p0, pb0 := tr.reports.Load(), tr.reportBytes.Load(), tr.plans.Load(), tr.planBytes.Load()
	c0, _ := readProc(pid)
	time.Sleep(*steadyFlag)
	c1, _ := readProc(pid)
	secs := steadyFlag.Seconds()
	reportsPS := float64(tr.reports.Load()-r0) / secs
	reportBPS := float64(tr.reportBytes.Load()-rb0) / secs
	plansPS := float64(tr.plans.Load()-p0) / secs
	planBPS := float64(tr.planBytes.Load()-pb0) / secs
	steadyCPU := float64(c1.cpu-c0.cpu) / float64(*steadyFlag)
	steadyReplans := uint64(0)
	if st := status(); st != nil {
		steadyReplans = st.Generation - gen0
	}

	// Kill one (not rank 0, which would be the same case but for the
	// checkpoint writer).
	victim := standIns[n/2]
	p1, pb1 := tr.plans.Load(), tr.planBytes.Load()
	killed := time.Now()
	victim.kill()
	detect := waitFor("the killed member leaving the status", 30*time.Second, func() bool {
		st := status()
		if st == nil {
			return false
		}
		for _, m := range st.Members {
			if m.TrainerId == victim.id {
				return false
			}
		}
		return true
	})
	replan := waitFor("the re-plan without it", 30*time.Second, allTrain(victim, gen0))
	replanPlans, replanBytes := tr.plans.Load()-p1, tr.planBytes.Load()-pb1
	c2, _ := readProc(pid)
	_ = killed

	b.Logf("%d stand-ins: joined in %s, gossip converged %s, all training %s after start",
		n, joined.Round(time.Millisecond), gossipConverged.Round(time.Millisecond), training.Round(time.Millisecond))
	b.Logf("steady state over %s: %.0f reports/s (%.0f B/s), %.1f plans/s (%.0f B/s, %d re-plans); coordinator CPU %.1f%% of a core",
		*steadyFlag, reportsPS, reportBPS, plansPS, planBPS, steadyReplans, 100*steadyCPU)
	b.Logf("kill: seen %s after, re-planned and every survivor all-reducing %s later; %d plans, %d bytes (%.0f B a plan)",
		detect.Round(time.Millisecond), replan.Round(time.Millisecond), replanPlans, replanBytes, float64(replanBytes)/float64(max(1, replanPlans)))
	b.Logf("coordinator: CPU %s idle at start, %s in all; RSS %.1f MiB, peak %.1f MiB",
		idle.cpu, c2.cpu, float64(c2.rss)/(1<<20), float64(c2.hwm)/(1<<20))
	b.ReportMetric(gossipConverged.Seconds(), "converge_s")
	b.ReportMetric(detect.Seconds(), "detect_s")
	b.ReportMetric(replan.Seconds(), "replan_s")
	b.ReportMetric(reportsPS, "reports/s")
	b.ReportMetric(plansPS, "plans/s")
	b.ReportMetric(100*steadyCPU, "coord_cpu_%")
	b.ReportMetric(float64(c2.hwm)/(1<<20), "coord_peak_MiB")
	if detect > 5*time.Second {
		b.Errorf("the killed member was seen after %s, want within 5s", detect)
	}
	if replan > 2*time.Second {
		b.Errorf("the re-plan took %s, want within 2s", replan)
	}
	// Reports come every 500 ms from each stand-in (plus HOLDING replies);
	// plans only on membership changes.
	if limit := 1.5 * float64(n) / reportEvery.Seconds(); reportsPS > limit {
		b.Errorf("%.0f reports/s, want at most %.0f", reportsPS, limit)
	}
	// Plans go out only on membership changes; on a starved machine a
	// member missing its probes is one, so a few re-plans are no fault,
	// a plan to every member every second is.
	if plansPS > float64(n) {
		b.Errorf("%.1f plans/s in the steady state (%d re-plans), want well under one per member a second", plansPS, steadyReplans)
	}
}
