package main

import (
	"flag"
	"log"
	"log/slog"
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
		slog.SetDefault(slog.New(slog.NewJSONHandler(logWriter{}, nil)))
		return nil
	}
	return usagef("--log-format %q: want text or json", f.format)
}

// logWriter writes where the log package writes (stderr unless a progress
// bar has taken it, see progressLine.captureLog), as the text handler does.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) { return log.Writer().Write(p) }

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
