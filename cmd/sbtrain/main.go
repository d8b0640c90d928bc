// Command sbtrain trains diffusion Schrödinger bridges and stochastic
// interpolants, in one process or on a cluster. Each subcommand lives in its
// own file and registers itself in init.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run gets the arguments after the subcommand's
// name; it returns a usageError for bad input (exit code 2).
type command struct {
	name    string
	summary string
	hidden  bool // internal entry points, e.g. re-executed worker processes
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]*command{}

// errOut receives usage and errors; runMain sets it, so tests can read it.
var errOut io.Writer = os.Stderr

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("sbtrain: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// usageError marks bad input from the user: flags, config, files. It exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// newFlagSet returns a flag set that reports errors instead of exiting, and
// whose -h/--help prints the command's summary and flags.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("sbtrain "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: sbtrain %s %s\n\n", name, usage)
		if c := commands[name]; c != nil {
			fmt.Fprintf(out, "%s\n\nFlags:\n", c.summary)
		}
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; --help is success (nil, done=true), anything else
// wrong is a usage error.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, usageError{err}
	}
	return false, nil
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "sbtrain trains diffusion Schrödinger bridges and stochastic interpolants.\n\nUsage: sbtrain <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'sbtrain <command> --help' for a command's flags.\n")
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stderr))
}

func runMain(args []string, stderr io.Writer) int {
	errOut = stderr
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sbtrain: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, args[1:]); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "sbtrain %s: %v\n", c.name, err)
			return 2
		}
		slog.Error("sbtrain "+c.name+" failed", "err", err)
		return 1
	}
	return 0
}
