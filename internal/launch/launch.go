// Package launch owns the child processes a command starts, such as the
// trainers of a local run: each writes to its own log file, dies with its
// parent (Pdeathsig, so a killed run leaves no orphans), is asked to stop
// with SIGTERM before it is killed, and its exit is reported on a channel
// the group's owner reads.
package launch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// StopDelay is how long a child asked to stop (its context ended) has to
// exit before it is killed.
const StopDelay = 5 * time.Second

// Exit is a child that exited: Err is nil for exit status 0, except that a
// child stopped through its context that then exits 0 gets the context's
// error, so a stop is never mistaken for finishing.
type Exit struct {
	ID  string
	Err error
	Log string // the child's log file
}

// Group is the children of one command. Start them, read Exited, and call
// Wait before returning: it returns once every child has exited and its
// exit was sent.
type Group struct {
	exited chan Exit
	wg     sync.WaitGroup
}

// NewGroup makes a group for up to n children; their exits never block.
func NewGroup(n int) *Group { return &Group{exited: make(chan Exit, n)} }

// Exited reports each child's exit, once.
func (g *Group) Exited() <-chan Exit { return g.exited }

// Wait waits for every child started to exit.
func (g *Group) Wait() { g.wg.Wait() }

// Start starts exe with args and, on top of this process's environment,
// env, writing its output to logPath. Ending ctx sends it SIGTERM, and
// SIGKILL StopDelay later.
func (g *Group) Start(ctx context.Context, id, exe string, args, env []string, logPath string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("%s: log: %w", id, err)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = StopDelay
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", id, err)
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := cmd.Wait()
		f.Close()
		g.exited <- Exit{ID: id, Err: err, Log: logPath}
	}()
	return nil
}
