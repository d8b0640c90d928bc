package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/storage"
)

// These tests run the distributed trainer as real processes on 127.0.0.1:
// `sbtrain local`, or a coordinator and trainers started one by one, which
// the tests kill, restart and join at chosen moments. Each process is this
// test binary acting as sbtrain (see TestMain). They are the cases that
// need processes: SIGKILL of a whole run or of its coordinator (the lease
// left held), Pdeathsig, S3. Membership changes, partitions and the other
// faults are tested in one process by internal/clustertest, which asserts
// on the coordinator's status and the checkpoints rather than on logs.

// The same run on 1 and on 3 trainers ends in the same bytes: each
// shard's gradient is computed on its own and the sum is exact in fixed
// point, whoever owns the shards.
func TestClusterWorkerCountInvariance(t *testing.T) {
	skipUnderRace(t)
	for _, method := range []string{"dsb", "dsbm"} {
		t.Run(method, func(t *testing.T) {
			base := baselineFor(t, method)
			dir := t.TempDir()
			storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
			p := startProc(t, "local --workers 1", dir, localArgs(writeMethodConfig(t, method, 3), "file://"+storeDir, out, 1)...)
			p.logDirs = []string{filepath.Join(out, "logs")}
			p.waitOK(procTimeout())
			mustExist(t, filepath.Join(out, "metrics.json"), filepath.Join(out, "samples.png"))
			one := readFinal(t, openStore(t, "file://"+storeDir, storage.Options{}))
			requireSameBytes(t, one, base.state)
		})
	}
}

// A run SIGKILLed (every process of it) at a random moment and started
// again, on 2 trainers instead of 3, ends exactly where the uninterrupted
// run ends.
func TestClusterExactResumeAfterKill(t *testing.T) {
	skipUnderRace(t)
	for _, method := range []string{"dsb", "dsbm"} {
		t.Run(method, func(t *testing.T) { exactResumeAfterKill(t, method) })
	}
}

func exactResumeAfterKill(t *testing.T, method string) {
	base := baselineFor(t, method)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SBTRAIN_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SBTRAIN_TEST_SEED=%q: %v", s, err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	// Up to 40% of the uninterrupted run's time after the first commit,
	// which is well before the end (start-up and evaluation count in that
	// time too); should this run be much faster than that one, the kill
	// comes at the latest with the commit of phase 2's end, a quarter of
	// the run before its end.
	delay := time.Duration(rng.Int64N(int64(base.wall) * 4 / 10))
	lastSeq := int64(3 * 12) // 12 checkpoints a phase
	t.Logf("seed %d (SBTRAIN_TEST_SEED repeats it): SIGKILL %s after the first checkpoint commit", seed, delay.Round(time.Microsecond))

	dir := t.TempDir()
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	args := localArgs(writeMethodConfig(t, method, 3), "file://"+storeDir, out, 3)
	p := startProc(t, "local --workers 3 (killed)", dir, args...)
	p.logDirs = []string{filepath.Join(out, "logs")}
	waitLatest(t, p, storeDir, procTimeout(), func(storage.ID) bool { return true })
	first := time.Now()
	id := waitLatest(t, p, storeDir, time.Minute, func(id storage.ID) bool { return time.Since(first) >= delay || id.Seq >= lastSeq })
	p.kill()
	t.Logf("killed the run %s after its first commit, with checkpoint %s the latest", time.Since(first).Round(time.Millisecond), id)
	if err := p.wait(15 * time.Second); err == nil {
		t.Fatalf("the run finished before the kill %s after its first commit", delay)
	}
	for d, files := range ckptDirs(t, storeDir) {
		if strings.HasSuffix(d, finalCkptSuffix()) && slices.Contains(files, "MANIFEST.json") {
			t.Fatalf("the run was finished when killed (checkpoint %s is committed): nothing left to resume", d)
		}
	}

	again := startProc(t, "local --workers 2 (resumed)", dir, localArgs(writeMethodConfig(t, method, 3), "file://"+storeDir, out, 2)...)
	again.logDirs = p.logDirs
	again.waitOK(procTimeout())
	mustExist(t, filepath.Join(out, "metrics.json"))
	requireSameBytes(t, readFinal(t, openStore(t, "file://"+storeDir, storage.Options{})), base.state)
}

// A run killed between a checkpoint's blobs and its commit resumes from the
// checkpoint before, not the abandoned one, and ends exactly where the
// uninterrupted run ends.
func TestClusterKillDuringCheckpointWrite(t *testing.T) {
	skipUnderRace(t)
	base := baseline(t)
	dir := t.TempDir()
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	args := localArgs(writeClusterConfig(t, 3), "file://"+storeDir, out, 3)
	crash := startProc(t, "local --crash-after-blobs 3", dir, append(slices.Clone(args), "--crash-after-blobs", "3")...)
	crash.logDirs = []string{filepath.Join(out, "logs")}
	if err := crash.wait(procTimeout()); err == nil {
		t.Fatal("local --crash-after-blobs 3 exited 0; want it killed")
	}
	var abandoned string
	for d, files := range ckptDirs(t, storeDir) {
		if slices.Contains(files, "state.safetensors") && !slices.Contains(files, "MANIFEST.json") {
			if abandoned != "" {
				t.Fatalf("two uncommitted checkpoints, %s and %s; want one", abandoned, d)
			}
			abandoned = d
		}
	}
	if abandoned == "" {
		t.Fatalf("no checkpoint with blobs and no manifest after the crash: %v", ckptDirs(t, storeDir))
	}
	abandonedID, err := storage.ParseID(abandoned)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("abandoned checkpoint %s", abandoned)

	again := startProc(t, "local (resumed)", dir, args...)
	again.logDirs = crash.logDirs
	_, started := again.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	used := attrs(started)["checkpoint"]
	_, plan := again.waitLine(0, time.Minute, "the first run plan", logged("plan", "kind", "run"))
	if a := attrs(plan); a["source"] != "checkpoint" || a["checkpoint"] != used {
		t.Errorf("first run plan %q: want source=checkpoint checkpoint=%s", plan.text, used)
	}
	usedID, err := storage.ParseID(used)
	if err != nil {
		t.Fatalf("coordinator started from checkpoint %q: %v", used, err)
	}
	if usedID.Seq >= abandonedID.Seq {
		t.Errorf("resumed from checkpoint %s, not from one committed before the abandoned %s", used, abandoned)
	}
	again.waitOK(procTimeout())
	b, err := os.ReadFile(filepath.Join(out, "logs", "trainer-0.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "loaded checkpoint") || !strings.Contains(string(b), "checkpoint="+used) {
		t.Errorf("trainer-0's log does not say it loaded checkpoint %s:\n%s", used, tail(string(b), 20))
	}
	requireSameBytes(t, readFinal(t, openStore(t, "file://"+storeDir, storage.Options{})), base.state)
}

// Trainers come and go during a run: one is SIGKILLed mid-phase, the rest
// carry on from their memory (the step in flight is redone), a late one
// joins and takes shards; the run finishes with the bytes of the
// uninterrupted run.
func TestClusterElasticMembership(t *testing.T) {
	base := baseline(t)
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	storeURL := "file://" + storeDir
	gossip := freeAddr(t)
	coord := startProc(t, "coordinator", dir, coordinatorArgs(cfg, storeURL, gossip, out, 3)...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	trainers := map[string]*proc{}
	for _, id := range []string{"trainer-0", "trainer-1", "trainer-2"} {
		trainers[id] = startProc(t, id, dir, trainerArgs(cfg, storeURL, gossip, id)...)
	}

	id := waitLatest(t, coord, storeDir, time.Minute, func(storage.ID) bool { return true })
	trainers["trainer-1"].kill()
	killed := time.Now()
	t.Logf("killed trainer-1 after checkpoint %s", id)
	i, left := coord.waitLine(0, 30*time.Second, "trainer-1's departure", logged("member left", "id", "trainer-1"))
	t.Logf("trainer-1 left %s after the kill: %s", left.at.Sub(killed).Round(time.Millisecond), left.text)
	if d := left.at.Sub(killed); d > 5*time.Second {
		t.Errorf("the coordinator noticed trainer-1's death %s after the kill, want within 5s", d)
	}
	i, plan := coord.waitLine(i, 30*time.Second, "a run plan after trainer-1 left", logged("plan", "kind", "run"))
	if a := attrs(plan); a["members"] != "trainer-0,trainer-2" || a["source"] != "peer" {
		t.Errorf("run plan after trainer-1 left: %q; want members=trainer-0,trainer-2 source=peer", plan.text)
	}
	if err := trainers["trainer-1"].wait(10 * time.Second); err == nil {
		t.Error("trainer-1 exited 0 after SIGKILL")
	}

	trainers["trainer-3"] = startProc(t, "trainer-3 (late)", dir, trainerArgs(cfg, storeURL, gossip, "trainer-3")...)
	_, plan = coord.waitLine(i, 30*time.Second, "a run plan with trainer-3", func(ln logLine) bool {
		return logged("plan", "kind", "run")(ln) && slices.Contains(strings.Split(attrs(ln)["members"], ","), "trainer-3")
	})
	t.Logf("trainer-3 joined: %s", plan.text)
	_, trained := trainers["trainer-3"].waitLine(0, 30*time.Second, "training with shards", logged("training"))
	if sh := attrs(trained)["shards"]; sh == "" || sh == "[]" {
		t.Errorf("trainer-3 trained without shards: %s", trained.text)
	}

	coord.waitOK(procTimeout())
	mustExist(t, filepath.Join(out, "metrics.json"), filepath.Join(out, "samples.png"))
	for _, id := range []string{"trainer-0", "trainer-2", "trainer-3"} {
		trainers[id].waitOK(30 * time.Second)
	}
	requireSameBytes(t, readFinal(t, openStore(t, storeURL, storage.Options{})), base.state)
}

// A coordinator SIGKILLed mid-phase and started again with the same flags
// takes the run over from its trainers (or the newest checkpoint), and the
// run finishes with the bytes of the uninterrupted run.
func TestClusterCoordinatorRestart(t *testing.T) {
	skipUnderRace(t)
	base := baseline(t)
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	storeURL := "file://" + storeDir
	gossip := freeAddr(t)
	args := coordinatorArgs(cfg, storeURL, gossip, out, 3)
	coord := startProc(t, "coordinator", dir, args...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	var trainers []*proc
	for _, id := range []string{"trainer-0", "trainer-1", "trainer-2"} {
		trainers = append(trainers, startProc(t, id, dir, trainerArgs(cfg, storeURL, gossip, id)...))
	}
	// Mid-phase: right after a checkpoint that is not a phase end.
	id := waitLatest(t, coord, storeDir, time.Minute, func(id storage.ID) bool { return id.Step%int64(clusterSteps()) != 0 })
	coord.kill()
	if err := coord.wait(15 * time.Second); err == nil {
		t.Fatal("the coordinator exited 0 after SIGKILL")
	}
	t.Logf("killed the coordinator after checkpoint %s", id)

	again := startProc(t, "coordinator (restarted)", dir, args...)
	_, plan := again.waitLine(0, time.Minute, "a run plan", logged("plan", "kind", "run"))
	if src := attrs(plan)["source"]; src != "peer" && src != "checkpoint" {
		t.Errorf("the restarted coordinator's first run plan: %q; want source=peer or source=checkpoint", plan.text)
	}
	t.Logf("the restarted coordinator resumed: %s", plan.text)
	again.waitOK(procTimeout())
	mustExist(t, filepath.Join(out, "metrics.json"))
	for _, tr := range trainers {
		tr.waitOK(30 * time.Second)
	}
	requireSameBytes(t, readFinal(t, openStore(t, storeURL, storage.Options{})), base.state)
}

// A local run on S3 (MinIO) finishes and leaves committed checkpoints.
func TestClusterLocalOnS3(t *testing.T) {
	skipUnderRace(t)
	endpoint := s3TestEnv(t)
	prefix := make([]byte, 6)
	crand.Read(prefix)
	storeURL := "s3://sbtrain-test/cluster-" + hex.EncodeToString(prefix)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	p := startProc(t, "local on S3", dir, localArgs(writeClusterConfig(t, 3), storeURL, out, 3,
		"--s3-endpoint", endpoint, "--s3-path-style", "--create-bucket")...)
	p.logDirs = []string{filepath.Join(out, "logs")}
	p.waitOK(procTimeout())
	mustExist(t, filepath.Join(out, "metrics.json"))

	ctx := context.Background()
	store := openStore(t, storeURL, storage.Options{Endpoint: endpoint, PathStyle: true})
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
	entries, err := ckpts.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var committed []string
	final := false
	for _, e := range entries {
		if e.Manifest != nil {
			committed = append(committed, e.ID.String())
			final = final || e.Latest && strings.HasSuffix(e.ID.String(), finalCkptSuffix())
		}
	}
	t.Logf("committed checkpoints on S3: %v", committed)
	if len(committed) == 0 || !final {
		t.Errorf("checkpoints on S3 %v: want committed ones, the latest at the end of the run", committed)
	}
	readFinal(t, store)
}

// s3TestEnv returns the test MinIO's endpoint, loading the variables from
// the env file of `.ci/minio.sh start` when they are unset, or skips (fails
// with CI=true).
func s3TestEnv(t *testing.T) string {
	t.Helper()
	const howTo = "start MinIO with `make minio` (or `eval \"$(.ci/minio.sh start)\"`) to run the S3 cluster test"
	if os.Getenv("SBTRAIN_TEST_S3_ENDPOINT") == "" {
		state := os.Getenv("SBTRAIN_MINIO_STATE")
		if state == "" {
			name := os.Getenv("USER")
			if u, err := user.Current(); name == "" && err == nil {
				name = u.Username
			}
			state = filepath.Join(os.TempDir(), "sbtrain-minio-"+name)
		}
		if b, err := os.ReadFile(filepath.Join(state, "env")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
				switch {
				case !ok:
				case k == "SBTRAIN_TEST_S3_ENDPOINT", k == "AWS_ACCESS_KEY_ID", k == "AWS_SECRET_ACCESS_KEY", k == "AWS_REGION":
					t.Setenv(k, v) // the processes the test starts inherit them
				}
			}
		}
	}
	ep := os.Getenv("SBTRAIN_TEST_S3_ENDPOINT")
	if ep == "" || os.Getenv("AWS_ACCESS_KEY_ID") == "" || os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but SBTRAIN_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is unset: the S3 test must run in CI")
		}
		t.Skip("SBTRAIN_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is unset: " + howTo)
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		t.Fatalf("SBTRAIN_TEST_S3_ENDPOINT=%q: want http://host:port", ep)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but MinIO at %s is not reachable: %v", ep, err)
		}
		t.Skipf("MinIO at %s is not reachable (%v): %s", ep, err, howTo)
	}
	conn.Close()
	return ep
}

// Processes started wrong fail fast, saying why.
func TestClusterBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeURL := "file://" + filepath.Join(dir, "store")
	gossip := freeAddr(t)
	// A coordinator that waits for 3 trainers that never come.
	coord := startProc(t, "coordinator", dir, coordinatorArgs(cfg, storeURL, gossip, "", 3)...)
	_, started := coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	grpcAddr := attrs(started)["grpc"]

	fails := func(t *testing.T, p *proc, within time.Duration, wants ...string) {
		t.Helper()
		start := time.Now()
		if err := p.wait(within); err == nil {
			t.Fatalf("%s exited 0", p.name)
		}
		t.Logf("%s failed after %s", p.name, time.Since(start).Round(time.Millisecond))
		for _, w := range wants {
			if !strings.Contains(p.out.String(), w) {
				t.Errorf("%s's output does not mention %q:\n%s", p.name, w, tail(p.out.String(), 20))
			}
		}
	}
	t.Run("trainer with another config", func(t *testing.T) {
		t.Parallel()
		other := writeClusterConfig(t, 4)
		ours, theirs := configHash(t, cfg), configHash(t, other)
		if ours == theirs {
			t.Fatalf("seeds 3 and 4 hash alike (%s)", ours)
		}
		p := startProc(t, "trainer with seed 4", dir, trainerArgs(other, storeURL, gossip, "stranger")...)
		fails(t, p, 20*time.Second, "config differs from the coordinator's in seed (hash "+theirs, ours)
	})
	t.Run("trainer joining nobody", func(t *testing.T) {
		t.Parallel()
		closed := freeAddr(t)
		// A trainer keeps trying to join for --coordinator-timeout (pods
		// start in any order), then gives up naming the address.
		args := append(trainerArgs(cfg, storeURL, closed, "lonely"), "--coordinator-timeout", "3s")
		p := startProc(t, "trainer joining a closed port", dir, args...)
		fails(t, p, 15*time.Second, closed)
	})
	t.Run("second coordinator of the run", func(t *testing.T) {
		t.Parallel()
		p := startProc(t, "second coordinator", dir, coordinatorArgs(cfg, storeURL, freeAddr(t), "", 3)...)
		fails(t, p, 20*time.Second, "held by", grpcAddr)
	})
	t.Run("second local of the run", func(t *testing.T) {
		t.Parallel()
		// Refused, it leaves nothing behind: no logs folder.
		out := filepath.Join(t.TempDir(), "out")
		p := startProc(t, "second local", dir, localArgs(cfg, storeURL, out, 2)...)
		fails(t, p, 20*time.Second, "held by", grpcAddr)
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the refused local left %s behind (%v)", out, err)
		}
	})
}

func configHash(t *testing.T, path string) string {
	t.Helper()
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.Hash()
}

// A trainer SIGSTOPped for 20 s mid-phase is dropped by its peers at the
// ring's deadline, the others redo the step in flight without it, and
// after SIGCONT the run still ends with the bytes of the uninterrupted
// run.
func TestClusterPausedTrainer(t *testing.T) {
	skipUnderRace(t)
	base := baseline(t)
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	storeURL := "file://" + storeDir
	gossip := freeAddr(t)
	coord := startProc(t, "coordinator", dir, coordinatorArgs(cfg, storeURL, gossip, out, 3)...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	var paused *proc
	for _, id := range []string{"trainer-0", "trainer-1", "trainer-2"} {
		p := startProc(t, id, dir, trainerArgs(cfg, storeURL, gossip, id)...)
		if id == "trainer-1" {
			paused = p
		}
	}
	id := waitLatest(t, coord, storeDir, time.Minute, func(id storage.ID) bool { return id.Step%int64(clusterSteps()) != 0 })
	paused.signal(syscall.SIGSTOP)
	t.Logf("paused trainer-1 after checkpoint %s", id)
	coord.waitLine(0, 30*time.Second, "a run plan without trainer-1", func(ln logLine) bool {
		return logged("plan", "kind", "run")(ln) && !slices.Contains(strings.Split(attrs(ln)["members"], ","), "trainer-1")
	})
	time.Sleep(20 * time.Second)
	paused.signal(syscall.SIGCONT)
	coord.waitOK(procTimeout())
	requireSameBytes(t, readFinal(t, openStore(t, storeURL, storage.Options{})), base.state)
}
