package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/membership"
	"github.com/sbtrain/sbtrain/storage"
)

// Options configure a coordinator.
type Options struct {
	Run        string
	ConfigHash string
	Version    string
	// The run's shape, as the job derived it from the config.
	Phases          int
	StepsPerPhase   int64
	Shards          int
	MinWorkers      int
	CheckpointEvery int64
	Store           storage.Store
	// GossipAddr and GRPCAddr are host:port to bind; port 0 picks one.
	// Trainers join GossipAddr and find the gRPC address in its meta.
	GossipAddr string
	GRPCAddr   string
	LeaseTTL   time.Duration
	Logger     *slog.Logger
	// OnProgress, if set, is called from the event loop after every
	// progress report with the run's status (keep it quick).
	OnProgress func(*api.RunStatus)
	// Method and PhaseNames describe the run to people (dashboard,
	// metrics.jsonl); PhaseNames has one name per phase, or is nil for
	// "phase 0", "phase 1", ...
	Method     string
	PhaseNames []string
	// Observer, if set, is told the run's facts as the machine decides
	// them (the command's dashboard), after the metrics log.
	Observer Observer
	// OnCommit, if set, is called after every committed checkpoint with
	// its name and run position, from a goroutine of the coordinator's
	// own, one call at a time: while a call runs, only the newest further
	// commit waits for the next. Close cancels ctx and waits for the call
	// in progress. The command uses it to draw the samples plot.
	OnCommit func(ctx context.Context, checkpoint string, pos Position)
	// Secret authenticates every channel of the run: gRPC with mutual TLS,
	// gossip with its key and label (see package runauth). Nil means the
	// run has none, and then every address must be on loopback.
	Secret *runauth.Secret
	// ConfigFields digests each field of the run config
	// (config.Config.FieldDigests), so that a trainer refused for another
	// config is told which fields differ. Nil: only the hashes are named.
	ConfigFields map[string]string
	// GossipTransport, if set, carries gossip instead of sockets at
	// GossipAddr (see membership.Options.Transport): for tests that run a
	// cluster in one process and fault its network.
	GossipTransport memberlist.NodeAwareTransport
}

// Coordinator is a running coordinator: it holds the run's lease, serves
// the control service and gossip, and drives the Machine.
type Coordinator struct {
	opts  Options
	log   *slog.Logger
	lease *storage.Lease // replaced on the loop goroutine when taken back
	// holder names this coordinator in the lease.
	holder string
	// retaking: the lease was lost and is being taken back; the machine
	// is suspended meanwhile (loop goroutine only).
	retaking bool
	// outage: a trainer reported that storage fails; the machine is
	// suspended until a lease renewal succeeds (loop goroutine only).
	outage bool
	ctx    context.Context // the coordinator's own, for goroutines it starts
	ckpts  *storage.Checkpoints
	node   *membership.Node
	grpc   *grpc.Server
	lis    net.Listener
	// rejects logs refused attempts on every channel, rate-limited.
	rejects *runauth.Rejects
	mlog    *metricsLog
	// obs are told the machine's facts: the metrics log, then
	// Options.Observer (loop goroutine).
	obs observers
	// gcKick asks the GC goroutine for a pass after a commit, so that the
	// loop never waits behind storage for it; a pass asked while one runs
	// is coalesced into the next.
	gcKick chan struct{}
	// commits carries the newest commit to the OnCommit goroutine.
	commits chan commitNote

	events chan func() // run on the loop goroutine, which owns m
	m      *Machine
	// followers by trainer ID; loop goroutine only.
	followers map[string]*follower
	gossipUp  map[string]bool

	planGen  uint64        // the newest plan told to the observers; loop goroutine only
	firstRun time.Time     // when the first run plan went out; loop goroutine only
	firstPos Position      // where it started
	done     chan struct{} // closed when the run is finished
	fatal    chan error    // lease lost, storage failure
	stop     context.CancelFunc
	wg       sync.WaitGroup
	closed   sync.Once
	closeErr error
}

// commitBytes is the size of a checkpoint as its trainer reports it, or
// the sum of its blobs.
func commitBytes(r *api.CommitRequest) int64 {
	if r.Bytes > 0 {
		return r.Bytes
	}
	var size int64
	for _, b := range r.Blobs {
		size += b.Size
	}
	return size
}

// commitNote is a committed checkpoint for OnCommit.
type commitNote struct {
	checkpoint string
	pos        Position
}

// follower is one open Follow stream.
type follower struct {
	id string
	// instance is the trainer process's instance ID
	// (runauth.InstanceHeader): only the same process may supersede the
	// stream or report for the trainer while it is open.
	instance string
	hello    *api.Hello
	plans    chan *api.Plan // newest plan; capacity 1
	gone     chan struct{}  // closed by the loop when the member is dropped
	up       bool           // MemberUp has been fed to the machine
}

// Start takes the run's lease, reads the newest verified checkpoint and
// starts gossip and the control service. A second coordinator of a live
// run fails here with an error naming the holder (storage.ErrLeaseHeld).
func Start(ctx context.Context, opts Options) (*Coordinator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Store == nil {
		return nil, errors.New("coordinator: no store")
	}
	if opts.GossipAddr == "" {
		opts.GossipAddr = "127.0.0.1:7946"
	}
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = "127.0.0.1:0"
	}
	if len(opts.PhaseNames) != opts.Phases {
		opts.PhaseNames = make([]string, max(0, opts.Phases))
		for i := range opts.PhaseNames {
			opts.PhaseNames[i] = fmt.Sprintf("phase %d", i)
		}
	}
	for _, a := range []struct{ what, addr string }{{"gossip address", opts.GossipAddr}, {"gRPC address", opts.GRPCAddr}} {
		if a.addr == "" {
			continue
		}
		if err := runauth.CheckBind(opts.Secret, a.what, a.addr); err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
	}
	c := &Coordinator{opts: opts, log: opts.Logger.With("role", "coordinator"),
		events: make(chan func(), 256), followers: map[string]*follower{}, gossipUp: map[string]bool{},
		done: make(chan struct{}), fatal: make(chan error, 4), commits: make(chan commitNote, 1), gcKick: make(chan struct{}, 1)}
	c.rejects = runauth.NewRejects(c.log, 0)
	var creds credentials.TransportCredentials
	var err error
	if opts.Secret != nil {
		if creds, err = opts.Secret.ServerCredentials(c.rejects); err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
	} else {
		c.log.Warn("this run has no secret: its channels are not authenticated, so it binds loopback addresses only (give one with --secret-file or " + runauth.EnvVar + ")")
	}
	if c.ckpts, err = storage.NewCheckpoints(opts.Store, opts.Run, c.log); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", opts.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen for gRPC on %s: %w", opts.GRPCAddr, err)
	}
	c.lis = lis
	closeListeners := func() { lis.Close() }
	host, _ := os.Hostname()
	c.holder = fmt.Sprintf("coordinator@%s (grpc %s)", host, lis.Addr())
	c.lease, err = storage.AcquireLease(ctx, opts.Store, opts.Run, c.holder, storage.LeaseOptions{TTL: opts.LeaseTTL, Logger: c.log})
	if err != nil {
		closeListeners()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	// Fence before recovering: a deposed coordinator's commit that lands
	// after the fence is invisible to the recovery below and to every
	// trainer, so all of them resume from one checkpoint.
	_, err = c.ckpts.Fence(ctx, c.lease.Generation())
	var committed Committed
	if err == nil {
		committed, err = c.recover(ctx)
	}
	if err == nil {
		c.m, err = NewMachine(Config{Run: opts.Run, Phases: opts.Phases, StepsPerPhase: opts.StepsPerPhase, Shards: opts.Shards,
			MinWorkers: opts.MinWorkers, CheckpointEvery: opts.CheckpointEvery, FirstGeneration: uint64(time.Now().Unix()) << 20}, committed)
	}
	if err == nil {
		c.mlog, err = openMetricsLog(ctx, opts.Store, opts.Run, c.log)
	}
	if err != nil {
		closeListeners()
		_ = c.lease.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.stop, c.ctx = cancel, lctx
	c.node, err = membership.Start(lctx, membership.Options{
		Name: "coordinator", BindAddr: opts.GossipAddr, Logger: c.log, Secret: opts.Secret, Rejects: c.rejects,
		Transport: opts.GossipTransport,
		Meta: membership.Meta{Role: membership.RoleCoordinator, Run: opts.Run, GRPC: lis.Addr().String(),
			ConfigHash: opts.ConfigHash, Version: opts.Version},
	})
	if err != nil {
		cancel()
		closeListeners()
		_ = c.lease.Release(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("coordinator: gossip on %s: %w", opts.GossipAddr, err)
	}
	c.mlog.add(MetricsRecord{Time: time.Now(), Kind: RecordRun, Run: opts.Run, Method: opts.Method,
		PhaseNames: opts.PhaseNames, StepsPerPhase: opts.StepsPerPhase, Phase: committed.Pos.Phase, Step: committed.Pos.Step})
	c.obs = observers{metricsObserver{log: c.mlog, stepsPerPhase: opts.StepsPerPhase}}
	if opts.Observer != nil {
		c.obs = append(c.obs, opts.Observer)
	}
	c.obs.NotifyState(c.m.State())
	sopts := []grpc.ServerOption{grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 2 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true})}
	if creds != nil {
		sopts = append(sopts, grpc.Creds(creds))
	}
	c.grpc = grpc.NewServer(sopts...)
	api.RegisterControlServer(c.grpc, &service{c: c})
	c.wg.Add(6)
	go func() { defer c.wg.Done(); _ = c.grpc.Serve(lis) }()
	go func() { defer c.wg.Done(); c.loop(lctx) }()
	go func() { defer c.wg.Done(); c.watchGossip(lctx) }()
	go func() { defer c.wg.Done(); c.mlog.keepFlushing(lctx) }()
	go func() { defer c.wg.Done(); c.commitHooks(lctx) }()
	go func() { defer c.wg.Done(); c.collectGarbage(lctx) }()
	c.keepLease(c.lease)
	c.log.Info("coordinator started", "run", opts.Run, "gossip", c.node.Addr(), "grpc", lis.Addr().String(),
		"lease_generation", c.lease.Generation(),
		"committed", committed.Pos.String(), "checkpoint", committed.Checkpoint, "min_workers", opts.MinWorkers)
	if c.m.Done() {
		c.log.Info("run already finished", "checkpoint", committed.Checkpoint)
	}
	return c, nil
}

// keepLease renews l until the coordinator stops; losing it suspends the
// run (see leaseLost).
func (c *Coordinator) keepLease(l *storage.Lease) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		l.Keep(c.ctx, 0, func(err error) {
			_ = c.post(c.ctx, func() { c.leaseLost(err) })
		})
	}()
}

// leaseLost acts on a lost or lapsed lease at once (loop goroutine): no
// further commit (the lease's Check and the fence refuse them anyway), no
// further metrics chunk, the trainers paused; then the lease is taken
// back, or the coordinator exits naming the holder.
func (c *Coordinator) leaseLost(err error) {
	if c.retaking {
		return
	}
	c.retaking = true
	c.mlog.halt(true)
	c.log.Error("lost the run's lease: committing nothing, pausing the trainers, trying to take it back", "err", err)
	c.feed(c.ctx, Suspend{Reason: "the coordinator lost the run's lease: " + err.Error()})
	old := c.lease
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.retake(old) }()
}

// ErrDeposed marks the error Wait returns when this coordinator lost the
// run's lease to another coordinator (or could not take it back): the
// run goes on under that one, from the last committed checkpoint.
var ErrDeposed = errors.New("coordinator deposed")

// retakeFor bounds how long a coordinator cut off from storage keeps
// trying to take its lease back before it gives up.
const retakeFor = 10 * time.Minute

// retake tries, with backoff, to acquire the lease again after old was
// lost. It succeeds only if nobody else held the run meanwhile (the fence
// shows old's generation still newest): then the run resumes where this
// coordinator's machine is. Otherwise the coordinator exits naming the
// holder; its trainers are paused and the run's storage holds the last
// committed checkpoint for the new holder to resume from.
func (c *Coordinator) retake(old *storage.Lease) {
	b := storage.Backoff{Base: 250 * time.Millisecond, Max: min(5*time.Second, old.TTL()/3)}
	out := storage.NewOutage(c.log, "take the run's lease back")
	for c.ctx.Err() == nil {
		l, err := storage.AcquireLease(c.ctx, c.opts.Store, c.opts.Run, c.holder,
			storage.LeaseOptions{TTL: old.TTL(), Logger: c.log})
		var held *storage.LeaseHeldError
		switch {
		case err == nil:
			prev, ferr := c.ckpts.Fence(c.ctx, l.Generation())
			if ferr == nil && prev == old.Generation() {
				out.Ended()
				_ = c.post(c.ctx, func() { c.leaseRetaken(l) })
				return
			}
			rctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
			_ = l.Release(rctx)
			cancel()
			if ferr == nil || errors.Is(ferr, storage.ErrFenced) {
				c.die(fmt.Errorf("coordinator of run %s lost its lease (generation %d) and another coordinator held the run meanwhile (generation %d fenced it); stopping: start it again to resume from the run's LATEST checkpoint: %w",
					c.opts.Run, old.Generation(), max(prev, l.Generation()-1), ErrDeposed))
				return
			}
			err = ferr
		case errors.As(err, &held) && held.Holder.Token != old.Info.Token:
			c.die(fmt.Errorf("coordinator of run %s lost its lease: %w; stopping, and leaving the run to that holder: %w", c.opts.Run, err, ErrDeposed))
			return
		}
		// Storage still failing, or our own old lease not yet expired by
		// the store's clock: wait.
		if _, lasted := out.Failed(err); lasted > retakeFor {
			c.die(fmt.Errorf("coordinator of run %s lost its lease and could not take it back for %s: %w: %w", c.opts.Run, lasted.Round(time.Second), err, ErrDeposed))
			return
		}
		select {
		case <-c.ctx.Done():
		case <-time.After(b.Next()):
		}
	}
}

// leaseRetaken resumes the run under the lease taken back (loop
// goroutine).
func (c *Coordinator) leaseRetaken(l *storage.Lease) {
	c.lease = l
	c.retaking = false
	c.mlog.halt(false)
	c.keepLease(l)
	c.log.Info("took the run's lease back; resuming", "lease_generation", l.Generation())
	if !c.outage {
		c.feed(c.ctx, Resume{Reason: "the coordinator took the run's lease back"})
	}
}

// die ends the coordinator with err (Wait returns it).
func (c *Coordinator) die(err error) {
	c.log.Error("coordinator stopping", "err", err)
	select {
	case c.fatal <- err:
	default:
	}
}

// storeOutage suspends the run after a trainer reported that checkpoints
// could not be written for longer than it tolerates, and resumes it once
// the lease's renewal (a write) succeeds again (loop goroutine).
func (c *Coordinator) storeOutage(from, why string) {
	if c.outage {
		return
	}
	c.outage = true
	c.feed(c.ctx, Suspend{Reason: fmt.Sprintf("storage unavailable (reported by %s): %s", from, why)})
	l := c.lease
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		b := storage.Backoff{Base: 500 * time.Millisecond, Max: min(5*time.Second, l.TTL()/3)}
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(b.Next()):
			}
			rctx, cancel := context.WithTimeout(c.ctx, l.TTL())
			err := l.Renew(rctx)
			cancel()
			if err == nil || errors.Is(err, storage.ErrLeaseLost) {
				_ = c.post(c.ctx, func() {
					c.outage = false
					switch {
					case c.lease != l:
						// Lost during the outage and taken back since: the
						// new lease writes, so storage answers.
						if !c.retaking {
							c.feed(c.ctx, Resume{Reason: "storage answers again"})
						}
					case err != nil:
						c.leaseLost(err) // it resumes the run if it takes the lease back
					case !c.retaking:
						c.log.Info("storage answers again; resuming the run")
						c.feed(c.ctx, Resume{Reason: "storage answers again"})
					}
				})
				return
			}
		}
	}()
}

// recover reads the newest verified checkpoint: where the run resumes.
func (c *Coordinator) recover(ctx context.Context) (Committed, error) {
	entries, err := c.ckpts.List(ctx)
	if err != nil {
		return Committed{}, fmt.Errorf("coordinator: list the checkpoints of run %s: %w", c.opts.Run, err)
	}
	if !slices.ContainsFunc(entries, func(e storage.Entry) bool { return e.Manifest != nil }) {
		return Committed{}, nil // a new run
	}
	// Some checkpoint was committed: resume from the newest that verifies,
	// and refuse to start from scratch over committed data if none does.
	l, err := c.ckpts.LoadLatest(ctx)
	if err != nil {
		return Committed{}, fmt.Errorf("coordinator: read the newest checkpoint of run %s: %w", c.opts.Run, err)
	}
	man := l.Manifest
	if man.ConfigHash != c.opts.ConfigHash {
		return Committed{}, fmt.Errorf("coordinator: run %s was checkpointed with config hash %s, this config hashes to %s: use another --run or the same config",
			c.opts.Run, man.ConfigHash, c.opts.ConfigHash)
	}
	id := storage.ID{Seq: man.Seq, Phase: man.Phase, Step: man.Step}
	pos := Position{Phase: man.Phase, Step: man.Step}
	if man.PhaseEnd {
		pos = Position{Phase: man.Phase + 1}
	}
	return Committed{Pos: pos, Checkpoint: id.String()}, nil
}

// GossipAddr is the address trainers join.
func (c *Coordinator) GossipAddr() string { return c.node.Addr() }

// GRPCAddr is the control service's address.
func (c *Coordinator) GRPCAddr() string { return c.lis.Addr().String() }

// Wait blocks until the run is finished (nil), the coordinator fails, or
// ctx ends.
func (c *Coordinator) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case err := <-c.fatal:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Committed is the newest committed checkpoint.
func (c *Coordinator) Committed(ctx context.Context) (Committed, error) {
	var out Committed
	// On error f may still run later, on the loop: out is not read then.
	if err := c.call(ctx, func() { out = c.m.Committed() }); err != nil {
		return Committed{}, err
	}
	return out, nil
}

// FirstRun is when this coordinator first asked its trainers to train
// (zero before) and from which position: the start of training time, after
// processes started, joined and waited for each other.
func (c *Coordinator) FirstRun(ctx context.Context) (time.Time, Position, error) {
	var t time.Time
	var p Position
	if err := c.call(ctx, func() { t, p = c.firstRun, c.firstPos }); err != nil {
		return time.Time{}, Position{}, err
	}
	return t, p, nil
}

// Status describes the run.
func (c *Coordinator) Status(ctx context.Context) (*api.RunStatus, error) {
	var out *api.RunStatus
	if err := c.call(ctx, func() { out = c.status() }); err != nil {
		return nil, err
	}
	return out, nil
}

// Close stops the service and gossip (leaving the cluster), ends every
// goroutine and releases the lease.
func (c *Coordinator) Close() error {
	c.closed.Do(func() {
		// Let the last plans (FINISH) reach the trainers before the
		// streams are cut.
		stopped := make(chan struct{})
		go func() { c.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			c.grpc.Stop()
		}
		c.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = c.node.Close(ctx)
		c.wg.Wait()
		// The loop has stopped, so nothing is added after this flush,
		// which writes while the lease is still held.
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.mlog.flush(fctx); err != nil {
			c.log.Warn("metrics.jsonl", "err", err)
		}
		fcancel()
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		c.closeErr = c.lease.Release(rctx)
		rcancel()
	})
	return c.closeErr
}

// call runs f on the loop goroutine and waits for it. When ctx ends
// first, f may still run later: the caller must not read what f writes
// unless call returned nil.
func (c *Coordinator) call(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case c.events <- func() { f(); close(ran) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ran:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// post queues f for the loop without waiting.
func (c *Coordinator) post(ctx context.Context, f func()) error {
	select {
	case c.events <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Coordinator) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-c.events:
			f()
		}
	}
}

// feed steps the machine and carries out its outputs (loop goroutine).
func (c *Coordinator) feed(ctx context.Context, e Event) []Output {
	outs := c.m.Step(e)
	for _, o := range outs {
		switch o := o.(type) {
		case Publish:
			if o.Plan.Kind == KindRun && c.firstRun.IsZero() {
				c.firstRun, c.firstPos = time.Now(), o.Plan.Start
			}
			if o.Plan.Generation != c.planGen {
				c.planGen = o.Plan.Generation
				c.obs.NotifyPlan(clonePlan(o.Plan))
			}
			p := toAPIPlan(o.Plan)
			for _, id := range o.To {
				if f := c.followers[id]; f != nil {
					select {
					case <-f.plans:
					default:
					}
					f.plans <- p
				}
			}
		case Log:
			c.log.Log(ctx, o.Level, o.Msg, o.Attrs...)
		case Finished:
			select {
			case <-c.done:
			default:
				close(c.done)
			}
		case MemberJoined:
			c.obs.NotifyJoin(o)
		case MemberLeft:
			c.obs.NotifyLeave(o)
		case StateChanged:
			c.obs.NotifyState(o.State)
		case ProgressAccepted:
			c.obs.NotifyProgress(o)
			if c.opts.OnProgress != nil {
				c.opts.OnProgress(c.status())
			}
		case CommitRecorded:
			c.obs.NotifyCommit(o)
			c.committedHook(o.Checkpoint, o.Pos)
		}
	}
	return outs
}

// committedHook hands a commit to the OnCommit goroutine (loop goroutine).
func (c *Coordinator) committedHook(checkpoint string, pos Position) {
	if c.opts.OnCommit == nil {
		return
	}
	// The loop is the only sender: after the drain the send cannot block,
	// and an older waiting commit is superseded.
	select {
	case <-c.commits:
	default:
	}
	c.commits <- commitNote{checkpoint: checkpoint, pos: pos}
}

// collectGarbage runs checkpoint GC after commits until ctx ends, off the
// loop: gossip, reports and plans do not wait behind storage for it.
func (c *Coordinator) collectGarbage(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.gcKick:
			if res, err := c.ckpts.GC(ctx, 3); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("checkpoint gc", "err", err)
				}
			} else if len(res.Removed) > 0 {
				c.log.Debug("checkpoint gc", "removed", len(res.Removed))
			}
		}
	}
}

// commitHooks calls OnCommit for the newest commit, one at a time, until
// ctx ends.
func (c *Coordinator) commitHooks(ctx context.Context) {
	if c.opts.OnCommit == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-c.commits:
			c.opts.OnCommit(ctx, n.checkpoint, n.pos)
		}
	}
}

func (c *Coordinator) watchGossip(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-c.node.Events():
			if !ok {
				return
			}
			if ev.Err != nil {
				c.log.Warn("gossip: bad member", "err", ev.Err)
				continue
			}
			if ev.Peer.Meta.Role != membership.RoleTrainer {
				continue
			}
			name := ev.Peer.Name
			kind := ev.Kind
			_ = c.post(ctx, func() {
				switch kind {
				case membership.Up, membership.Update:
					c.gossipUp[name] = true
					if f := c.followers[name]; f != nil && !f.up {
						c.memberUp(ctx, f)
					}
				case membership.Down:
					delete(c.gossipUp, name)
					c.drop(ctx, name, "gossip declared it dead")
				}
			})
		}
	}
}

// memberUp feeds MemberUp for a follower whose stream is open and whose
// gossip node is alive (loop goroutine).
func (c *Coordinator) memberUp(ctx context.Context, f *follower) {
	f.up = true
	up, _ := decodeHello(f.hello) // Follow decoded it before filing f
	c.feed(ctx, up)
}

// drop removes a follower and tells the machine (loop goroutine).
func (c *Coordinator) drop(ctx context.Context, id, reason string) {
	f := c.followers[id]
	if f == nil {
		return
	}
	delete(c.followers, id)
	close(f.gone)
	if f.up {
		c.feed(ctx, MemberDown{ID: id, Reason: reason})
	}
}

// gossipAlive says whether gossip currently lists the trainer.
func (c *Coordinator) gossipAlive(id string) bool {
	for _, p := range c.node.Members() {
		if p.Name == id {
			return true
		}
	}
	return false
}

func toAPIPlan(p Plan) *api.Plan {
	out := &api.Plan{Run: p.Run, Generation: p.Generation, Start: api.FromPosition(p.Start),
		Checkpoint: p.Checkpoint, SourceRank: int32(p.SourceRank), CheckpointEvery: p.CheckpointEvery, Reason: p.Reason,
		CommitStart: p.CommitStart}
	switch p.Kind {
	case KindWait:
		out.Kind = api.Plan_WAIT
	case KindPause:
		out.Kind = api.Plan_PAUSE
	case KindRun:
		out.Kind = api.Plan_RUN
	case KindFinish:
		out.Kind = api.Plan_FINISH
	}
	switch p.Source {
	case SourceInit:
		out.Source = api.Plan_INIT
	case SourceCheckpoint:
		out.Source = api.Plan_CHECKPOINT
	case SourcePeer:
		out.Source = api.Plan_PEER
	}
	for _, m := range p.Members {
		pm := &api.PlanMember{TrainerId: m.ID, RingAddr: m.RingAddr}
		for _, s := range m.Shards {
			pm.Shards = append(pm.Shards, int32(s))
		}
		out.Members = append(out.Members, pm)
	}
	return out
}

func (c *Coordinator) status() *api.RunStatus {
	cm := c.m.Committed()
	st := &api.RunStatus{Run: c.opts.Run, Generation: c.m.Generation(), State: c.m.State().String(),
		Committed: api.FromPosition(cm.Pos), CommittedCheckpoint: cm.Checkpoint,
		Phases: int32(c.opts.Phases), StepsPerPhase: c.opts.StepsPerPhase, Done: c.m.Done()}
	for _, m := range c.m.Members() {
		st.Members = append(st.Members, &api.MemberStatus{TrainerId: m.ID, RingAddr: m.RingAddr,
			Position: api.FromPosition(m.Pos), Loss: m.Loss, SamplesPerSec: m.SamplesPerSec,
			AllreduceFraction: m.AllReduceFraction})
	}
	return st
}

// service implements api.ControlServer on top of the loop.
type service struct {
	api.UnimplementedControlServer
	c *Coordinator
}

func (s *service) Follow(h *api.Hello, stream grpc.ServerStreamingServer[api.Plan]) error {
	c := s.c
	var diffs []string
	if _, err := decodeHello(h); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if h.ConfigHash != c.opts.ConfigHash {
		diffs = append(diffs, configDiff(h, c.opts))
	}
	if h.Version != c.opts.Version {
		diffs = append(diffs, fmt.Sprintf("binary version %q, the coordinator's is %q", h.Version, c.opts.Version))
	}
	if len(diffs) > 0 {
		c.log.Warn("refused a trainer", "trainer", h.TrainerId, "why", diffs)
		return status.Errorf(codes.FailedPrecondition, "trainer %s refused by run %s: %v", h.TrainerId, c.opts.Run, diffs)
	}
	ctx := stream.Context()
	f := &follower{id: h.TrainerId, instance: runauth.InstanceOf(ctx), hello: h, plans: make(chan *api.Plan, 1), gone: make(chan struct{})}
	var dup error
	err := c.call(ctx, func() {
		if old := c.followers[f.id]; old != nil {
			if old.hello.RingAddr != h.RingAddr || old.instance != f.instance {
				// Another process with this ID still holds a stream: two
				// trainers must not share a rank, and only the process
				// that opened the stream (its instance ID) may replace it.
				// A restarted trainer retries until its old stream is seen
				// to end.
				dup = status.Errorf(codes.AlreadyExists, "trainer id %s is in use by a live trainer (ring %s); give each trainer a unique --id",
					f.id, old.hello.RingAddr)
				return
			}
			// The same trainer on a new stream: the machine sees one
			// MemberUp of a member already up, a reconnect.
			delete(c.followers, f.id)
			close(old.gone)
		}
		c.followers[f.id] = f
		if c.gossipUp[f.id] || c.gossipAlive(f.id) {
			c.gossipUp[f.id] = true
			c.memberUp(ctx, f)
		}
		if c.m.Done() && !f.up {
			c.memberUp(ctx, f)
		}
	})
	if err != nil {
		return err
	}
	if dup != nil {
		c.rejects.Refused("follow", peerAddr(ctx), dup.Error())
		return dup
	}
	defer func() {
		_ = c.post(context.WithoutCancel(ctx), func() {
			if c.followers[f.id] == f {
				c.drop(ctx, f.id, "control stream ended")
			}
		})
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.gone:
			// Deliver a final FINISH if one is waiting.
			select {
			case p := <-f.plans:
				_ = stream.Send(p)
			default:
			}
			return status.Error(codes.Unavailable, "dropped by the coordinator")
		case p := <-f.plans:
			if err := stream.Send(p); err != nil {
				return err
			}
		}
	}
}

// configDiff says how a trainer's config differs from the coordinator's:
// the fields, when both sent their digests, and the hashes.
func configDiff(h *api.Hello, opts Options) string {
	const most = 12
	fields := config.DiffFields(h.GetConfigFields(), opts.ConfigFields)
	if len(h.GetConfigFields()) == 0 || len(opts.ConfigFields) == 0 || len(fields) == 0 {
		return fmt.Sprintf("config hash %s, the coordinator's is %s (start every process with the same config)", h.ConfigHash, opts.ConfigHash)
	}
	more := ""
	if len(fields) > most {
		more = fmt.Sprintf(" and %d more", len(fields)-most)
		fields = fields[:most]
	}
	return fmt.Sprintf("config differs from the coordinator's in %s%s (hash %s, the coordinator's %s; start every process with the same config)",
		strings.Join(fields, ", "), more, h.ConfigHash, opts.ConfigHash)
}

func (s *service) Report(ctx context.Context, r *api.Report) (*api.Ack, error) {
	c := s.c
	if r.GetKind() == api.Report_STORE_OUTAGE {
		if err := checkTrainerID("report", r.GetTrainerId()); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		instance := runauth.InstanceOf(ctx)
		err := c.post(ctx, func() {
			// Only rank 0 of the current run writes checkpoints.
			if f := c.followers[r.TrainerId]; f == nil || (f.instance != "" && f.instance != instance) ||
				r.Generation != c.m.Generation() {
				return
			}
			c.storeOutage(r.TrainerId, r.Error)
		})
		if err != nil {
			return nil, status.FromContextError(err).Err()
		}
		return &api.Ack{}, nil
	}
	e, err := decodeReport(r)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	instance := runauth.InstanceOf(ctx)
	err = c.post(ctx, func() {
		f := c.followers[r.TrainerId]
		if f == nil {
			return
		}
		if f.instance != "" && f.instance != instance {
			// Not the process that follows as this trainer.
			c.rejects.Refused("report", peerAddr(ctx), fmt.Sprintf("report for trainer %s from another process than the one following as it", r.TrainerId))
			return
		}
		c.feed(ctx, e)
	})
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &api.Ack{}, nil
}

// peerAddr is the remote address of a call, for logs.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

func (s *service) Commit(ctx context.Context, r *api.CommitRequest) (*api.CommitReply, error) {
	c := s.c
	var wrong bool
	if err := c.call(ctx, func() {
		f := c.followers[r.TrainerId]
		wrong = f != nil && f.instance != "" && f.instance != runauth.InstanceOf(ctx)
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if wrong {
		c.rejects.Refused("commit", peerAddr(ctx), fmt.Sprintf("commit for trainer %s from a process that does not follow as it", r.TrainerId))
		return nil, status.Errorf(codes.PermissionDenied, "commit from %s refused: this process does not follow as trainer %s", peerAddr(ctx), r.TrainerId)
	}
	call, err := decodeCommit(r, c.opts.ConfigHash)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id, pos, meta, blobs := call.id, call.event.Pos, call.meta, call.blobs
	var reply *api.CommitReply
	var rerr error
	err = c.call(ctx, func() {
		outs := c.feed(ctx, call.event)
		for _, o := range outs {
			switch o := o.(type) {
			case RejectCommit:
				rerr = status.Errorf(codes.FailedPrecondition, "commit of %s refused: %s", r.Checkpoint, o.Reason)
			case ApproveCommit:
				began := time.Now()
				// A lease that lapsed by this clock may already be someone
				// else's, whatever storage would say now.
				if err := c.lease.Check(); err != nil {
					c.leaseLost(err)
					rerr = status.Errorf(codes.FailedPrecondition, "commit of %s refused: %v", r.Checkpoint, err)
					return
				}
				if _, err := c.ckpts.Commit(ctx, id, meta, blobs); err != nil {
					if errors.Is(err, storage.ErrLeaseLost) {
						c.leaseLost(err)
						rerr = status.Errorf(codes.FailedPrecondition, "commit of %s refused: %v", r.Checkpoint, err)
						return
					}
					// Storage failing: the trainer retries.
					rerr = status.Errorf(codes.Unavailable, "commit %s: %v", r.Checkpoint, err)
					return
				}
				select {
				case c.gcKick <- struct{}{}:
				default: // a pass is already asked for
				}
				reply = &api.CommitReply{Checkpoint: r.Checkpoint}
				c.feed(ctx, CheckpointCommitted{Pos: pos, Checkpoint: r.Checkpoint, Trainer: r.TrainerId, Generation: r.Generation,
					Bytes: commitBytes(r), Seconds: r.WriteSeconds + time.Since(began).Seconds()})
			}
		}
		if reply == nil && rerr == nil {
			rerr = status.Errorf(codes.Internal, "commit of %s: the state machine gave no answer", r.Checkpoint)
		}
	})
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return reply, rerr
}

func (s *service) Status(ctx context.Context, _ *api.StatusRequest) (*api.RunStatus, error) {
	st, err := s.c.Status(ctx)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return st, nil
}
