package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/internal/cpuset"
	"github.com/sbtrain/sbtrain/internal/launch"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

func init() {
	register(&command{name: "local", summary: "run a coordinator and N trainer processes on 127.0.0.1; running it again resumes the run", run: runLocal})
}

func runLocal(ctx context.Context, args []string) error {
	fs := newFlagSet("local", "[--config FILE] [--workers N] [--store URL] [--out DIR] [flags]")
	rf := addRunFlags(fs, "file://./runs")
	var cf coordFlags
	fs.IntVar(&cf.workers, "workers", 2, "trainer processes to start")
	fs.Int64Var(&cf.checkpointEvery, "checkpoint-every", 100, "checkpoint every N steps as well as at every phase end (0 = phase ends only)")
	fs.DurationVar(&cf.leaseTTL, "lease-ttl", 10*time.Second, "how long the run's lease outlives a coordinator that stopped renewing it")
	fs.StringVar(&cf.out, "out", "", "directory for metrics.json, plots and networks (default runs/<run>)")
	deadline := fs.Duration("ring-deadline", 10*time.Second, "trainers' longest wait on a silent peer inside a collective")
	skew := fs.Duration("ring-skew-limit", 10*time.Minute, "trainers' longest wait on a live peer that has not reached a collective yet")
	logDir := fs.String("logs", "", "directory for the trainers' logs (default <out>/logs)")
	outage := fs.Duration("store-outage", time.Minute, "how long trainer rank 0 retries a checkpoint that storage refuses before the run pauses until storage answers")
	crash := fs.Int("crash-after-blobs", 0, "fault injection for tests: trainer rank 0 SIGKILLs the whole run (its process group) after writing the blobs of its n-th checkpoint, before the commit")
	quiet := fs.Bool("quiet", false, "print only the dashboard's address and the final summary")
	bind := fs.Bool("bind", true, "bind trainer i to its share of the CPUs (CPU i mod CPUs when trainers outnumber them), so the scheduler stops moving them between cores; false leaves placement to the scheduler")
	fs.StringVar(&cf.http, "http", "127.0.0.1:0", "serve the dashboard and Prometheus /metrics on this address; port 0 picks a free one (empty = don't)")
	cpus := fs.String("cpus", "", "run the coordinator and every trainer on these CPUs, a list like 0-3,6 (--bind splits them among the trainers); empty uses every CPU this process may run on")
	lf := addLogFlags(fs)
	if done, err := parseProcessFlags(fs, args, lf); done {
		return err
	}
	// Before anything else starts: the trainers inherit the binding, and
	// --bind splits the CPUs it leaves.
	if err := bindCPUs(*cpus); err != nil {
		return err
	}
	if err := cf.validate(); err != nil {
		return err
	}
	if cf.workers > 64 {
		return usagef("--workers %d: local runs at most 64 trainers", cf.workers)
	}
	if *outage <= 0 {
		return usagef("--store-outage %s: want a positive duration", *outage)
	}
	if *skew <= 0 {
		return usagef("--ring-skew-limit %s: want a positive duration", *skew)
	}
	j, run, store, err := rf.open(ctx)
	if err != nil {
		return err
	}
	// Even on loopback the run authenticates its channels: other users'
	// processes on the machine can reach its ports too.
	if cf.secret, err = rf.secret(); err != nil {
		return err
	}
	if cf.secret == nil {
		if cf.secret, err = runauth.Generate(); err != nil {
			return err
		}
	}
	if cf.out == "" {
		cf.out = filepath.Join("runs", run)
	}
	if *logDir == "" {
		*logDir = filepath.Join(cf.out, "logs")
	}
	start := time.Now()
	var progressOut io.Writer = os.Stderr
	if *quiet {
		progressOut = nil
	}
	watcher := newStatusPrinter(progressOut, j)
	defer watcher.captureLog()()
	c, err := startCoordinator(ctx, j, run, store, cf, "127.0.0.1:0", "127.0.0.1:0", watcher.print)
	if err != nil {
		return err
	}
	defer c.Close()
	// Only now that the run is ours: a refused second `local` leaves
	// nothing behind.
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return fmt.Errorf("trainer logs: %w", err)
	}
	if u := c.DashboardURL(); u != "" {
		fmt.Fprintf(os.Stderr, "dashboard: %s\n", u)
	}
	slog.Info("local run", "run", run, "workers", cf.workers, "store", rf.store.url, "blas", nn.BLAS(),
		"trainer_logs", *logDir)

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary to start trainers: %w", err)
	}
	shares, err := cpuShares(cf.workers, *bind)
	if err != nil {
		return err
	}
	tctx, stopTrainers := context.WithCancel(ctx)
	trainers := launch.NewGroup(cf.workers)
	// Stop the trainers before waiting for them: a coordinator that must
	// stop (it lost the run's lease) leaves while they still train.
	defer func() { stopTrainers(); trainers.Wait() }()
	for i := 0; i < cf.workers; i++ {
		targs := []string{"trainer", "--join", c.GossipAddr(), "--id", fmt.Sprintf("trainer-%d", i),
			"--run", run, "--store", rf.store.url, "--ring-deadline", deadline.String(), "--ring-skew-limit", skew.String(), "--coordinator-timeout", "20s",
			"--store-outage", outage.String()}
		targs = append(targs, rf.store.childFlags()...)
		targs = append(targs, lf.childFlags()...)
		if rf.config != "" {
			abs, err := filepath.Abs(rf.config)
			if err != nil {
				return err
			}
			targs = append(targs, "--config", abs)
		}
		if *crash > 0 {
			targs = append(targs, "--crash-after-blobs", fmt.Sprint(*crash))
		}
		if shares[i] != nil {
			targs = append(targs, "--cpus", cpuset.Format(shares[i]))
		}
		logPath := filepath.Join(*logDir, fmt.Sprintf("trainer-%d.log", i))
		env := append(rf.store.childEnv(), runauth.EnvVar+"="+cf.secret.Reveal())
		if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
			// N trainers on one machine: BLAS threads beyond the cores
			// would only contend.
			env = append(env, fmt.Sprintf("OPENBLAS_NUM_THREADS=%d", childThreads(shares[i], cf.workers)))
		}
		if err := trainers.Start(tctx, fmt.Sprintf("trainer-%d", i), exe, targs, env, logPath); err != nil {
			return err
		}
	}
	exited := trainers.Exited()

	running := cf.workers
	var lastExit launch.Exit
	for {
		waitCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Wait(waitCtx) }()
		select {
		case err := <-done:
			cancel()
			if errors.Is(err, coordinator.ErrDeposed) {
				stopTrainers()
				leaveOutputs(ctx, j, store, run, cf.out, runFigures{Wall: time.Since(start), Workers: cf.workers, AllReduce: watcher.allReduce()}, c.Coordinator)
			}
			if err != nil {
				return err
			}
			return finishLocal(ctx, j, run, cf, start, c.Coordinator, watcher, exited, &running, store)
		case ex := <-exited:
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				return err // the coordinator failed as the trainer left
			}
			running--
			lastExit = ex
			if ex.Err != nil {
				slog.Warn("trainer exited", "trainer", ex.ID, "err", ex.Err, "log", ex.Log)
			}
			if running == 0 {
				// The last trainer may have left because the run just
				// finished, a moment before the coordinator says so; past
				// that moment nobody is left to train, and waiting longer
				// would wait for ever.
				wctx, cancelWait := context.WithTimeout(ctx, 3*time.Second)
				err := c.Wait(wctx)
				cancelWait()
				if err == nil {
					return finishLocal(ctx, j, run, cf, start, c.Coordinator, watcher, exited, &running, store)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				why := "exited"
				if lastExit.Err != nil {
					why = lastExit.Err.Error()
				}
				return fmt.Errorf("no trainer is left: all %d exited before the run finished (the last, %s: %s); see the logs in %s",
					cf.workers, lastExit.ID, why, *logDir)
			}
		}
	}
}

// finishLocal waits briefly for the trainers to leave after FINISH, then
// writes the run's results.
func finishLocal(ctx context.Context, j *job.Job, run string, cf coordFlags, start time.Time,
	c *coordinator.Coordinator, printer *statusPrinter, exited <-chan launch.Exit, running *int, store storage.Store) error {
	fig := runFigures{Wall: time.Since(start), Workers: cf.workers}
	fig.measure(ctx, c)
	fig.AllReduce = printer.allReduce()
	timeout := time.After(10 * time.Second)
	for *running > 0 {
		select {
		case ex := <-exited:
			*running--
			if ex.Err != nil {
				slog.Warn("trainer exited", "trainer", ex.ID, "err", ex.Err, "log", ex.Log)
			}
		case <-timeout:
			slog.Warn("trainers still running 10s after the run finished; stopping them", "running", *running)
			*running = 0
		}
	}
	c.Close()
	printer.finish()
	return concludeRun(ctx, j, store, run, cf.out, fig, os.Stdout, "")
}

// statusPrinter prints the run's progress: on a terminal as a bar per
// phase, redrawn at most every barEvery; elsewhere as a line at most every
// plainEvery. Both print at every phase change.
type statusPrinter struct {
	out       *progressLine // nil: no progress, only the all-reduce share
	j         *job.Job
	start     time.Time
	last      time.Time
	lastPhase int32
	first     *api.Position
	mu        sync.Mutex
	// Running mean of the members' all-reduce share over every report.
	fracSum float64
	fracN   int
}

// allReduce is the mean share of step time the trainers spent in the
// all-reduce, nil before any report.
func (p *statusPrinter) allReduce() *float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fracN == 0 {
		return nil
	}
	f := p.fracSum / float64(p.fracN)
	return &f
}

func newStatusPrinter(w io.Writer, j *job.Job) *statusPrinter {
	return &statusPrinter{out: newProgressLine(w), j: j, start: time.Now(), lastPhase: -1}
}

func (p *statusPrinter) print(st *api.RunStatus) {
	if len(st.Members) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range st.Members {
		if m.SamplesPerSec > 0 {
			p.fracSum += m.AllreduceFraction
			p.fracN++
		}
	}
	if p.out == nil {
		return
	}
	lead := st.Members[0]
	for _, m := range st.Members {
		if lead.GetPosition().Less(m.GetPosition()) {
			lead = m
		}
	}
	pos := lead.GetPosition()
	now := time.Now()
	if pos.GetPhase() == p.lastPhase && now.Sub(p.last) < p.out.every() {
		return
	}
	p.last, p.lastPhase = now, pos.GetPhase()
	if p.first == nil {
		p.first = pos
	}
	var rate, frac float64
	for _, m := range st.Members {
		frac += m.AllreduceFraction / float64(len(st.Members))
	}
	rate = lead.SamplesPerSec
	steps := p.j.StepsPerPhase()
	done := int64(pos.GetPhase())*steps + pos.GetStep()
	startDone := int64(p.first.GetPhase())*steps + p.first.GetStep()
	left := int64(p.j.Phases())*steps - done
	eta := "?"
	if d := done - startDone; d > 0 {
		eta = (time.Duration(float64(left) * float64(now.Sub(p.start)) / float64(d))).Round(time.Second).String()
	}
	u := progressUpdate{phase: int(pos.GetPhase()), step: pos.GetStep(), total: steps,
		rest: []string{fmt.Sprintf("loss %.4g", lead.Loss), fmt.Sprintf("%.0f samples/s", rate),
			fmt.Sprintf("%d workers", len(st.Members)), fmt.Sprintf("all-reduce %.0f%%", 100*frac),
			fmt.Sprintf("gen %d", st.Generation%(1<<20)), "elapsed " + now.Sub(p.start).Round(time.Second).String(), "ETA " + eta}}
	if p.out.tty && u.step == 0 && u.phase > 0 {
		// {p+1, 0} is the end of phase p: its bar full, not a new empty
		// one (the plain line keeps the position as it is).
		u.phase, u.step = u.phase-1, steps
	}
	u.label = p.phaseLabel(u.phase)
	p.out.print(u)
}

// phaseLabel is "name i/n" of a phase index, "done n/n" past the last.
func (p *statusPrinter) phaseLabel(phase int) string {
	name := "done"
	if phase < p.j.Phases() {
		name = p.j.PhaseName(phase)
	}
	return fmt.Sprintf("%s %d/%d", name, min(phase+1, p.j.Phases()), p.j.Phases())
}

// finish ends the progress bar's line (see progressLine.finish).
func (p *statusPrinter) finish() { p.out.finish() }

// captureLog routes log lines around the progress bar (see
// progressLine.captureLog).
func (p *statusPrinter) captureLog() func() { return p.out.captureLog() }
