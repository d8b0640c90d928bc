package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
	"github.com/sbtrain/sbtrain/trainer"
)

func init() {
	register(&command{name: "trainer", summary: "join a run's coordinator and train: gradients, ring all-reduce, checkpoint blobs", run: runTrainer})
}

// runFlags are the flags every process of a distributed run shares.
type runFlags struct {
	config     string
	run        string
	store      *storeFlags
	secretFile string
}

func addRunFlags(fs *flag.FlagSet, defaultStore string) *runFlags {
	f := &runFlags{}
	fs.StringVar(&f.config, "config", "", "run config (YAML); empty uses the embedded default (see 'sbtrain config')")
	fs.StringVar(&f.run, "run", "", "run ID in the store (default: the config's name)")
	f.store = addStoreFlags(fs)
	fs.StringVar(&f.secretFile, "secret-file", "", "file holding the run secret that authenticates every channel of the run (default: the "+runauth.EnvVar+" environment variable; with neither, every address must be on loopback)")
	if defaultStore != "" {
		fs.Lookup("store").DefValue = defaultStore
		f.store.url = defaultStore
		fs.Lookup("store").Usage = "store URL: s3://bucket/prefix, file:///dir or file://./relative/dir"
	}
	return f
}

// open reads the config, builds the job, resolves the run ID and opens
// the store.
func (f *runFlags) open(ctx context.Context) (*job.Job, string, storage.Store, error) {
	setup, err := loadSetup(f.config)
	if err != nil {
		return nil, "", nil, err
	}
	j, err := job.New(setup.Config)
	if err != nil {
		return nil, "", nil, usagef("config %s: %w", f.config, err)
	}
	run := f.run
	if run == "" {
		run = setup.Config.Name
	}
	if err := storage.ValidateRunID(run); err != nil {
		return nil, "", nil, usagef("--run: %v", err)
	}
	store, err := f.store.open(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	return j, run, store, nil
}

// secret reads the run secret from --secret-file or the environment; nil
// when the run has none.
func (f *runFlags) secret() (*runauth.Secret, error) {
	s, err := runauth.Load(f.secretFile)
	if err != nil {
		return nil, usagef("--secret-file: %w", err)
	}
	return s, nil
}

// absStoreURL turns file://./dir (relative to the working directory) into
// the absolute file:// URL the store wants, so child processes and logs
// see one unambiguous location.
func absStoreURL(u string) (string, error) {
	rest, ok := strings.CutPrefix(u, "file://")
	// Only ./ and ../ mark a relative path: file://host/dir stays the
	// error the store gives it.
	if !ok || !(rest == "." || rest == ".." || strings.HasPrefix(rest, "./") || strings.HasPrefix(rest, "../")) {
		return u, nil
	}
	abs, err := filepath.Abs(rest)
	if err != nil {
		return "", usagef("--store %q: %v", u, err)
	}
	return "file://" + filepath.ToSlash(abs), nil
}

func runTrainer(ctx context.Context, args []string) error {
	fs := newFlagSet("trainer", "--join HOST:PORT [--config FILE] [--store URL] [flags]")
	rf := addRunFlags(fs, "file://./runs")
	join := fs.String("join", "", "the coordinator's gossip address host:port (required)")
	host, _ := os.Hostname()
	id := fs.String("id", fmt.Sprintf("%s-%d", host, os.Getpid()), "trainer ID, unique in the run (ring order sorts by it)")
	bind := fs.String("host", "127.0.0.1", "IP address to bind the gossip and ring ports on; peers reach this trainer there (in a pod: the pod IP)")
	gossipPort := fs.Int("gossip-port", 0, "gossip port, TCP and UDP (0 = any free port)")
	ringPort := fs.Int("ring-port", 0, "all-reduce ring port (0 = any free port)")
	deadline := fs.Duration("ring-deadline", 10*time.Second, "longest wait on a silent peer inside a collective before blaming it")
	skew := fs.Duration("ring-skew-limit", 10*time.Minute, "longest wait on a live peer that has not reached a collective yet (still simulating its shards of a cache, say) before blaming it")
	coordTimeout := fs.Duration("coordinator-timeout", 60*time.Second, "how long to look for a coordinator (at start and after losing it) before giving up")
	crash := fs.Int("crash-after-blobs", 0, "fault injection for tests: as rank 0, SIGKILL this process group after writing the blobs of its n-th checkpoint, before the commit (0 = never)")
	outage := fs.Duration("store-outage", time.Minute, "as rank 0, how long to retry a checkpoint that storage refuses before asking the coordinator to pause the run")
	cpus := addCPUsFlag(fs)
	lf := addLogFlags(fs)
	if done, err := parseProcessFlags(fs, args, lf); done {
		return err
	}
	if err := bindCPUs(*cpus); err != nil {
		return err
	}
	if *join == "" {
		return usagef("--join is required: the coordinator's gossip address, e.g. 127.0.0.1:7946")
	}
	if _, port, err := net.SplitHostPort(*join); err != nil || port == "" {
		return usagef("--join %q: want host:port", *join)
	}
	if net.ParseIP(*bind) == nil {
		return usagef("--host %q: want an IP address", *bind)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"gossip-port", *gossipPort}, {"ring-port", *ringPort}} {
		if p.v < 0 || p.v > 65535 {
			return usagef("--%s %d: want 0 (any free port) to 65535", p.name, p.v)
		}
	}
	if *gossipPort != 0 && *gossipPort == *ringPort {
		return usagef("--gossip-port and --ring-port are both %d: they need one each", *gossipPort)
	}
	if *deadline <= 0 || *skew <= 0 || *coordTimeout <= 0 || *outage <= 0 {
		return usagef("--ring-deadline, --ring-skew-limit, --coordinator-timeout and --store-outage must be positive")
	}
	secret, err := rf.secret()
	if err != nil {
		return err
	}
	if err := runauth.CheckBind(secret, "--host", net.JoinHostPort(*bind, "0")); err != nil {
		return usagef("%w", err)
	}
	j, run, store, err := rf.open(ctx)
	if err != nil {
		return err
	}
	err = trainer.Run(ctx, trainer.Options{Secret: secret,
		ID: *id, Run: run, Job: j, Store: store, Version: version, Join: *join, Host: *bind,
		GossipPort: *gossipPort, RingPort: *ringPort,
		RingDeadline: *deadline, RingSkewLimit: *skew, CoordinatorTimeout: *coordTimeout, CrashAfterBlobs: *crash,
		StoreOutage: *outage, ConfigFields: j.Setup.Config.FieldDigests(),
	})
	if err != nil && ctx.Err() != nil {
		// SIGTERM is how Kubernetes (and `sbtrain local`) stops a trainer:
		// an orderly stop, as for the coordinator, whichever call the
		// signal cut short (a gRPC call ends in a status error that does
		// not wrap ctx's). Its peers re-plan without it.
		slog.Info("trainer stopped by signal", "trainer", *id, "run", run)
		return nil
	}
	return err
}
