package main

import (
	"flag"
	"io"
	"log"
	"log/slog"
	"os"
	"sync"
)

// logFlags is --log-format, shared by the processes of a distributed run.
type logFlags struct {
	format string
}

func addLogFlags(fs *flag.FlagSet) *logFlags {
	f := &logFlags{}
	fs.StringVar(&f.format, "log-format", "text", "log format on stderr: text, or json (one object a line, for log collectors)")
	return f
}

// apply checks the flag and installs the chosen handler as slog's default.
// text keeps slog's default output.
func (f *logFlags) apply() error {
	switch f.format {
	case "text":
		return nil
	case "json":
		jsonLog.Lock()
		jsonLog.on = true
		jsonLog.Unlock()
		// slog.SetDefault also points the log package's output at this
		// handler, so the handler must not write through the log package:
		// that would call back into itself (and deadlock on its lock).
		slog.SetDefault(slog.New(slog.NewJSONHandler(jsonSink{}, nil)))
		return nil
	}
	return usagef("--log-format %q: want text or json", f.format)
}

// jsonLog is where the JSON handler writes: stderr, unless a progress bar
// has taken the terminal (see redirectLog).
var jsonLog struct {
	sync.Mutex
	on bool      // --log-format json was applied
	w  io.Writer // nil: os.Stderr
}

type jsonSink struct{}

func (jsonSink) Write(p []byte) (int, error) {
	jsonLog.Lock()
	w := jsonLog.w
	jsonLog.Unlock()
	if w == nil {
		w = os.Stderr
	}
	return w.Write(p)
}

// redirectLog sends log lines, of the text or the JSON format, to w until
// the returned func restores the previous destination.
func redirectLog(w io.Writer) (restore func()) {
	jsonLog.Lock()
	defer jsonLog.Unlock()
	if jsonLog.on {
		// The log package's output is slog's bridge to the JSON handler;
		// replacing it would bypass the handler.
		prev := jsonLog.w
		jsonLog.w = w
		return func() {
			jsonLog.Lock()
			jsonLog.w = prev
			jsonLog.Unlock()
		}
	}
	prev := log.Writer()
	log.SetOutput(w)
	return func() { log.SetOutput(prev) }
}

// childFlags passes the format on to child processes.
func (f *logFlags) childFlags() []string { return []string{"--log-format", f.format} }

// parseProcessFlags is parseFlags for the commands of a distributed run:
// it also sets up logging and refuses positional arguments.
func parseProcessFlags(fs *flag.FlagSet, args []string, lf *logFlags) (done bool, err error) {
	if done, err := parseFlags(fs, args); done {
		return true, err
	}
	if err := lf.apply(); err != nil {
		return true, err
	}
	if fs.NArg() > 0 {
		return true, usagef("unexpected arguments %q", fs.Args())
	}
	return false, nil
}
