package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbtrain/sbtrain/internal/cpuset"
	"github.com/sbtrain/sbtrain/internal/runauth"
)

// benchmark is one named benchmark of `sbtrain bench NAME [flags]`.
type benchmark struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var benchmarks = map[string]*benchmark{}

func registerBenchmark(b *benchmark) {
	if _, dup := benchmarks[b.name]; dup {
		panic("sbtrain: benchmark registered twice: " + b.name)
	}
	benchmarks[b.name] = b
}

func init() {
	register(&command{name: "bench", summary: "run a named benchmark (sbtrain bench NAME --help)", run: runBench})
	registerBenchmark(&benchmark{name: "allreduce", summary: "ring all-reduce between local processes over TCP, nccl-tests style", run: runBenchAllReduce})
}

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		names := make([]string, 0, len(benchmarks))
		for n := range benchmarks {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		fmt.Fprintf(&b, "Usage: sbtrain bench NAME [flags]\n\nBenchmarks:\n")
		for _, n := range names {
			fmt.Fprintf(&b, "  %-12s %s\n", n, benchmarks[n].summary)
		}
		if len(args) == 0 {
			return usagef("%s", b.String())
		}
		fmt.Fprint(errOut, b.String())
		return nil
	}
	b, ok := benchmarks[args[0]]
	if !ok {
		return usagef("unknown benchmark %q (run sbtrain bench --help)", args[0])
	}
	return b.run(ctx, args[1:])
}

// parseSize reads "256MiB", "64KiB", "1GiB", "4096" or "1KB"-style sizes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mul := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64/mul {
		return 0, fmt.Errorf("size %q: want a non-negative integer with an optional unit (KiB, MiB, GiB)", s)
	}
	return v * mul, nil
}

// maxBenchBytes bounds every buffer a benchmark allocates; each worker
// holds one of the largest size.
const maxBenchBytes = 4 << 30

// parseSizeRange reads "MIN:MAX" into sizes doubling from MIN to MAX.
func parseSizeRange(s string) ([]int64, error) {
	lo, hi, ok := strings.Cut(s, ":")
	if !ok {
		hi = lo
	}
	a, err := parseSize(lo)
	if err != nil {
		return nil, err
	}
	b, err := parseSize(hi)
	if err != nil {
		return nil, err
	}
	if a < 4 || b < a || b > maxBenchBytes {
		return nil, fmt.Errorf("sizes %q: want MIN:MAX with 4 <= MIN <= MAX <= %s", s, formatSize(maxBenchBytes))
	}
	var out []int64
	for v := a; v <= b; v *= 2 {
		out = append(out, v&^3)
	}
	return out, nil
}

func formatSize(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", b)
}

// tcpLoopback measures single-stream TCP throughput over 127.0.0.1: one
// goroutine writes total bytes in 4 MiB writes, another reads them.
func tcpLoopback(ctx context.Context, total int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("tcp reference: %w", err)
	}
	defer ln.Close()
	deadline := time.Now().Add(2 * time.Minute)
	type result struct {
		n   int64
		end time.Time
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		buf := make([]byte, 4<<20)
		var n int64
		for n < total {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				got <- result{n, time.Now(), err}
				return
			}
		}
		got <- result{n, time.Now(), nil}
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("tcp reference: %w", err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	start := time.Now()
	for sent := int64(0); sent < total; {
		k := int(min(int64(len(buf)), total-sent))
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("tcp reference: write: %w", err)
		}
		sent += int64(k)
	}
	r := <-got
	if r.err != nil {
		return 0, fmt.Errorf("tcp reference: read after %d bytes: %w", r.n, r.err)
	}
	return float64(total) / r.end.Sub(start).Seconds() / 1e9, nil
}

// reference is the spread of several single-stream transfers.
type reference struct {
	median, lo, hi float64 // GB/s
	runs           int
}

func (r reference) String() string {
	if r.runs == 1 {
		return fmt.Sprintf("%.3f GB/s", r.median)
	}
	return fmt.Sprintf("%.3f GB/s, the median of %d transfers (min %.3f, max %.3f)", r.median, r.runs, r.lo, r.hi)
}

// tcpReference runs tcpLoopback runs times, back to back.
func tcpReference(ctx context.Context, total int64, runs int) (reference, error) {
	gbs := make([]float64, runs)
	for i := range gbs {
		v, err := tcpLoopback(ctx, total)
		if err != nil {
			return reference{}, err
		}
		gbs[i] = v
	}
	sort.Float64s(gbs)
	median := gbs[runs/2]
	if runs%2 == 0 {
		median = (gbs[runs/2-1] + gbs[runs/2]) / 2
	}
	return reference{median: median, lo: gbs[0], hi: gbs[runs-1], runs: runs}, nil
}

func runBenchAllReduce(ctx context.Context, args []string) error {
	fs := newFlagSet("bench allreduce", "[flags]")
	workers := fs.Int("workers", 2, "number of local worker processes (ring members)")
	sizes := fs.String("sizes", "1KiB:256MiB", "buffer sizes MIN:MAX in bytes, doubling")
	tcpBytes := fs.String("tcp-bytes", "256MiB", "bytes of each single-stream TCP loopback reference transfer")
	tcpRuns := fs.Int("tcp-runs", 5, "reference transfers before and after the sweep; the reference is their median, since one transfer's throughput swings widely on a shared machine")
	budget := fs.String("budget", "1GiB", "bytes reduced per size: iterations = budget/size, clamped to [min-iters, max-iters]")
	minIters := fs.Int("min-iters", 3, "fewest timed iterations per size")
	maxIters := fs.Int("max-iters", 500, "most timed iterations per size")
	segment := fs.String("segment", "1MiB", "pipelining segment size")
	deadline := fs.Duration("deadline", 30*time.Second, "peer silence deadline")
	checksum := fs.Bool("checksum", false, "add a CRC-32C to every payload")
	profile := fs.String("cpuprofile", "", "write worker i's CPU profile to `prefix`.i")
	procsPer := fs.Int("worker-procs", 0, "GOMAXPROCS of each worker; 0 means the number of CPUs it is bound to (unbound: CPUs/workers, at least 1), so that workers sharing cores do not spin against each other")
	bind := fs.Bool("bind", true, "bind worker i to its share of the CPUs (CPU i mod CPUs when workers outnumber them), as MPI launchers bind ranks to cores; false leaves placement to the scheduler")
	sockBuf := fs.String("sockbuf", "0", "SO_SNDBUF and SO_RCVBUF of ring links; 0 keeps the kernel's autotuning")
	auth := fs.Bool("auth", true, "authenticate the ring links with a run secret made for the benchmark, as trainers do")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	// The workers read the secret from the environment they inherit.
	if *auth {
		s, err := runauth.Generate()
		if err != nil {
			return err
		}
		os.Setenv(runauth.EnvVar, s.Reveal())
	} else {
		os.Unsetenv(runauth.EnvVar)
	}
	if *workers < 1 || *workers > 64 {
		return usagef("--workers %d: want 1..64", *workers)
	}
	szs, err := parseSizeRange(*sizes)
	if err != nil {
		return usagef("--sizes: %v", err)
	}
	tb, err := parseSize(*tcpBytes)
	if err != nil || tb <= 0 || tb > maxBenchBytes {
		return usagef("--tcp-bytes %q: want a positive size up to %s", *tcpBytes, formatSize(maxBenchBytes))
	}
	if *tcpRuns < 1 || *tcpRuns > 100 {
		return usagef("--tcp-runs %d: want 1..100", *tcpRuns)
	}
	bb, err := parseSize(*budget)
	if err != nil || bb <= 0 {
		return usagef("--budget %q: want a positive size", *budget)
	}
	seg, err := parseSize(*segment)
	if err != nil || seg < 4 || seg > 1<<30 {
		return usagef("--segment %q: want 4 bytes to 1GiB", *segment)
	}
	sb, err := parseSize(*sockBuf)
	if err != nil || sb > 1<<30 {
		return usagef("--sockbuf %q: want a size up to 1GiB", *sockBuf)
	}
	if *minIters < 1 || *maxIters < *minIters {
		return usagef("--min-iters %d --max-iters %d: want 1 <= min <= max", *minIters, *maxIters)
	}

	cpu0 := cpuTime()
	ref, err := tcpReference(ctx, tb, *tcpRuns)
	if err != nil {
		return err
	}
	refCPU := float64((cpuTime() - cpu0).Nanoseconds()) / float64(tb) / float64(*tcpRuns)
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	shares, err := cpuShares(*workers, *bind)
	if err != nil {
		return err
	}
	placement := "unbound"
	if *bind {
		var parts []string
		for _, s := range shares {
			parts = append(parts, cpuset.Format(s))
		}
		placement = "bound to CPUs " + strings.Join(parts, " | ")
	}
	maxProcs := make([]int, *workers)
	for i := range maxProcs {
		maxProcs[i] = childThreads(shares[i], *workers)
		if *procsPer > 0 {
			maxProcs[i] = *procsPer
		}
	}
	procsText := strconv.Itoa(maxProcs[0])
	if slices.Min(maxProcs) != slices.Max(maxProcs) {
		procsText = fmt.Sprint(maxProcs)
	}
	var plan []string
	for _, s := range szs {
		plan = append(plan, fmt.Sprintf("%d:%d", s, max(*minIters, min(*maxIters, int(bb/s)))))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	procs := make([]*benchWorker, *workers)
	for i := range procs {
		wargs := []string{allreduceWorkerName,
			"--rank", strconv.Itoa(i), "--workers", strconv.Itoa(*workers), "--plan", strings.Join(plan, ","),
			"--segment", strconv.FormatInt(seg, 10), "--deadline", deadline.String(), "--checksum=" + strconv.FormatBool(*checksum), "--sockbuf", strconv.FormatInt(sb, 10)}
		if *profile != "" {
			wargs = append(wargs, "--cpuprofile", fmt.Sprintf("%s.%d", *profile, i))
		}
		if shares[i] != nil {
			wargs = append(wargs, "--cpus", cpuset.Format(shares[i]))
		}
		p, err := startBenchWorker(ctx, self, wargs, maxProcs[i])
		if err != nil {
			return err
		}
		defer p.stop()
		procs[i] = p
	}
	addrs := make([]string, len(procs))
	for i, p := range procs {
		l, err := p.next("ADDR ", time.Minute)
		if err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
		addrs[i] = strings.TrimPrefix(l, "ADDR ")
	}
	for _, p := range procs {
		if _, err := fmt.Fprintf(p.stdin, "MEMBERS %s\n", strings.Join(addrs, ",")); err != nil {
			return fmt.Errorf("send members: %w", err)
		}
	}

	n := *workers
	factor := 2 * float64(n-1) / float64(n)
	fmt.Printf("# sbtrain bench allreduce: %d worker processes on 127.0.0.1 (GOMAXPROCS %s each, %d CPUs, %s), in-place sum of float32, segment %s, payload checksum %v, socket buffers %s, authenticated links %v\n",
		n, procsText, runtime.NumCPU(), placement, formatSize(seg), *checksum, map[bool]string{true: "autotuned", false: formatSize(sb)}[sb == 0], *auth)
	fmt.Printf("# TCP loopback reference: %s (one stream, unbound, %s in 4 MiB writes per transfer, same machine, same run)\n", ref, formatSize(tb))
	fmt.Printf("# busbw = algbw * 2(N-1)/N = algbw * %.3f\n", factor)
	fmt.Printf("# cpu(ns/B): CPU per worker per byte it sent; the reference used %.3f ns/B\n", refCPU)
	fmt.Printf("# TCPnow: one %s transfer just before the row, with the workers idle\n", formatSize(tb))
	fmt.Printf("#%11s %12s %12s %12s %12s %10s %8s %10s %10s %10s\n", "size(B)", "count", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "busbw/TCP", "#wrong", "cpu(ns/B)", "TCPnow", "bus/TCPnow")
	for _, s := range szs {
		// A reference next to each row: on a shared machine the baseline
		// moves during a sweep, and the first one alone can mislead.
		near, err := tcpLoopback(ctx, tb)
		if err != nil {
			return err
		}
		for _, p := range procs {
			if _, err := fmt.Fprintln(p.stdin, "GO"); err != nil {
				return fmt.Errorf("start size %d: %w", s, err)
			}
		}
		var worst, cpu time.Duration
		wrong := 0
		for i, p := range procs {
			l, err := p.next("RESULT ", 10*time.Minute)
			if err != nil {
				return fmt.Errorf("worker %d: %w", i, err)
			}
			var size int64
			var iters, w int
			var ns, cpuNs int64
			if _, err := fmt.Sscanf(l, "RESULT %d %d %d %d %d", &size, &iters, &ns, &w, &cpuNs); err != nil || size != s {
				return fmt.Errorf("worker %d: bad result line %q (want size %d)", i, l, s)
			}
			worst = max(worst, time.Duration(ns/int64(iters)))
			wrong += w
			cpu += time.Duration(cpuNs / int64(iters))
		}
		alg := float64(s) / worst.Seconds() / 1e9
		bus := alg * factor
		// cpu(ns/B): CPU of all workers per byte each one sent, against the
		// reference's CPU per byte moved; loopback copies make both CPU-bound.
		sent := float64(s) * max(factor, 1) // a one-member ring sends nothing; count the buffer once
		fmt.Printf("%12d %12d %12.1f %12.3f %12.3f %10.3f %8d %10.3f %10.3f %10.3f\n", s, s/4, float64(worst.Nanoseconds())/1e3, alg, bus, bus/ref.median, wrong, float64(cpu.Nanoseconds())/float64(n)/sent, near, bus/near)
	}
	for i, p := range procs {
		if _, err := p.next("DONE", time.Minute); err != nil {
			return fmt.Errorf("worker %d: %w", i, err)
		}
	}
	// The machine may be shared: a second reference shows how much the
	// baseline moved during the sweep.
	after, err := tcpReference(ctx, tb, *tcpRuns)
	if err != nil {
		return err
	}
	fmt.Printf("# TCP loopback reference after the sweep: %s\n", after)
	return nil
}

// benchWorker is one re-executed worker process and its output lines.
type benchWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	wg    sync.WaitGroup
}

func startBenchWorker(ctx context.Context, self string, args []string, gomaxprocs int) (*benchWorker, error) {
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", gomaxprocs))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &benchWorker{cmd: cmd, stdin: stdin, lines: make(chan string, 256)}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(w.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
	}()
	return w, nil
}

// next returns the next line starting with prefix; an ERROR line or the
// worker's exit is an error.
func (w *benchWorker) next(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				return "", errors.New("worker exited early")
			}
			if strings.HasPrefix(l, "ERROR ") {
				return "", errors.New(strings.TrimPrefix(l, "ERROR "))
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-t.C:
			return "", fmt.Errorf("no %q line within %v", strings.TrimSpace(prefix), timeout)
		}
	}
}

func (w *benchWorker) stop() {
	w.stdin.Close()
	done := make(chan struct{})
	go func() {
		w.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		w.cmd.Process.Kill()
		<-done
	}
	for range w.lines {
	}
	w.wg.Wait()
}
