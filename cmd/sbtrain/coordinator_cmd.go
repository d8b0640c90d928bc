package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
)

func init() {
	register(&command{name: "coordinator", summary: "schedule a run's phases across trainers: gossip seed, control service, checkpoint commits", run: runCoordinator})
}

// coordFlags are the coordinator's own flags, shared with local.
type coordFlags struct {
	workers         int
	checkpointEvery int64
	leaseTTL        time.Duration
	out             string
	http            string // dashboard address; empty = none
	httpTokenFile   string // the dashboard's bearer token; empty = none
	secret          *runauth.Secret
}

func (f *coordFlags) validate() error {
	switch {
	case f.workers < 1:
		return usagef("--workers %d: want at least 1", f.workers)
	case f.checkpointEvery < 0:
		return usagef("--checkpoint-every %d: want >= 0 (0 = phase ends only)", f.checkpointEvery)
	case f.leaseTTL < time.Second:
		return usagef("--lease-ttl %s: want at least 1s", f.leaseTTL)
	}
	if f.http != "" {
		return checkListenAddr("http", f.http)
	}
	return nil
}

// checkListenAddr checks a HOST:PORT flag before anything binds it, so a
// bad port is a usage error naming the flag, not a failure to listen.
func checkListenAddr(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--%s %q: want host:port", flag, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return usagef("--%s %q: port %q, want 0 (any free port) to 65535", flag, addr, port)
	}
	return nil
}

func runCoordinator(ctx context.Context, args []string) error {
	fs := newFlagSet("coordinator", "[--config FILE] [--store URL] [--gossip HOST:PORT] [--workers N] [flags]")
	rf := addRunFlags(fs, "file://./runs")
	var cf coordFlags
	gossip := fs.String("gossip", "127.0.0.1:7946", "gossip address to bind; trainers --join it")
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "control service address to bind (advertised through gossip)")
	fs.IntVar(&cf.workers, "workers", 1, "trainers to wait for before the first phase starts")
	fs.Int64Var(&cf.checkpointEvery, "checkpoint-every", 100, "checkpoint every N steps as well as at every phase end (0 = phase ends only)")
	fs.DurationVar(&cf.leaseTTL, "lease-ttl", 15*time.Second, "how long the run's lease outlives a coordinator that stopped renewing it")
	fs.StringVar(&cf.out, "out", "", "when the run finishes, write metrics.json, plots and networks here (empty = don't)")
	fs.StringVar(&cf.http, "http", "", "serve the dashboard and Prometheus /metrics on this address, e.g. 127.0.0.1:8080, or :8080 for every interface (no authentication; empty = don't)")
	fs.StringVar(&cf.httpTokenFile, "http-token-file", "", "file holding a bearer token the dashboard asks of every request but /healthz (empty = none)")
	lf := addLogFlags(fs)
	if done, err := parseProcessFlags(fs, args, lf); done {
		return err
	}
	if err := cf.validate(); err != nil {
		return err
	}
	for _, a := range []struct{ flag, addr string }{{"gossip", *gossip}, {"grpc", *grpcAddr}} {
		if err := checkListenAddr(a.flag, a.addr); err != nil {
			return err
		}
	}
	var err error
	if cf.secret, err = rf.secret(); err != nil {
		return err
	}
	for _, a := range []struct{ flag, addr string }{{"--gossip", *gossip}, {"--grpc", *grpcAddr}, {"--http", cf.http}} {
		if a.addr != "" {
			if err := runauth.CheckBind(cf.secret, a.flag, a.addr); err != nil {
				return usagef("%w", err)
			}
		}
	}
	j, run, store, err := rf.open(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	watcher := newStatusPrinter(os.Stderr, j)
	defer watcher.captureLog()()
	c, err := startCoordinator(ctx, j, run, store, cf, *gossip, *grpcAddr, watcher.print)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(os.Stderr, "coordinator of run %s: trainers join %s\n", run, c.GossipAddr())
	if u := c.DashboardURL(); u != "" {
		fmt.Fprintf(os.Stderr, "dashboard: %s\n", u)
	}
	if err := c.Wait(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// SIGTERM or ^C is how an operator (or Kubernetes) stops a
			// coordinator: an orderly stop, not a failure. The run resumes
			// from its last checkpoint.
			slog.Info("coordinator stopped by signal; starting it again resumes the run", "run", run)
			return nil
		}
		return err
	}
	if cf.out == "" {
		return nil
	}
	fig := runFigures{Wall: time.Since(start), AllReduce: watcher.allReduce()}
	fig.measure(ctx, c)
	watcher.finish()
	return concludeRun(ctx, j, store, run, cf.out, fig, os.Stdout)
}

// startCoordinator starts the run's coordinator; with cf.http it serves
// the dashboard, whose samples plot is redrawn at every phase end.
func startCoordinator(ctx context.Context, j *job.Job, run string, store storage.Store, cf coordFlags,
	gossip, grpcAddr string, onProgress func(*api.RunStatus)) (*coordinator.Coordinator, error) {
	names := make([]string, j.Phases())
	for p := range names {
		names[p] = j.PhaseName(p)
	}
	opts := coordinator.Options{
		Run: run, ConfigHash: j.Hash, Version: version,
		Phases: j.Phases(), StepsPerPhase: j.StepsPerPhase(), Shards: j.Shards(),
		MinWorkers: cf.workers, CheckpointEvery: cf.checkpointEvery, Store: store,
		GossipAddr: gossip, GRPCAddr: grpcAddr, LeaseTTL: cf.leaseTTL, Logger: slog.Default(),
		OnProgress: onProgress, Method: j.Method(), PhaseNames: names, HTTPAddr: cf.http, Secret: cf.secret,
	}
	if cf.httpTokenFile != "" {
		b, err := os.ReadFile(cf.httpTokenFile)
		if err != nil {
			return nil, usagef("--http-token-file: %w", err)
		}
		if opts.DashboardToken = strings.TrimSpace(string(b)); opts.DashboardToken == "" {
			return nil, usagef("--http-token-file %s is empty", cf.httpTokenFile)
		}
	}
	var samples *liveSamples
	if cf.http != "" {
		var err error
		if samples, err = newLiveSamples(j, store, run); err != nil {
			return nil, err
		}
		opts.OnCommit = samples.onCommit
	}
	c, err := coordinator.Start(ctx, opts)
	if errors.Is(err, storage.ErrLeaseHeld) {
		return nil, fmt.Errorf("%w (another coordinator is running this run; stop it first, or start this one with another --run)", err)
	}
	if err != nil {
		return nil, err
	}
	if samples != nil {
		samples.dash.Store(c.Dashboard())
	}
	return c, nil
}

// runFigures are what the processes of a distributed run measured.
type runFigures struct {
	Wall time.Duration // the whole command
	// Train is from the first run plan to the end: samples/s counts it,
	// not process start-up; 0 means unknown (Wall is used).
	Train     time.Duration
	Workers   int
	AllReduce *float64 // mean share of step time in the all-reduce
	// From is where this command's training started (a resumed run
	// trained only the steps after it).
	From coordinator.Position
}

// measure reads the training start from the coordinator; call it when the
// run has just finished.
func (f *runFigures) measure(ctx context.Context, c *coordinator.Coordinator) {
	if first, from, err := c.FirstRun(ctx); err == nil && !first.IsZero() {
		f.Train, f.From = time.Since(first), from
	}
}

// concludeRun evaluates the finished run from its checkpoints as `sbtrain
// train` does and writes the same files.
func concludeRun(ctx context.Context, j *job.Job, store storage.Store, run, out string, fig runFigures, w io.Writer) error {
	ckpts, err := storage.NewCheckpoints(store, run, slog.Default())
	if err != nil {
		return err
	}
	outcome, id, err := j.Conclude(ctx, ckpts, job.RunFigures{Wall: fig.Wall, Train: fig.Train, Workers: fig.Workers,
		AllReduce: fig.AllReduce, From: job.Position{Phase: fig.From.Phase, Step: fig.From.Step}})
	if err != nil {
		return fmt.Errorf("run %s: %w", run, err)
	}
	if err := outcome.Write(out); err != nil {
		return err
	}
	printSummary(w, outcome.Metrics)
	fmt.Fprintf(w, "wrote %s/{%s,%s,%s,%s,%s,*.safetensors} from checkpoint %s\n", out, experiment.ConfigFile, experiment.MetricsFile,
		experiment.SamplesPlot, experiment.TrajectoriesPlot, experiment.LossPlot, id)
	return nil
}
