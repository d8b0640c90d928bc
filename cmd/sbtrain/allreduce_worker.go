package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/internal/runauth"
)

// allreduceWorkerName is the hidden subcommand `sbtrain bench allreduce`
// re-executes as each ring member.
const allreduceWorkerName = "allreduce-worker"

func init() {
	register(&command{name: allreduceWorkerName, hidden: true, summary: "ring member process of sbtrain bench allreduce", run: runAllReduceWorker})
}

// runAllReduceWorker speaks a line protocol with its parent:
//
//	out: ADDR <listen address>
//	in:  MEMBERS <addr0>,<addr1>,...
//	in:  GO                       before each planned size
//	out: RESULT <bytes> <iterations> <total ns> <#wrong> <process CPU ns>   per planned size
//	out: DONE
//	out: ERROR <message>   on failure
func runAllReduceWorker(ctx context.Context, args []string) error {
	fs := newFlagSet(allreduceWorkerName, "[flags]")
	rank := fs.Int("rank", 0, "this member's rank")
	workers := fs.Int("workers", 1, "ring size")
	planFlag := fs.String("plan", "", "comma-separated BYTES:ITERATIONS")
	segment := fs.Int("segment", 1<<20, "segment bytes")
	deadline := fs.Duration("deadline", 30*time.Second, "peer silence deadline")
	checksum := fs.Bool("checksum", false, "add a CRC-32C to every payload")
	sockBuf := fs.Int("sockbuf", 0, "SO_SNDBUF and SO_RCVBUF bytes; 0 keeps the kernel's autotuning")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this worker to `file`")
	cpus := addCPUsFlag(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if err := bindCPUs(*cpus); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	err := allReduceWorker(ctx, *rank, *workers, *planFlag, *segment, *deadline, *checksum, *sockBuf)
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
	}
	return err
}

type planStep struct {
	bytes int64
	iters int
}

func parsePlan(s string) ([]planStep, error) {
	var plan []planStep
	for _, item := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(item, ":")
		size, err1 := strconv.ParseInt(a, 10, 64)
		iters, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || size < 0 || size%4 != 0 || iters < 1 {
			return nil, usagef("--plan item %q: want BYTES:ITERATIONS with BYTES a multiple of 4", item)
		}
		plan = append(plan, planStep{size, iters})
	}
	return plan, nil
}

func allReduceWorker(ctx context.Context, rank, workers int, planFlag string, segment int, deadline time.Duration, checksum bool, sockBuf int) error {
	if workers < 1 || rank < 0 || rank >= workers {
		return usagef("--rank %d --workers %d: want 0 <= rank < workers", rank, workers)
	}
	plan, err := parsePlan(planFlag)
	if err != nil {
		return err
	}
	secret, err := runauth.Load("")
	if err != nil {
		return err
	}
	lopts := allreduce.ListenOptions{HandshakeTimeout: deadline}
	if secret != nil {
		lopts.Key = secret.RingKey()
	}
	ep, err := allreduce.ListenWith(allreduce.TCP{ReadBuffer: sockBuf, WriteBuffer: sockBuf}, "127.0.0.1:0", lopts)
	if err != nil {
		return err
	}
	defer ep.Close()
	fmt.Printf("ADDR %s\n", ep.Addr())

	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return fmt.Errorf("read members from parent: %v", in.Err())
	}
	line, ok := strings.CutPrefix(in.Text(), "MEMBERS ")
	addrs := strings.Split(line, ",")
	if !ok || len(addrs) != workers {
		return fmt.Errorf("members line %q: want MEMBERS and %d addresses", in.Text(), workers)
	}
	members := make([]allreduce.Member, workers)
	for i, a := range addrs {
		members[i] = allreduce.Member{ID: fmt.Sprintf("worker-%d", i), Addr: a}
	}
	ring, err := allreduce.NewRing(ctx, allreduce.Config{Run: "bench", Rank: rank, Members: members, Generation: 1,
		Deadline: deadline, SegmentBytes: segment, PayloadChecksum: checksum, Endpoint: ep})
	if err != nil {
		return err
	}
	defer ring.Close()

	var largest int64
	for _, p := range plan {
		largest = max(largest, p.bytes)
	}
	all := make([]float32, largest/4)
	for _, p := range plan {
		// The parent measures its TCP reference between sizes, while the
		// workers wait here, so each row has a baseline taken next to it.
		if !in.Scan() || in.Text() != "GO" {
			return fmt.Errorf("wait for GO from parent: got %q, %v", in.Text(), in.Err())
		}
		buf := all[:p.bytes/4]
		// Small integers sum exactly in float32, so a correct result is
		// known exactly: element i holds Σ_r (i+r) mod 64.
		for i := range buf {
			buf[i] = float32((i + rank) % 64)
		}
		if err := ring.AllReduceSum(ctx, buf); err != nil {
			return err
		}
		wrong := 0
		for i, v := range buf {
			var want float32
			for r := range workers {
				want += float32((i + r) % 64)
			}
			if v != want {
				wrong++
			}
		}
		if err := ring.Barrier(ctx); err != nil {
			return err
		}
		cpu0 := cpuTime()
		start := time.Now()
		for range p.iters {
			if err := ring.AllReduceSum(ctx, buf); err != nil {
				return err
			}
		}
		el := time.Since(start)
		fmt.Printf("RESULT %d %d %d %d %d\n", p.bytes, p.iters, el.Nanoseconds(), wrong, (cpuTime() - cpu0).Nanoseconds())
	}
	if err := ring.Barrier(ctx); err != nil {
		return err
	}
	fmt.Println("DONE")
	return nil
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPUProfile profiles the process into path until the returned stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
