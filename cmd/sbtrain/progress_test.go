package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/job"
)

func TestRenderBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		cells       int
		want        string
	}{
		{0, 100, 10, "░░░░░░░░░░"},
		{1, 100, 10, "░░░░░░░░░░"}, // full cells only: 100% only when done
		{50, 100, 10, "█████░░░░░"},
		{99, 100, 10, "█████████░"},
		{100, 100, 10, "██████████"},
		{612, 1000, 10, "██████░░░░"},
		{150, 100, 4, "████"}, // past the end: full, no more
		{-3, 100, 4, "░░░░"},
		{5, 0, 4, "░░░░"}, // no steps known
		{5, 10, 0, ""},
	} {
		if got := renderBar(tc.done, tc.total, tc.cells); got != tc.want {
			t.Errorf("renderBar(%d, %d, %d) = %q, want %q", tc.done, tc.total, tc.cells, got, tc.want)
		}
	}
}

func TestProgressUpdateLines(t *testing.T) {
	u := progressUpdate{label: "ipf 2 backward 3/4", phase: 2, step: 612, total: 1000,
		rest: []string{"loss 0.0345", "18000 samples/s", "3 workers", "all-reduce 60%", "gen 7", "elapsed 12s", "ETA 9s"}}
	// The plain line is the one printed before bars existed.
	if got, want := u.plain(), "[ipf 2 backward 3/4] step 612/1000  loss 0.0345  18000 samples/s  3 workers  all-reduce 60%  gen 7  elapsed 12s  ETA 9s"; got != want {
		t.Errorf("plain line\n got %q\nwant %q", got, want)
	}
	// The narrowest terminal that shows the whole line with no bar at all.
	fits := utf8.RuneCountInString("[ipf 2 backward 3/4]  612/1000  "+strings.Join(u.rest, "  ")) + 1
	for _, tc := range []struct {
		name  string
		width int
		want  string
	}{
		{"unknown width: the default bar", 0,
			"[ipf 2 backward 3/4] ████████████░░░░░░░░ 612/1000  loss 0.0345  18000 samples/s  3 workers  all-reduce 60%  gen 7  elapsed 12s  ETA 9s"},
		{"wide terminal: the widest bar", 200,
			"[ipf 2 backward 3/4] ██████████████████░░░░░░░░░░░░ 612/1000  loss 0.0345  18000 samples/s  3 workers  all-reduce 60%  gen 7  elapsed 12s  ETA 9s"},
		{"the bar narrows to fit", fits + 15,
			"[ipf 2 backward 3/4] █████████░░░░░░ 612/1000  loss 0.0345  18000 samples/s  3 workers  all-reduce 60%  gen 7  elapsed 12s  ETA 9s"},
		{"then figures before the ETA go", fits + 5,
			"[ipf 2 backward 3/4] ███████████░░░░░░░ 612/1000  loss 0.0345  18000 samples/s  3 workers  all-reduce 60%  gen 7  ETA 9s"},
		{"down to the ETA alone", 60,
			"[ipf 2 backward 3/4] ████████████░░░░░░░░░ 612/1000  ETA 9s"},
		{"then the line is cut", 30,
			"[ipf 2 backward 3/4] ██████░░"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := u.bar(tc.width)
			if got != tc.want {
				t.Errorf("bar line\n got %q\nwant %q", got, tc.want)
			}
			if n := utf8.RuneCountInString(got); tc.width > 0 && n > tc.width-1 {
				t.Errorf("bar line of %d columns on a terminal of %d would wrap", n, tc.width)
			}
		})
	}
}

// fakeTerminal is a progressLine as on a terminal of the given width,
// writing into a buffer.
func fakeTerminal(width int) (*progressLine, *bytes.Buffer) {
	var buf bytes.Buffer
	return &progressLine{w: &buf, tty: true, width: func() int { return width }}, &buf
}

func TestProgressLineRedrawsInPlace(t *testing.T) {
	update := func(phase int, step int64) progressUpdate {
		return progressUpdate{label: "p", phase: phase, step: step, total: 4, rest: []string{"loss 1"}}
	}
	for _, tc := range []struct {
		name string
		do   func(l *progressLine)
		want string
	}{
		{"one phase redrawn", func(l *progressLine) {
			l.print(update(0, 1))
			l.print(update(0, 2))
			l.finish()
		}, "\r\x1b[K[p] █████░░░░░░░░░░░░░░░ 1/4  loss 1" +
			"\r\x1b[K[p] ██████████░░░░░░░░░░ 2/4  loss 1\n"},
		{"a new phase on a new line", func(l *progressLine) {
			l.print(update(0, 4))
			l.print(update(1, 1))
			l.finish()
			l.finish() // once only
		}, "\r\x1b[K[p] ████████████████████ 4/4  loss 1" +
			"\n[p] █████░░░░░░░░░░░░░░░ 1/4  loss 1\n"},
		{"a phase left part-drawn ends full", func(l *progressLine) {
			l.print(update(0, 1))
			l.print(update(1, 2))
			l.print(update(0, 3)) // back to an earlier phase: nothing ended
			l.finish()
		}, "\r\x1b[K[p] █████░░░░░░░░░░░░░░░ 1/4  loss 1" +
			"\r\x1b[K[p] ████████████████████ 4/4  loss 1" +
			"\n[p] ██████████░░░░░░░░░░ 2/4  loss 1" +
			"\n[p] ███████████████░░░░░ 3/4  loss 1\n"},
		{"a log line erases the bar and redraws it below", func(l *progressLine) {
			l.Write([]byte("log before any bar\n"))
			l.print(update(0, 1))
			l.Write([]byte("INFO checkpoint committed\n"))
			l.finish()
			l.Write([]byte("log after\n"))
		}, "log before any bar\n" +
			"\r\x1b[K[p] █████░░░░░░░░░░░░░░░ 1/4  loss 1" +
			"\r\x1b[KINFO checkpoint committed\n[p] █████░░░░░░░░░░░░░░░ 1/4  loss 1" +
			"\nlog after\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, buf := fakeTerminal(0)
			tc.do(l)
			if got := buf.String(); got != tc.want {
				t.Errorf("terminal got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestProgressLineWithoutTerminal(t *testing.T) {
	var buf bytes.Buffer
	l := newProgressLine(&buf)
	if l.tty || l.every() != plainEvery {
		t.Fatalf("a buffer taken for a terminal")
	}
	l.print(progressUpdate{label: "interpolant 1/1", step: 3, total: 9, rest: []string{"loss 2"}})
	l.finish()
	if got, want := buf.String(), "[interpolant 1/1] step 3/9  loss 2\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	var none *progressLine = newProgressLine(nil)
	none.print(progressUpdate{})
	none.finish()
	none.captureLog()()
}

// The local run's printer on a terminal: the report at the start of a
// phase ends the previous phase's bar at 100%, and the next phase gets its
// own bar on a new line.
func TestStatusPrinterBars(t *testing.T) {
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	j, err := job.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	steps := j.StepsPerPhase()
	p := newStatusPrinter(nil, j)
	var buf bytes.Buffer
	p.out = &progressLine{w: &buf, tty: true, width: func() int { return 0 }}
	report := func(phase int32, step int64) {
		p.last = time.Time{} // every report printed, however fast they come
		p.print(&api.RunStatus{Generation: 9, Members: []*api.MemberStatus{
			{TrainerId: "trainer-0", Position: &api.Position{Phase: phase, Step: step}, Loss: 0.5, SamplesPerSec: 100},
		}})
	}
	report(0, steps/2)
	report(1, 0)
	report(1, 1)
	p.finish()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines (phase 1's bar, phase 2's), got %q", buf.String())
	}
	first := lines[0][strings.LastIndex(lines[0], "\r\x1b[K")+len("\r\x1b[K"):]
	wantFirst := "[" + j.PhaseName(0) + " 1/" + strconv.Itoa(j.Phases()) + "] " + strings.Repeat("█", barCells) + " " + strconv.FormatInt(steps, 10) + "/" + strconv.FormatInt(steps, 10) + "  loss 0.5"
	if !strings.HasPrefix(first, wantFirst) {
		t.Errorf("phase 1's final bar\n got %q\nwant %q...", first, wantFirst)
	}
	wantSecond := "[" + j.PhaseName(1) + " 2/" + strconv.Itoa(j.Phases()) + "] "
	if !strings.HasPrefix(lines[1], wantSecond) || !strings.Contains(lines[1], " 1/"+strconv.FormatInt(steps, 10)+"  ") {
		t.Errorf("phase 2's bar %q, want it to start %q at step 1", lines[1], wantSecond)
	}
}
