package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/storage"
)

// jsonLogged matches a line of the JSON log format with message msg.
func jsonLogged(msg string) func(logLine) bool {
	return func(ln logLine) bool {
		var rec map[string]any
		return json.Unmarshal([]byte(ln.text), &rec) == nil && rec["msg"] == msg
	}
}

// --log-format json once wrote through the log package, which slog had
// pointed back at the JSON handler: the first log line deadlocked the
// process, and SIGTERM no longer ended it. SIGTERM is the orderly way to
// stop a coordinator: exit 0, no ERROR line.
func TestJSONLogAndSIGTERMStopTheCoordinator(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, "coordinator", dir, "coordinator", "--store", "file://"+filepath.Join(dir, "store"),
		"--gossip", freeAddr(t), "--workers", "2", "--log-format", "json")
	p.waitLine(0, 30*time.Second, "a JSON line coordinator started", jsonLogged("coordinator started"))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(20 * time.Second); err != nil {
		t.Fatalf("coordinator stopped by SIGTERM: %v, want exit 0", err)
	}
	out := p.out.String()
	if strings.Contains(out, `"level":"ERROR"`) {
		t.Fatalf("coordinator stopped by SIGTERM logs an error:\n%s", tail(out, 10))
	}
	for _, ln := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(ln, "{") && !json.Valid([]byte(ln)) {
			t.Errorf("log line is not one JSON object: %q", ln)
		}
	}
}

// Bad input of the defects list: each exits 2 with a line naming the flag
// or field, before anything is bound, created or allocated.
func TestTrustBadInputExitsTwo(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const si = "method: si\ndata: {name: moons}\nprior: {name: gaussian, dim: 2}\n"
	const dsb = "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, dim: 2}\n"
	onesided := write("onesided.yaml", si+"si: {path: onesided}\n")
	zero := write("zero.yaml", si+"si: {gamma: zero}\n")
	colon := write("colon.yaml", dsb+"name: a:b\n")
	nan := write("nan.yaml", dsb+"dsb: {ou_mean: .nan}\n")
	epsInf := write("eps.yaml", si+"si: {epsilon: .inf}\n")
	huge := write("huge.yaml", dsb+"eval: {samples: 1000000000000}\n")
	cache := write("cache.yaml", dsb+"dsb: {cache_size: 400000000000}\n")
	typo := filepath.Join(dir, "no", "such", "store")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"gossip port too big", []string{"coordinator", "--gossip", "127.0.0.1:99999"}, `--gossip "127.0.0.1:99999": port "99999"`},
		{"gossip without a port", []string{"coordinator", "--gossip", "127.0.0.1"}, `--gossip "127.0.0.1": want host:port`},
		{"grpc port negative", []string{"coordinator", "--grpc", "127.0.0.1:-1"}, `--grpc "127.0.0.1:-1"`},
		{"grpc port not a number", []string{"coordinator", "--grpc", "127.0.0.1:http"}, `--grpc "127.0.0.1:http"`},
		{"http port too big", []string{"coordinator", "--http", "127.0.0.1:70000"}, `--http "127.0.0.1:70000"`},
		{"local http port", []string{"local", "--http", ":65536"}, `--http ":65536"`},
		{"sample n huge", []string{"sample", "--run", dir, "--n", "10000000000000"}, "--n 10000000000000, want 1..16777216"},
		{"check: path onesided", []string{"config", "--check", onesided}, `si.path: "onesided"`},
		{"train: path onesided", []string{"train", "--config", onesided}, `si.path: "onesided"`},
		{"check: gamma zero", []string{"config", "--check", zero}, `si.gamma: "zero"`},
		{"train: gamma zero", []string{"train", "--config", zero}, `si.gamma: "zero"`},
		{"check: a name local refuses", []string{"config", "--check", colon}, `name: "a:b"`},
		{"local: a --run the store refuses", []string{"local", "--run", "a:b"}, `--run: run id "a:b"`},
		{"check: NaN ou_mean", []string{"config", "--check", nan}, "dsb.ou_mean: NaN"},
		{"check: Inf epsilon", []string{"config", "--check", epsInf}, "si.epsilon: +Inf"},
		{"check: huge eval.samples", []string{"config", "--check", huge}, "eval.samples: 1000000000000"},
		{"check: huge cache_size", []string{"config", "--check", cache}, "dsb.cache_size: 400000000000"},
		{"bench buffers too big", []string{"bench", "allreduce", "--sizes", "1KiB:1024GiB"}, "--sizes: sizes \"1KiB:1024GiB\": want MIN:MAX with 4 <= MIN <= MAX <= 4GiB"},
		{"bench size overflowing", []string{"bench", "allreduce", "--sizes", "4:9000000000GiB"}, "--sizes: size \"9000000000GiB\""},
		{"bench reference too big", []string{"bench", "allreduce", "--tcp-bytes", "100GiB"}, `--tcp-bytes "100GiB": want a positive size up to 4GiB`},
		{"train on a CPU it may not use", []string{"train", "--cpus", "1000"}, "--cpus: bind to CPUs 1000: CPU 1000 is not among this process's allowed CPUs"},
		{"local CPUs not a list", []string{"local", "--cpus", "0-x"}, `--cpus: cpu list "0-x"`},
		{"ckpt ls of a mistyped store", []string{"ckpt", "ls", "--store", "file://" + typo, "--run", "demo"}, typo},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := runMain(c.args, &stderr)
			msg := strings.TrimSpace(stderr.String())
			if code != 2 || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("exit %d, stderr %q; want 2 and one line naming %q", code, msg, c.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "no")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ckpt ls created the mistyped store path (%v)", err)
	}
}

// A crash leaves blobs without a manifest; that is the commit protocol
// working, and ckpt verify once counted it as a bad checkpoint (exit 1).
func TestCkptVerifyPassesAnAbandonedWrite(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := storage.Open(ctx, "file://"+dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cps, err := storage.NewCheckpoints(store, "demo", nil)
	if err != nil {
		t.Fatal(err)
	}
	meta := storage.Meta{Phase: 0, IPFIteration: 1, Direction: "backward", Step: 5, ConfigHash: "abc"}
	if _, err := cps.Save(ctx, meta, []storage.Blob{{Name: "a.bin", Data: []byte{1}}}); err != nil {
		t.Fatal(err)
	}
	id, err := cps.NextID(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cps.PutBlob(ctx, id, "a.bin", []byte{2}); err != nil { // then the crash
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := runMain([]string{"ckpt", "verify", "--store", "file://" + dir, "--run", "demo"}, &stderr); code != 0 {
		t.Fatalf("ckpt verify after an abandoned write exits %d: %s", code, stderr.String())
	}
	if code := runMain([]string{"ckpt", "verify", "--store", "file://" + dir, "--run", "demo", "--seq", "2"}, &stderr); code != 1 {
		t.Fatalf("ckpt verify --seq of the abandoned write exits %d, want 1 (it is not a checkpoint)", code)
	}
}

// ckpt unlock once removed a live coordinator's lease, and a second
// coordinator then ran the run beside it until the first noticed.
func TestCkptUnlockRefusesALiveLease(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	store, err := storage.Open(ctx, "file://"+dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storage.AcquireLease(ctx, store, "demo", "coordinator@test", storage.LeaseOptions{TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	unlock := func(extra ...string) (int, string) {
		var stderr bytes.Buffer
		code := runMain(append([]string{"ckpt", "unlock", "--store", "file://" + dir, "--run", "demo"}, extra...), &stderr)
		return code, stderr.String()
	}
	// The refusal (on slog's default logger) names the holder and --force.
	if code, _ := unlock(); code != 1 {
		t.Fatalf("unlock of a live lease: exit %d, want 1", code)
	}
	if _, err := storage.ReadLease(ctx, store, "demo"); err != nil {
		t.Fatalf("the refused unlock removed the lease: %v", err)
	}
	if code, msg := unlock("--force"); code != 0 {
		t.Fatalf("unlock --force: exit %d, %s", code, msg)
	}
	if _, err := storage.ReadLease(ctx, store, "demo"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after unlock --force the lease reads %v, want ErrNotFound", err)
	}
}

// trainerFailsEnv makes every trainer process of a test exit at once (see
// TestMain).
const trainerFailsEnv = "SBTRAIN_TEST_TRAINER_FAILS"

// `sbtrain local` once waited for ever after its last trainer died.
func TestLocalExitsWhenNoTrainerIsLeft(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(trainerFailsEnv, "1")
	p := startProc(t, "local", dir, localArgs(writeClusterConfig(t, 3), "file://"+filepath.Join(dir, "store"), filepath.Join(dir, "out"), 2)...)
	err := p.wait(60 * time.Second)
	if err == nil {
		t.Fatal("local exited 0 with every trainer dead")
	}
	if out := p.out.String(); !strings.Contains(out, "no trainer is left") || !strings.Contains(out, "trainer-") {
		t.Fatalf("local's error does not say that no trainer is left:\n%s", tail(out, 10))
	}
}

// SIGTERM stops a trainer in an orderly way too: exit 0, no ERROR line,
// whether it is still looking for its coordinator or training.
func TestSIGTERMStopsATrainer(t *testing.T) {
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeURL := "file://" + filepath.Join(dir, "store")
	gossip := freeAddr(t)
	coord := startProc(t, "coordinator", dir, coordinatorArgs(cfg, storeURL, gossip, "", 1)...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))
	tr := startProc(t, "trainer", dir, trainerArgs(cfg, storeURL, gossip, "trainer-0")...)
	// Training: the coordinator has committed a checkpoint of its.
	waitLatest(t, coord, filepath.Join(dir, "store"), time.Minute, func(storage.ID) bool { return true })
	if err := tr.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := tr.wait(20 * time.Second); err != nil {
		t.Fatalf("trainer stopped by SIGTERM: %v, want exit 0\n%s", err, tail(tr.out.String(), 10))
	}
	if out := tr.out.String(); strings.Contains(out, " ERROR ") {
		t.Fatalf("trainer stopped by SIGTERM logs an error:\n%s", tail(out, 10))
	}
	coord.kill()
}
