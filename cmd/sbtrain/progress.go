package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// How often progress is printed: a plain line every few seconds keeps a
// log file readable; a bar redrawn in place can move more often.
const (
	plainEvery = 2 * time.Second
	barEvery   = 250 * time.Millisecond
)

// Bar widths in cells: barCells without a known terminal width, otherwise
// what the line leaves, within [minBarCells, maxBarCells].
const (
	barCells    = 20
	minBarCells = 10
	maxBarCells = 30
)

// progressUpdate is one progress report as the commands print it.
type progressUpdate struct {
	label       string // phase and position in the run: "ipf 2 backward 3/4"
	phase       int    // phase index; a new one starts a new bar
	step, total int64  // within the phase
	// rest are the figures after the step count, "loss ..", ".. samples/s",
	// ..., the most wanted last (the ETA): a narrow terminal drops the
	// ones before it first.
	rest []string
}

const fieldSep = "  "

// plain is the line printed where there is no terminal.
func (u progressUpdate) plain() string {
	return fmt.Sprintf("[%s] step %d/%d  %s", u.label, u.step, u.total, strings.Join(u.rest, fieldSep))
}

// bar is the line drawn on a terminal of the given width (0 = unknown): the
// same content with a bar for the step count, made to fit so that it never
// wraps (a wrapped line could not be redrawn in place): the bar narrows,
// then the figures before the last go, right to left, then the line is cut.
func (u progressUpdate) bar(width int) string {
	head := fmt.Sprintf("[%s] ", u.label)
	counter := fmt.Sprintf(" %d/%d  ", u.step, u.total)
	if width <= 0 {
		return head + renderBar(u.step, u.total, barCells) + counter + strings.Join(u.rest, fieldSep)
	}
	fields := slices.Clone(u.rest)
	length := func() int { return utf8.RuneCountInString(head + counter + strings.Join(fields, fieldSep)) }
	for len(fields) > 1 && length()+minBarCells > width-1 {
		fields = slices.Delete(fields, len(fields)-2, len(fields)-1)
	}
	cells := min(max(width-1-length(), minBarCells), maxBarCells)
	line := head + renderBar(u.step, u.total, cells) + counter + strings.Join(fields, fieldSep)
	return strings.TrimRight(cutRunes(line, width-1), " ")
}

// renderBar draws done of total as cells cells, full ones first.
func renderBar(done, total int64, cells int) string {
	if cells <= 0 {
		return ""
	}
	filled := 0
	if total > 0 {
		filled = int(min(max(done, 0), total) * int64(cells) / total)
	}
	return strings.Repeat("█", filled) + strings.Repeat("░", cells-filled)
}

func cutRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// progressLine is where progress goes. On a terminal it keeps one bar per
// phase, redrawn in place with \r, and the log lines written through it
// (see captureLog) erase the bar and redraw it below themselves, so the two
// never mix. Anywhere else every update is a plain line, as log files and
// collectors want. A nil *progressLine prints nothing.
type progressLine struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	width func() int     // terminal columns, 0 if unknown
	shown string         // the bar on screen, without newline; "" if none
	last  progressUpdate // the update it shows
}

// newProgressLine prints to w, with bars if w is a terminal. A nil w
// gives nil: no progress.
func newProgressLine(w io.Writer) *progressLine {
	if w == nil {
		return nil
	}
	l := &progressLine{w: w, width: func() int { return 0 }}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		l.tty = true
		l.width = func() int { return terminalWidth(f) }
	}
	return l
}

// every is the shortest time between two updates worth printing.
func (l *progressLine) every() time.Duration {
	if l != nil && l.tty {
		return barEvery
	}
	return plainEvery
}

// print shows an update: the phase's bar redrawn, or a new bar on a new
// line for a new phase; a plain line where there is no terminal.
func (l *progressLine) print(u progressUpdate) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.tty {
		fmt.Fprintln(l.w, u.plain())
		return
	}
	const redraw = "\r\x1b[K" // back to the line's start, erase it
	prefix := redraw
	if l.shown != "" && u.phase != l.last.phase {
		// The previous phase's bar stays on screen; one that moved on
		// finished it, whose last steps no update showed.
		if u.phase > l.last.phase && l.last.step < l.last.total {
			end := l.last
			end.step = end.total
			io.WriteString(l.w, redraw+end.bar(l.width()))
		}
		prefix = "\n"
	}
	l.shown, l.last = u.bar(l.width()), u
	io.WriteString(l.w, prefix+l.shown)
}

// finish ends the bar's line, so that what is printed next starts on its
// own; call it before printing anything else to the same terminal.
func (l *progressLine) finish() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown != "" {
		io.WriteString(l.w, "\n")
		l.shown = ""
	}
}

// Write writes log output (whole lines): on a terminal, in place of the bar,
// which is redrawn after it.
func (l *progressLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown == "" {
		return l.w.Write(p)
	}
	if _, err := io.WriteString(l.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	n, err := l.w.Write(p)
	if err != nil {
		return n, err
	}
	_, err = io.WriteString(l.w, l.shown)
	return n, err
}

// captureLog sends log lines, of slog's default and JSON handlers (see
// redirectLog), through the bar's terminal until the returned func
// restores them. Without a terminal nothing changes.
func (l *progressLine) captureLog() (restore func()) {
	if l == nil || !l.tty {
		return func() {}
	}
	restoreLog := redirectLog(l)
	return func() {
		l.finish()
		restoreLog()
	}
}

// isTerminal reports whether f is a terminal that can redraw a line:
// TERM=dumb cannot.
func isTerminal(f *os.File) bool {
	if os.Getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
