package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/job"
	"github.com/sbtrain/sbtrain/storage"
)

// execMainEnv turns the test binary into sbtrain itself: the cluster tests
// run their coordinators, trainers and local runs as real processes without
// building a binary first, and the trainers `local` starts (it re-executes
// os.Executable()) inherit the variable.
const execMainEnv = "SBTRAIN_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainEnv) == "1" {
		if os.Getenv(trainerFailsEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "trainer" {
			fmt.Fprintln(os.Stderr, "trainer: failing at start, as the test asked")
			os.Exit(3)
		}
		os.Exit(runMain(os.Args[1:], os.Stderr)) // exactly what main does
	}
	os.Exit(m.Run())
}

// The small DSB run every cluster test trains: 2D moons, 2 IPF iterations
// (4 phases) of clusterSteps() steps each, 6 virtual shards.
const (
	clusterRun    = "cluster"
	clusterPhases = 4
	clusterShards = 6
)

// clusterSteps is the steps per phase: about 3 s for 3 trainers on two
// cores; fewer under the race detector, which trains several times slower.
func clusterSteps() int {
	if raceEnabled {
		return 100
	}
	return 300
}

// clusterCheckpointEvery gives 12 checkpoints per phase.
func clusterCheckpointEvery() int { return clusterSteps() / 12 }

// procTimeout bounds every process a test starts.
func procTimeout() time.Duration {
	if raceEnabled {
		return 4 * time.Minute
	}
	return 90 * time.Second
}

// writeClusterConfig writes the cluster run's config with the given seed
// (the tests use 3; another seed is another config hash).
func writeClusterConfig(t *testing.T, seed int) string { return writeMethodConfig(t, "dsb", seed) }

// writeMethodConfig writes the cluster run's config for a method: dsb, or
// dsbm with the same data, network, phases and cache (moons to 8gaussians,
// a transfer, so that both ends are data).
func writeMethodConfig(t *testing.T, method string, seed int) string {
	t.Helper()
	if method == "dsbm" {
		body := fmt.Sprintf(`name: %s
method: dsbm
seed: %d
data: {name: moons}
prior: {name: 8gaussians}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 60, lr: 0.001, steps: %d, ema_decay: 0.99}
dsbm:
  steps: 10
  iterations: %d
  cache_size: 240
  cache_shards: %d
  cache_refresh: 20
  warm_start: true
eval: {samples: 200, trajectories: 8}
`, clusterRun, seed, clusterSteps(), clusterPhases/2, clusterShards)
		path := filepath.Join(t.TempDir(), "cluster-dsbm.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	body := fmt.Sprintf(`name: %s
method: dsb
seed: %d
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 60, lr: 0.001, steps: %d, ema_decay: 0.99}
dsb:
  steps: 10
  iterations: %d
  cache_size: 240
  cache_shards: %d
  cache_refresh: 20
eval: {samples: 200, trajectories: 8}
`, clusterRun, seed, clusterSteps(), clusterPhases/2, clusterShards)
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// localArgs is a `sbtrain local` command line of the cluster run.
func localArgs(config, storeURL, out string, workers int, extra ...string) []string {
	args := []string{"local", "--config", config, "--workers", strconv.Itoa(workers), "--store", storeURL,
		"--out", out, "--checkpoint-every", strconv.Itoa(clusterCheckpointEvery()), "--quiet"}
	return append(args, extra...)
}

// coordinatorArgs is a `sbtrain coordinator` command line of the cluster run.
func coordinatorArgs(config, storeURL, gossip, out string, workers int) []string {
	return []string{"coordinator", "--config", config, "--store", storeURL, "--gossip", gossip,
		"--workers", strconv.Itoa(workers), "--out", out, "--checkpoint-every", strconv.Itoa(clusterCheckpointEvery())}
}

// trainerArgs is a `sbtrain trainer` command line of the cluster run.
func trainerArgs(config, storeURL, gossip, id string) []string {
	return []string{"trainer", "--config", config, "--store", storeURL, "--join", gossip, "--id", id,
		"--coordinator-timeout", "30s"}
}

// freeAddr returns 127.0.0.1:PORT with a port nobody listened on a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// logLine is one line of a process's output and when the test read it.
type logLine struct {
	at   time.Time
	text string
}

// lineLog collects a process's output line by line as it comes, so tests
// can wait for a line and know when it appeared.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []logLine
	changed chan struct{} // closed and replaced when lines are added
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, logLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// since returns the lines from index from on, and a channel closed when
// more arrive.
func (l *lineLog) since(from int) ([]logLine, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if from > len(l.lines) {
		from = len(l.lines)
	}
	return l.lines[from:len(l.lines):len(l.lines)], l.changed
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ln := range l.lines {
		b.WriteString(ln.text)
		b.WriteByte('\n')
	}
	b.Write(l.partial)
	return b.String()
}

// proc is one sbtrain process a test started: the test binary in
// execMainEnv mode, in its own process group, bounded by procTimeout and
// killed with its group at the end of the test.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *lineLog // stdout and stderr
	done chan struct{}
	err  error // cmd.Wait's; valid once done is closed
	// logDirs hold more logs of the process (local's trainer logs), shown
	// when the test fails.
	logDirs []string
}

func startProc(t *testing.T, name, dir string, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), procTimeout())
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), execMainEnv+"=1")
	// Its own group, so that a kill takes `local`'s trainers with it (and
	// --crash-after-blobs kills that group, not the test); Pdeathsig so a
	// dying test leaves no process behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	p := &proc{t: t, name: name, cmd: cmd, out: newLineLog(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out // the same writer: one pipe, lines stay whole
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Logf("started %s (pid %d): sbtrain %s", name, cmd.Process.Pid, strings.Join(args, " "))
	go func() {
		p.err = cmd.Wait()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Errorf("%s (pid %d) still running 15 s after SIGKILL", name, cmd.Process.Pid)
		}
		if t.Failed() {
			p.dumpLogs()
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process's group: the process and any trainers it
// started.
func (p *proc) kill() {
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.t.Errorf("kill %s: %v", p.name, err)
	}
}

// signal sends sig to the process alone (SIGSTOP, SIGCONT).
func (p *proc) signal(sig syscall.Signal) {
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		p.t.Errorf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits for the process to exit and returns cmd.Wait's error; the
// test fails if it takes longer than timeout.
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
		return nil
	}
}

// waitOK waits for a zero exit status.
func (p *proc) waitOK(timeout time.Duration) {
	p.t.Helper()
	if err := p.wait(timeout); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// waitLine waits for the first output line from index from on that match
// accepts and returns its index; the test fails after timeout or when the
// process exits without printing one.
func (p *proc) waitLine(from int, timeout time.Duration, what string, match func(logLine) bool) (int, logLine) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		exited := p.exited()
		lines, changed := p.out.since(from)
		for i, ln := range lines {
			if match(ln) {
				return from + i, ln
			}
		}
		from += len(lines)
		if exited {
			p.t.Fatalf("%s exited (%v) without logging %s", p.name, p.err, what)
		}
		select {
		case <-changed:
		case <-p.done:
		case <-deadline:
			p.t.Fatalf("%s did not log %s within %s", p.name, what, timeout)
		}
	}
}

// dumpLogs shows the tail of the process's output and of its extra logs.
func (p *proc) dumpLogs() {
	p.t.Logf("--- output of %s (%v):\n%s", p.name, p.err, tail(p.out.String(), 60))
	for _, dir := range p.logDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			p.t.Logf("--- %s:\n%s", f, tail(string(b), 30))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// slogRecord is one line of log/slog's default text output:
// "2006/01/02 15:04:05 LEVEL msg key=value key="quoted value"".
type slogRecord struct {
	level, msg string
	attrs      map[string]string
}

var (
	slogLineRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)? (DEBUG|INFO|WARN|ERROR) (.*)$`)
	slogAttrRE = regexp.MustCompile(`(?:^|\s)([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)`)
)

func parseSlog(line string) (slogRecord, bool) {
	m := slogLineRE.FindStringSubmatch(line)
	if m == nil {
		return slogRecord{}, false
	}
	r := slogRecord{level: m[1], attrs: map[string]string{}}
	rest := m[2]
	attrs := slogAttrRE.FindAllStringSubmatchIndex(rest, -1)
	if len(attrs) == 0 {
		r.msg = rest
		return r, true
	}
	r.msg = strings.TrimSpace(rest[:attrs[0][0]])
	for _, a := range attrs {
		key, val := rest[a[2]:a[3]], rest[a[4]:a[5]]
		if strings.HasPrefix(val, `"`) {
			if uq, err := strconv.Unquote(val); err == nil {
				val = uq
			}
		}
		r.attrs[key] = val
	}
	return r, true
}

// logged matches a slog line with message msg and the given attributes
// (key, value pairs).
func logged(msg string, kv ...string) func(logLine) bool {
	return func(ln logLine) bool {
		r, ok := parseSlog(ln.text)
		if !ok || r.msg != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if r.attrs[kv[i]] != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// attrs returns a matched line's slog attributes.
func attrs(ln logLine) map[string]string {
	r, _ := parseSlog(ln.text)
	return r.attrs
}

// waitLatest polls the run's LATEST pointer in a file store until it names
// a checkpoint that accept takes, and returns it; the test fails after
// timeout or when p exits first.
func waitLatest(t *testing.T, p *proc, storeDir string, timeout time.Duration, accept func(storage.ID) bool) storage.ID {
	t.Helper()
	path := filepath.Join(storeDir, filepath.FromSlash(storage.RunPrefix(clusterRun)), "LATEST")
	deadline := time.Now().Add(timeout)
	for {
		// {"manifest":"runs/<run>/ckpt/<id>/MANIFEST.json","seq":N}
		var ptr struct{ Manifest string }
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &ptr) == nil {
			if id, err := storage.ParseID(filepath.Base(filepath.Dir(ptr.Manifest))); err == nil && accept(id) {
				return id
			}
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before LATEST named the checkpoint waited for", p.name, p.err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("LATEST did not name the checkpoint waited for within %s", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil {
			t.Errorf("missing output: %v", err)
		} else if fi.Size() == 0 {
			t.Errorf("%s is empty", p)
		}
	}
}

func openStore(t *testing.T, url string, opts storage.Options) storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// finalState is a finished run's final checkpoint.
type finalState struct {
	checkpoint string
	params     map[string][]byte         // job.ParamBytes: parameters, Adam, EMA
	tensors    map[string]storage.Tensor // the same, decoded
}

// readFinal loads the run's newest checkpoint and checks it is the end of
// the run.
func readFinal(t *testing.T, store storage.Store) finalState {
	t.Helper()
	return readFinalRun(t, store, clusterRun, clusterPhases, int64(clusterSteps()))
}

// readFinalRun is readFinal for a run of any name and length.
func readFinalRun(t *testing.T, store storage.Store, run string, phases int, steps int64) finalState {
	t.Helper()
	ckpts, err := storage.NewCheckpoints(store, run, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ckpts.LoadLatest(context.Background())
	if err != nil {
		t.Fatalf("load the final checkpoint: %v", err)
	}
	m := l.Manifest
	id := storage.ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}
	if m.Phase != phases-1 || m.Step != steps || !m.PhaseEnd {
		t.Fatalf("newest checkpoint %s is not the end of the run (phase %d step %d)", id, phases-1, steps)
	}
	b, ok := l.Blobs[job.SnapshotBlob]
	if !ok {
		t.Fatalf("checkpoint %s has no %s", id, job.SnapshotBlob)
	}
	params, err := job.ParamBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	ts, _, err := storage.DecodeSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	fs := finalState{checkpoint: id.String(), params: params, tensors: map[string]storage.Tensor{}}
	for _, tn := range ts {
		if _, ok := params[tn.Name]; ok {
			fs.tensors[tn.Name] = tn
		}
	}
	if len(params) == 0 {
		t.Fatalf("checkpoint %s holds no parameters", id)
	}
	return fs
}

// sameNames fails unless got and want hold the same tensors.
func sameNames(t *testing.T, got, want finalState) bool {
	t.Helper()
	ok := len(got.params) == len(want.params)
	for name := range want.params {
		if _, in := got.params[name]; !in {
			ok = false
		}
	}
	if !ok {
		t.Errorf("tensors differ: %s has %v, %s has %v", got.checkpoint, keys(got.params), want.checkpoint, keys(want.params))
	}
	return ok
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// requireSameBytes fails unless every parameter, Adam and EMA tensor is
// byte for byte the same.
func requireSameBytes(t *testing.T, got, want finalState) {
	t.Helper()
	if !sameNames(t, got, want) {
		return
	}
	for name, w := range want.params {
		if g := got.params[name]; !bytes.Equal(g, w) {
			rel, _ := relL2(got.tensors[name], want.tensors[name])
			t.Errorf("tensor %s differs (relative L2 %.3g): not an exact resume", name, rel)
		}
	}
}

// relL2 is ||a-b|| / ||b|| (||a-b|| when b is zero).
func relL2(a, b storage.Tensor) (float64, error) {
	av, err := floats(a)
	if err != nil {
		return 0, err
	}
	bv, err := floats(b)
	if err != nil {
		return 0, err
	}
	if len(av) != len(bv) {
		return 0, fmt.Errorf("%d elements, want %d", len(av), len(bv))
	}
	var diff, norm float64
	for i := range av {
		d := av[i] - bv[i]
		diff += d * d
		norm += bv[i] * bv[i]
	}
	if norm == 0 {
		return math.Sqrt(diff), nil
	}
	return math.Sqrt(diff / norm), nil
}

func floats(t storage.Tensor) ([]float64, error) {
	switch t.DType {
	case storage.F32:
		v, err := t.Float32s()
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, err
	case storage.F64:
		return t.Float64s()
	}
	return nil, fmt.Errorf("dtype %v is not a float", t.DType)
}

// ckptDirs lists the run's checkpoint directories in a file store, with
// the files each holds.
func ckptDirs(t *testing.T, storeDir string) map[string][]string {
	t.Helper()
	root := filepath.Join(storeDir, filepath.FromSlash(storage.RunPrefix(clusterRun)), "ckpt")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("list checkpoints: %v", err)
	}
	out := map[string][]string{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = nil
		for _, f := range files {
			out[e.Name()] = append(out[e.Name()], f.Name())
		}
	}
	return out
}

// finalCkptSuffix is how the directory of a checkpoint at the end of the
// run ends.
func finalCkptSuffix() string {
	return fmt.Sprintf("-p%04d-s%012d", clusterPhases-1, clusterSteps())
}

// baselineRun is the uninterrupted 3-trainer local run that the exact-resume
// and elastic tests compare with; the first test that needs it runs it.
type baselineRun struct {
	state finalState
	wall  time.Duration // process start to exit
	err   error
}

var (
	baselineOnce sync.Once
	baselineRes  baselineRun
	// The DSBM run's own baseline, made only by the tests that run DSBM.
	dsbmBaselineOnce sync.Once
	dsbmBaselineRes  baselineRun
)

func baseline(t *testing.T) baselineRun { return baselineFor(t, "dsb") }

// baselineFor is the uninterrupted 3-trainer run of a method's cluster
// config (see writeMethodConfig).
func baselineFor(t *testing.T, method string) baselineRun {
	t.Helper()
	once, res := &baselineOnce, &baselineRes
	if method == "dsbm" {
		once, res = &dsbmBaselineOnce, &dsbmBaselineRes
	}
	once.Do(func() {
		// Stays set if the run fails the test that runs it (t.Fatal ends
		// this function early).
		res.err = fmt.Errorf("the uninterrupted 3-trainer %s run failed in %s; see its log", method, t.Name())
		dir := t.TempDir()
		storeDir := filepath.Join(dir, "store")
		out := filepath.Join(dir, "out")
		start := time.Now()
		p := startProc(t, "uninterrupted local --workers 3", dir,
			localArgs(writeMethodConfig(t, method, 3), "file://"+storeDir, out, 3)...)
		p.logDirs = []string{filepath.Join(out, "logs")}
		p.waitOK(procTimeout())
		wall := time.Since(start)
		mustExist(t, filepath.Join(out, "metrics.json"), filepath.Join(out, "samples.png"))
		st := readFinal(t, openStore(t, "file://"+storeDir, storage.Options{}))
		t.Logf("uninterrupted 3-trainer %s run: %s, final checkpoint %s", method, wall.Round(time.Millisecond), st.checkpoint)
		*res = baselineRun{state: st, wall: wall}
	})
	if res.err != nil {
		t.Fatal(res.err)
	}
	return *res
}

// skipUnderRace skips the tests that the non-race pass of `make test`
// runs, to keep the race pass short.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("runs in the non-race pass of make test (the race detector makes training several times slower)")
	}
}
