package launch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The children here are the shell: what matters is the group's handling of
// logs, exits and stopping.
func TestGroup(t *testing.T) {
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Fatalf("%s: %v", sh, err)
	}
	dir := t.TempDir()
	g := NewGroup(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cases := []struct {
		id, script string
		ok         bool
	}{
		{"ok", `echo "hello $LAUNCH_TEST"`, true},
		{"fails", "exit 3", false},
		{"stopped", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done", false},
	}
	for _, c := range cases {
		if err := g.Start(ctx, c.id, sh, []string{"-c", c.script}, []string{"LAUNCH_TEST=child"}, filepath.Join(dir, c.id+".log")); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]Exit{}
	for len(got) < 2 {
		select {
		case e := <-g.Exited():
			got[e.ID] = e
		case <-time.After(10 * time.Second):
			t.Fatalf("exits so far %v", got)
		}
	}
	// SIGTERM to the one still running, once it listens for it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(filepath.Join(dir, "stopped.log")); strings.Contains(string(b), "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the child to stop never started")
		}
	}
	cancel()
	select {
	case e := <-g.Exited():
		got[e.ID] = e
	case <-time.After(StopDelay + 5*time.Second):
		t.Fatal("the stopped child did not exit")
	}
	g.Wait()
	if e := got["stopped"]; !errors.Is(e.Err, context.Canceled) {
		t.Errorf("stopped child's exit %v, want it to say it was stopped", e.Err)
	}
	for _, c := range cases {
		e, ok := got[c.id]
		if !ok || (e.Err == nil) != c.ok {
			t.Errorf("%s: exit %+v, want ok=%v", c.id, e, c.ok)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "ok.log"))
	if err != nil || strings.TrimSpace(string(b)) != "hello child" {
		t.Errorf("ok.log = %q, %v: want the child's output with its environment", b, err)
	}
	if err := g.Start(context.Background(), "no log", sh, nil, nil, filepath.Join(dir, "missing", "x.log")); err == nil || !strings.Contains(err.Error(), "no log: log") {
		t.Errorf("start with an unwritable log: %v", err)
	}
}
