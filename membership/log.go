package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// slog records. They all go out at Debug: memberlist is chatty about things
// this package already reports as events or errors (a dead peer's failed
// probes, a refused join), so its own level is kept as an attribute only.
type logWriter struct {
	log *slog.Logger
}

func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{log: l}, "", 0)
}

func (w logWriter) Write(p []byte) (int, error) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	level, msg := parseLine(string(p))
	w.log.LogAttrs(context.Background(), slog.LevelDebug, msg, slog.String("memberlist_level", level))
	return len(p), nil
}

// parseLine splits "[LEVEL] memberlist: text\n" into LEVEL and text.
func parseLine(s string) (level, msg string) {
	s = strings.TrimRight(s, "\r\n")
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			level, s = s[1:i], strings.TrimLeft(s[i+1:], " ")
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	if level == "" {
		level = "INFO"
	}
	return level, s
}
