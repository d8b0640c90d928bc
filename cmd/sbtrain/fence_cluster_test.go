package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/storage"
)

// cutProxy forwards TCP connections to a server until it is cut: then it
// drops every connection and refuses new ones, as a network partition
// between one process and its storage does, while others still reach it.
type cutProxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{lis: lis, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.lis.Addr().String() }

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// Split brain: the first `local` of a run loses its storage for longer
// than the lease TTL (a partition: a proxy between it and MinIO drops
// everything), and a second `local` of the run is started at once, with a
// clear path to storage. The first stops committing the moment its lease
// lapses, pauses its trainers, and once storage comes back finds the run
// taken and exits naming the new holder. The second resumes from the last
// committed checkpoint (without looping) and finishes with the bytes of
// the uninterrupted run; every manifest after the takeover is its own.
func TestClusterSplitBrain(t *testing.T) {
	skipUnderRace(t)
	base := baseline(t)
	endpoint := s3TestEnv(t)
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, u.Host)
	prefix := make([]byte, 6)
	crand.Read(prefix)
	storeURL := "s3://sbtrain-test/split-" + hex.EncodeToString(prefix)
	ctx := context.Background()
	store := openStore(t, storeURL, storage.Options{Endpoint: endpoint, PathStyle: true, CreateBucket: true})
	t.Cleanup(func() {
		objs, err := store.List(ctx, "")
		for _, o := range objs {
			if err == nil {
				err = store.Delete(ctx, o.Key)
			}
		}
		if err != nil {
			t.Logf("clean up %s: %v", storeURL, err)
		}
	})
	ckpts, err := storage.NewCheckpoints(store, clusterRun, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	outA, outB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	const ttl = "2s"
	a := startProc(t, "first local (through the proxy)", dir, localArgs(cfg, storeURL, outA, 3,
		"--s3-endpoint", "http://"+proxy.addr(), "--s3-path-style", "--lease-ttl", ttl)...)
	a.logDirs = []string{filepath.Join(outA, "logs")}

	// Let it commit a few checkpoints, then cut it off.
	deadline := time.Now().Add(procTimeout())
	for {
		l, err := ckpts.LoadLatest(ctx)
		if err == nil && l.Manifest.Seq >= 3 {
			t.Logf("first local committed %d checkpoints; cutting it off from storage", l.Manifest.Seq)
			break
		}
		if a.exited() || time.Now().After(deadline) {
			t.Fatalf("first local committed no 3 checkpoints (%v, exited %v)", err, a.exited())
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.setCut(true)
	cut := time.Now()
	_, lost := a.waitLine(0, 30*time.Second, "that it lost the lease", logged("lost the run's lease: committing nothing, pausing the trainers, trying to take it back"))
	lostAt := time.Now()
	t.Logf("first local lost its lease %s after the cut: %s", lostAt.Sub(cut).Round(time.Millisecond), lost.text)

	// A second local at once; then the first one's storage comes back.
	b := startProc(t, "second local", dir, localArgs(cfg, storeURL, outB, 3,
		"--s3-endpoint", endpoint, "--s3-path-style", "--lease-ttl", ttl)...)
	b.logDirs = []string{filepath.Join(outB, "logs")}
	_, started := b.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	holder := attrs(started)["grpc"]
	proxy.setCut(false)

	if err := a.wait(time.Minute); err == nil {
		t.Fatal("the first local exited 0 beside the second")
	}
	t.Logf("first local exited %s after storage came back, saying: %s", time.Since(lostAt).Round(time.Millisecond), lastLine(a.out.String()))
	if out := a.out.String(); !strings.Contains(out, "held by") || !strings.Contains(out, holder) {
		t.Errorf("the first local's output does not name the holder at %s:\n%s", holder, tail(out, 15))
	}
	// It leaves the run, unfinished, to the new holder, and says so.
	if !strings.Contains(a.out.String(), "the run is not finished: its new holder resumes from the last committed checkpoint") {
		t.Errorf("the first local does not say it leaves the run to its new holder:\n%s", tail(a.out.String(), 15))
	}
	b.waitOK(procTimeout())
	mustExist(t, filepath.Join(outB, "metrics.json"))
	// Exact whatever ring the second local ran: the sum's bytes do not
	// depend on who holds which shard.
	requireSameBytes(t, readFinal(t, store), base.state)

	// Exactly one committer after the takeover: every manifest of the
	// first coordinator's generation was created before its lease lapsed.
	entries, err := ckpts.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gens := map[uint64]int{}
	var newest uint64
	for _, e := range entries {
		if errors.Is(e.Err, storage.ErrFenced) {
			t.Errorf("checkpoint %s was written by a deposed coordinator: %v", e.ID, e.Err)
		}
		if e.Manifest == nil {
			continue
		}
		gens[e.Manifest.LeaseGeneration]++
		newest = max(newest, e.Manifest.LeaseGeneration)
	}
	for _, e := range entries {
		if m := e.Manifest; m != nil && m.LeaseGeneration < newest {
			created, err := time.Parse(time.RFC3339Nano, m.Created)
			if err != nil || created.After(lostAt) {
				t.Errorf("checkpoint %s of the first coordinator created %s, after it lost its lease at %s", e.ID, m.Created, lostAt.UTC().Format(time.RFC3339Nano))
			}
		}
	}
	// GC has usually removed the first coordinator's few periodic ones.
	t.Logf("manifests kept per lease generation: %v", gens)
	if strings.Count(b.out.String(), "the latest verified checkpoint is") > 0 {
		t.Error("the second local looped on loading a checkpoint")
	}

	// Bounded logs: the outage is a line or two, not one per try.
	var total int64
	for _, p := range []*proc{a, b} {
		n := int64(len(p.out.String()))
		for _, d := range p.logDirs {
			files, _ := filepath.Glob(filepath.Join(d, "*.log"))
			for _, f := range files {
				body, err := os.ReadFile(f)
				if err != nil {
					continue
				}
				n += int64(len(body))
				if k := strings.Count(string(body), "storage failing"); k > 3 {
					t.Errorf("%s: %d lines about the outage, want one per outage and kind", f, k)
				}
			}
		}
		t.Logf("%s: %d bytes of logs", p.name, n)
		total += n
	}
	if total > 1<<20 {
		t.Errorf("%d bytes of logs in all, want under 1 MiB", total)
	}
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// A trainer SIGSTOPped past the ring deadline and then SIGCONTed timed
// its peers out, not they it: when its own collective fails on waking it
// blames no peer (it used to name a healthy neighbour as the suspect).
// The run goes on without it and finishes.
func TestClusterStoppedTrainerBlamesNoPeer(t *testing.T) {
	skipUnderRace(t)
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	storeURL := "file://" + storeDir
	gossip := freeAddr(t)
	coord := startProc(t, "coordinator", dir, coordinatorArgs(cfg, storeURL, gossip, out, 3)...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	trainers := map[string]*proc{}
	for _, id := range []string{"trainer-0", "trainer-1", "trainer-2"} {
		trainers[id] = startProc(t, id, dir, append(trainerArgs(cfg, storeURL, gossip, id), "--ring-deadline", "2s")...)
	}
	waitLatest(t, coord, storeDir, time.Minute, func(storage.ID) bool { return true })
	stopped := trainers["trainer-1"]
	if err := syscall.Kill(stopped.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	coord.waitLine(0, 30*time.Second, "trainer-1's departure", logged("member left", "id", "trainer-1"))
	time.Sleep(4 * time.Second) // twice the ring deadline
	from := len(strings.Split(stopped.out.String(), "\n")) - 1
	if err := syscall.Kill(stopped.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := time.Now()
	coord.waitOK(procTimeout())
	lines, _ := stopped.out.since(from)
	for _, ln := range lines {
		if logged("generation failed")(ln) && ln.at.Sub(woke) < 5*time.Second {
			t.Errorf("trainer-1, woken from SIGSTOP, blames a peer: %s", ln.text)
		}
		if logged("generation failed while this trainer was stalled; blaming no peer")(ln) {
			t.Logf("trainer-1 on waking: %s", ln.text)
		}
	}
}
