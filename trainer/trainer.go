// Package trainer owns one trainer process of a distributed run: it joins
// the run's gossip cluster, follows the coordinator's plans, forms the
// all-reduce ring of each generation, obtains the training state (fresh,
// from a checkpoint, or broadcast by a peer), runs the step loop (local
// gradient on the virtual shards it owns, ring all-reduce, identical
// optimiser step on every replica), builds or loads cache shards, writes
// checkpoint blobs when it is rank 0, and reports progress.
//
// A trainer keeps its state in memory across generations and across a
// lost coordinator, so a re-plan redoes at most the step in flight.
// Every checkpoint is a barrier of the ring: rank 0 writes and commits it,
// retrying storage with backoff while it tells the others to wait, and
// nobody steps on before the commit.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/membership"
	"github.com/sbtrain/sbtrain/storage"
)

// Options configure a trainer.
type Options struct {
	ID      string // unique in the run; ring order sorts by it
	Run     string
	Job     *job.Job
	Store   storage.Store
	Version string
	// Join is the coordinator's gossip address (host:port).
	Join string
	// Host is the address this trainer binds its gossip and ring ports on,
	// and advertises to its peers, so it must be one they can reach (in a
	// pod: the pod IP).
	Host string
	// GossipPort and RingPort fix the gossip (TCP and UDP) and ring ports,
	// for a pod whose ports are declared; 0 picks free ones.
	GossipPort int
	RingPort   int
	// RingDeadline bounds every wait on a silent peer inside a collective.
	RingDeadline time.Duration
	// RingSkewLimit bounds the wait on a live peer that has not reached
	// the collective yet: members simulate their own shards of a cache
	// before the next step's all-reduce, and a slower core finishes later.
	// 0 means allreduce's default.
	RingSkewLimit time.Duration
	// CoordinatorTimeout is how long the trainer looks for a coordinator
	// (at start, and after losing one) before giving up.
	CoordinatorTimeout time.Duration
	// ReportEvery is the interval of progress reports.
	ReportEvery time.Duration
	Logger      *slog.Logger
	// CrashAfterBlobs, for fault-injection tests, makes rank 0 SIGKILL
	// its process group (with `sbtrain local`: the whole run) after
	// writing the blobs of its n-th checkpoint and before asking for the
	// commit (0 = never).
	CrashAfterBlobs int
	// ConfigFields digests each field of the run config
	// (config.Config.FieldDigests); the coordinator names the fields that
	// differ when it refuses another config.
	ConfigFields map[string]string
	// StoreOutage is how long rank 0 retries a checkpoint that storage
	// will not take before it asks the coordinator to pause the run; 0: 1
	// minute.
	StoreOutage time.Duration
	// Secret authenticates the trainer's channels: gRPC with mutual TLS,
	// gossip with its key and label, ring links with a challenge-response
	// (see package runauth). Nil means the run has none, and then Host
	// must be a loopback address.
	Secret *runauth.Secret

	// For tests that run a cluster in one process and fault its network:
	// GossipTransport carries gossip instead of sockets (see
	// membership.Options.Transport), RingTransport the ring links instead
	// of TCP (e.g. an allreduce.MemNetwork; the ring listens on
	// Host:RingPort there, so give each trainer its own Host), and
	// AfterStep, if set, sees the state after every applied step, with
	// the generation that applied it (it must not keep or change it).
	GossipTransport memberlist.NodeAwareTransport
	RingTransport   allreduce.Transport
	AfterStep       func(generation uint64, st *job.State)
}

func (o *Options) fill() error {
	switch {
	case o.ID == "":
		return errors.New("trainer id is empty")
	case o.Job == nil:
		return errors.New("trainer has no job")
	case o.Store == nil:
		return errors.New("trainer has no store")
	case o.Join == "":
		return errors.New("coordinator address (--join) is empty")
	}
	if err := storage.ValidateRunID(o.Run); err != nil {
		return err
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"gossip", o.GossipPort}, {"ring", o.RingPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("%s port %d: want 0 (any free port) to 65535", p.name, p.v)
		}
	}
	if o.GossipPort != 0 && o.GossipPort == o.RingPort {
		return fmt.Errorf("gossip and ring ports are both %d: they need one each", o.GossipPort)
	}
	if o.RingDeadline <= 0 {
		o.RingDeadline = 10 * time.Second
	}
	if o.RingSkewLimit < 0 {
		return fmt.Errorf("ring skew limit %v: want >= 0", o.RingSkewLimit)
	}
	if o.CoordinatorTimeout <= 0 {
		o.CoordinatorTimeout = 60 * time.Second
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = 500 * time.Millisecond
	}
	if o.StoreOutage <= 0 {
		o.StoreOutage = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return runauth.CheckBind(o.Secret, "trainer host", net.JoinHostPort(o.Host, "0"))
}

// Trainer is one running trainer.
type Trainer struct {
	opts   Options
	log    *slog.Logger
	ep     *allreduce.Endpoint
	node   *membership.Node
	ckpts  *storage.Checkpoints
	shards *shardCache

	state      *job.State
	rejects    *runauth.Rejects
	instance   string // this process's, sent with every control call
	lastGen    uint64
	checkpoint int // checkpoints written, for CrashAfterBlobs
	stall      *stallWatch
	// failures counts the generations that failed in a row, so that a
	// failure that repeats (a checkpoint that cannot be loaded, a peer
	// that keeps dropping) is retried with backoff, not at network speed.
	failures int
	backoff  storage.Backoff
	// outage reports checkpoint writes that storage refuses, once per
	// outage.
	outage *storage.Outage
}

// Run joins the run and trains until the coordinator says the run is
// finished (nil), ctx ends, or no coordinator can be reached.
func Run(ctx context.Context, opts Options) error {
	if err := opts.fill(); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	t := &Trainer{opts: opts, log: opts.Logger.With("trainer", opts.ID), instance: runauth.NewInstance()}
	t.rejects = runauth.NewRejects(t.log, 0)
	t.stall = startStallWatch(ctx)
	t.backoff = storage.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	t.outage = storage.NewOutage(t.log, "checkpoint, retried with backoff")
	lopts := allreduce.ListenOptions{HandshakeTimeout: opts.RingDeadline, Logger: t.log,
		Refused: func(from, why string) { t.rejects.Refused("ring", from, why) }}
	if opts.Secret != nil {
		lopts.Key = opts.Secret.RingKey()
	} else {
		t.log.Warn("this run has no secret: its channels are not authenticated, so it binds loopback addresses only (give one with --secret-file or " + runauth.EnvVar + ")")
	}
	var err error
	if t.ckpts, err = storage.NewCheckpoints(opts.Store, opts.Run, t.log); err != nil {
		return err
	}
	t.shards = newShardCache(opts.Store, opts.Run, opts.Job, t.log)
	ringAddr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.RingPort))
	var ringNet allreduce.Transport = allreduce.TCP{}
	if opts.RingTransport != nil {
		ringNet = opts.RingTransport
	}
	if t.ep, err = allreduce.ListenWith(ringNet, ringAddr, lopts); err != nil {
		return fmt.Errorf("trainer %s: ring endpoint: %w", opts.ID, err)
	}
	defer t.ep.Close()
	t.node, err = membership.Start(ctx, membership.Options{
		Name: opts.ID, BindAddr: net.JoinHostPort(opts.Host, strconv.Itoa(opts.GossipPort)), Logger: t.log,
		Secret: opts.Secret, Rejects: t.rejects, Transport: opts.GossipTransport,
		Meta: membership.Meta{Role: membership.RoleTrainer, Run: opts.Run, Ring: t.ep.Addr(),
			ConfigHash: opts.Job.Hash, Version: opts.Version},
	})
	if err != nil {
		return fmt.Errorf("trainer %s: gossip: %w", opts.ID, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = t.node.Close(cctx)
	}()
	if err := t.join(ctx); err != nil {
		return err
	}
	t.log.Info("joined", "coordinator", opts.Join, "ring", t.ep.Addr(), "gossip", t.node.Addr())
	return t.follow(ctx)
}

// join joins the coordinator's gossip cluster, retrying for up to
// CoordinatorTimeout: a trainer may start before its coordinator (pods of a
// Job and a Deployment start in any order), and failing at once would burn
// a retry of the trainer for no fault of its own.
func (t *Trainer) join(ctx context.Context) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := t.node.Join(jctx, []string{t.opts.Join})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > t.opts.CoordinatorTimeout {
			return fmt.Errorf("trainer %s: join the coordinator at %s: no answer for %s: %w", t.opts.ID, t.opts.Join, t.opts.CoordinatorTimeout, err)
		}
		if attempt%10 == 0 {
			t.log.Warn("waiting for the coordinator's gossip", "join", t.opts.Join, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// follow connects to the coordinator and executes its plans; when the
// coordinator is lost it keeps its state and looks for one again.
func (t *Trainer) follow(ctx context.Context) error {
	lostSince := time.Now()
	for attempt := 0; ; attempt++ {
		conn, plans, err := t.connect(ctx)
		if err != nil {
			var refused *refusedError
			if errors.As(err, &refused) {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(lostSince) > t.opts.CoordinatorTimeout {
				return fmt.Errorf("trainer %s: no coordinator reachable through %s for %s: %w", t.opts.ID, t.opts.Join, t.opts.CoordinatorTimeout, err)
			}
			if attempt%10 == 0 {
				t.log.Warn("looking for the coordinator", "join", t.opts.Join, "err", err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		done, err := t.execute(ctx, conn, plans)
		conn.Close()
		if done || ctx.Err() != nil {
			return err
		}
		t.log.Warn("lost the coordinator; keeping state and reconnecting", "err", err)
		lostSince = time.Now()
	}
}

// refusedError is the coordinator refusing this trainer: final.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// planStream delivers the newest plan; older undelivered ones are dropped
// because only the newest matters.
type planStream struct {
	latest chan *api.Plan
	err    chan error
}

func (t *Trainer) connect(ctx context.Context) (*grpc.ClientConn, *planStream, error) {
	_ = t.node.Join(ctx, []string{t.opts.Join}) // a restarted coordinator is a new gossip node
	peer, ok := t.node.Find(membership.RoleCoordinator)
	if !ok {
		for _, p := range t.node.Strangers() {
			if p.Meta.Role != membership.RoleCoordinator {
				continue
			}
			err := fmt.Errorf("trainer %s: the coordinator at %s runs run %q, this trainer run %q: the run names differ (give both the same --run, or the same name in the config)",
				t.opts.ID, p.Addr, p.Meta.Run, t.opts.Run)
			if p.Addr == t.opts.Join {
				// The seed it was told to join is that coordinator: ours
				// will never be found there.
				return nil, nil, &refusedError{err.Error()}
			}
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("no coordinator among the gossip members")
	}
	creds := insecure.NewCredentials()
	if t.opts.Secret != nil {
		var err error
		if creds, err = t.opts.Secret.ClientCredentials(); err != nil {
			return nil, nil, err
		}
	}
	dopts := append(runauth.WithInstance(t.instance), grpc.WithTransportCredentials(creds),
		// A coordinator whose machine vanished sends no FIN: pings find out.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}))
	conn, err := grpc.NewClient(peer.Meta.GRPC, dopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("dial coordinator %s: %w", peer.Meta.GRPC, err)
	}
	hello := &api.Hello{TrainerId: t.opts.ID, ConfigHash: t.opts.Job.Hash, Version: t.opts.Version,
		RingAddr: t.ep.Addr(), LastGeneration: t.lastGen, ConfigFields: t.opts.ConfigFields}
	if t.state != nil {
		p := t.state.Position()
		hello.HasState, hello.Held = true, api.FromPosition(p)
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := api.NewControlClient(conn).Follow(sctx, hello)
	if err != nil {
		cancel()
		conn.Close()
		return nil, nil, fmt.Errorf("follow coordinator %s: %w", peer.Meta.GRPC, err)
	}
	// The first plan comes as soon as the coordinator has seen this trainer
	// in gossip too; waiting longer means something is wrong.
	noPlan := time.AfterFunc(t.opts.CoordinatorTimeout, cancel)
	rejoin := t.keepJoining(sctx)
	first, err := stream.Recv()
	rejoin()
	if !noPlan.Stop() && err != nil {
		err = fmt.Errorf("no plan within %s: %w", t.opts.CoordinatorTimeout, err)
	}
	if err != nil {
		cancel()
		conn.Close()
		if s, ok := status.FromError(err); ok && (s.Code() == codes.FailedPrecondition || s.Code() == codes.InvalidArgument) {
			return nil, nil, &refusedError{fmt.Sprintf("trainer %s: the coordinator refused it: %s", t.opts.ID, s.Message())}
		}
		return nil, nil, fmt.Errorf("follow coordinator %s: %w", peer.Meta.GRPC, err)
	}
	ps := &planStream{latest: make(chan *api.Plan, 1), err: make(chan error, 1)}
	ps.latest <- first
	go func() {
		defer cancel()
		for {
			p, err := stream.Recv()
			if err != nil {
				ps.err <- err
				return
			}
			select {
			case <-ps.latest:
			default:
			}
			ps.latest <- p
		}
	}()
	return conn, ps, nil
}

// keepJoining joins the coordinator's gossip every second until the
// returned function is called. The coordinator sends the first plan only
// once its gossip lists this trainer, and after a partition each side may
// have declared the other dead: memberlist probes only the living, so
// nothing heals that split but a join.
func (t *Trainer) keepJoining(ctx context.Context) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-quit:
				return
			case <-tick.C:
			}
			jctx, cancel := context.WithTimeout(ctx, time.Second)
			_ = t.node.Join(jctx, []string{t.opts.Join})
			cancel()
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// execute follows plans until FINISH (done), or the stream breaks.
func (t *Trainer) execute(ctx context.Context, conn *grpc.ClientConn, ps *planStream) (done bool, err error) {
	client := api.NewControlClient(conn)
	var plan *api.Plan
	for {
		if plan == nil {
			select {
			case <-ctx.Done():
				return true, ctx.Err()
			case err := <-ps.err:
				return false, err
			case plan = <-ps.latest:
			}
		}
		if plan.Generation > t.lastGen {
			t.lastGen = plan.Generation
		}
		t.ep.Observe(plan.Run, plan.Generation)
		t.log.Info("plan", "generation", plan.Generation, "kind", plan.Kind.String(), "members", len(plan.Members),
			"start", fmt.Sprintf("%d/%d", plan.GetStart().GetPhase(), plan.GetStart().GetStep()), "reason", plan.Reason)
		switch plan.Kind {
		case api.Plan_FINISH:
			return true, nil
		case api.Plan_WAIT:
			plan = nil
		case api.Plan_PAUSE:
			rep := &api.Report{TrainerId: t.opts.ID, Generation: plan.Generation, Kind: api.Report_HOLDING}
			if t.state != nil {
				p := t.state.Position()
				rep.HasState, rep.Position = true, api.FromPosition(p)
			}
			if err := t.report(ctx, client, rep); err != nil {
				return false, err
			}
			plan = nil
		case api.Plan_RUN:
			next, err := t.runPlan(ctx, client, plan, ps)
			if err != nil {
				if ctx.Err() != nil {
					return true, ctx.Err()
				}
				if errors.Is(err, errStreamLost) {
					return false, err
				}
				rep := &api.Report{TrainerId: t.opts.ID, Generation: plan.Generation, Kind: api.Report_RING_FAILED, Error: err.Error()}
				var pe *allreduce.PeerError
				var so *storeOutageError
				switch {
				case errors.As(err, &so):
					rep.Kind = api.Report_STORE_OUTAGE
					t.log.Warn("storage is out: asking the coordinator to pause the run", "generation", plan.Generation, "err", err)
				case t.stall.stalledWithin(t.opts.RingDeadline + time.Second):
					// This process was not running (SIGSTOP, a frozen VM):
					// its peers did not fail it, it failed them.
					t.log.Warn("generation failed while this trainer was stalled; blaming no peer", "generation", plan.Generation,
						"stalled_for", t.stall.lastStall().Round(time.Millisecond), "err", err)
				default:
					t.log.Warn("generation failed", "generation", plan.Generation, "err", err)
					if errors.As(err, &pe) && pe.Rank >= 0 && pe.Rank < len(plan.Members) {
						rep.Suspect = plan.Members[pe.Rank].TrainerId
					}
				}
				if rerr := t.report(ctx, client, rep); rerr != nil {
					return false, rerr
				}
				t.failures++
				if t.failures > 1 {
					// The same failure again: back off, unless a plan other
					// than a pause comes.
					wait := t.backoff.Next()
					t.log.Info("generations keep failing; waiting before the next", "failures", t.failures, "wait", wait.Round(time.Millisecond))
					var done bool
					if next, done, err = t.waitOut(ctx, ps, wait); err != nil {
						return done, err
					}
				}
			}
			plan = next
		default:
			return false, fmt.Errorf("plan of generation %d has unknown kind %v", plan.Generation, plan.Kind)
		}
	}
}

// waitOut waits out a failure's backoff. A plan other than a pause ends
// the wait at once. A pause is kept but answered only after the wait: it
// asks what this trainer holds, and answering at once lets the coordinator
// plan the failing generation again at network speed, which the backoff
// is there to stop. The coordinator waits for every member's answer to a
// pause, so the delay holds the whole run back, not only this trainer.
// Its done and error are execute's.
func (t *Trainer) waitOut(ctx context.Context, ps *planStream, wait time.Duration) (next *api.Plan, done bool, err error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var kept *api.Plan
	for {
		select {
		case <-ctx.Done():
			return nil, true, ctx.Err()
		case err := <-ps.err:
			return nil, false, err
		case p := <-ps.latest:
			if p.Kind != api.Plan_PAUSE {
				return p, false, nil
			}
			kept = p
		case <-timer.C:
			return kept, false, nil
		}
	}
}

func (t *Trainer) report(ctx context.Context, client api.ControlClient, r *api.Report) error {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := client.Report(rctx, r); err != nil {
		return fmt.Errorf("report to the coordinator: %w", err)
	}
	return nil
}

var errStreamLost = errors.New("plan stream lost")

// generationWatch cancels a generation's context when a newer plan
// arrives or the stream breaks, which aborts a blocked collective.
type generationWatch struct {
	next    *api.Plan
	lostErr error
	mu      sync.Mutex
}

func (t *Trainer) watch(ctx context.Context, ps *planStream, cancel context.CancelFunc, w *generationWatch, stop <-chan struct{}) {
	defer cancel()
	select {
	case p := <-ps.latest:
		w.mu.Lock()
		w.next = p
		w.mu.Unlock()
	case err := <-ps.err:
		w.mu.Lock()
		w.lostErr = err
		w.mu.Unlock()
	case <-stop:
	case <-ctx.Done():
	}
}
