package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
