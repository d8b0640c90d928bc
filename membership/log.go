package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"

	"github.com/sbtrain/sbtrain/internal/runauth"
)

// logWriter turns memberlist's log lines ("[WARN] memberlist: ...") into
// slog records. They all go out at Debug: memberlist is chatty about things
// this package already reports as events or errors (a dead peer's failed
// probes, a refused join), so its own level is kept as an attribute only.
//
// The exception is a packet or stream refused for its label or encryption:
// an attempt from outside the run, which goes to rej (channel "gossip").
type logWriter struct {
	log *slog.Logger
	rej *runauth.Rejects
}

func newStdLogger(l *slog.Logger, rej *runauth.Rejects) *log.Logger {
	return log.New(logWriter{log: l, rej: rej}, "", 0)
}

// refusalMarks are in memberlist's messages about traffic without the
// run's label or key (net.go: handleConn, ingestPacket, readStream).
var refusalMarks = []string{"unacceptable label", "label header", "decrypt", "not encrypted", "encryption is not configured"}

func (w logWriter) Write(p []byte) (int, error) {
	if w.rej != nil {
		if level, msg := parseLine(string(p)); level == "ERR" && containsAny(msg, refusalMarks) {
			from := "unknown"
			if i := strings.LastIndex(msg, "from="); i >= 0 {
				from = msg[i+len("from="):]
			}
			w.rej.Refused("gossip", from, msg)
		}
	}
	if !w.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	level, msg := parseLine(string(p))
	w.log.LogAttrs(context.Background(), slog.LevelDebug, msg, slog.String("memberlist_level", level))
	return len(p), nil
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
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
