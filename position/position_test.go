package position

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	cases := []struct {
		p, q Position
		want int
	}{
		{Position{Phase: 0, Step: 0}, Position{Phase: 0, Step: 0}, 0},
		{Position{Phase: 0, Step: 5}, Position{Phase: 1, Step: 0}, -1},
		{Position{Phase: 2, Step: 0}, Position{Phase: 1, Step: 99}, 1},
		{Position{Phase: 1, Step: 3}, Position{Phase: 1, Step: 4}, -1},
		{Position{Phase: 1, Step: 4}, Position{Phase: 1, Step: 3}, 1},
	}
	for _, c := range cases {
		if got := c.p.Compare(c.q); got != c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.p, c.q, got, c.want)
		}
		if got := c.p.Less(c.q); got != (c.want < 0) {
			t.Errorf("%v.Less(%v) = %v", c.p, c.q, got)
		}
	}
}

func TestNormalizeAndCheck(t *testing.T) {
	l := Layout{Phases: 4, StepsPerPhase: 100}
	cases := []struct {
		in, want Position
		err      string // Normalize's error, "" for none
	}{
		{Position{Phase: 0, Step: 0}, Position{Phase: 0, Step: 0}, ""},
		{Position{Phase: 1, Step: 99}, Position{Phase: 1, Step: 99}, ""},
		{Position{Phase: 1, Step: 100}, Position{Phase: 2, Step: 0}, ""}, // a finished phase is the next one's start
		{Position{Phase: 3, Step: 100}, Position{Phase: 4, Step: 0}, ""}, // the end
		{Position{Phase: 4, Step: 0}, Position{Phase: 4, Step: 0}, ""},
		{Position{Phase: 4, Step: 1}, Position{}, "beyond the end"},
		{Position{Phase: 5, Step: 0}, Position{}, "beyond the end"},
		{Position{Phase: 1, Step: 101}, Position{}, "more than the 100 steps"},
		{Position{Phase: -1, Step: 0}, Position{}, "negative"},
		{Position{Phase: 0, Step: -1}, Position{}, "negative"},
	}
	for _, c := range cases {
		got, err := l.Normalize(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Normalize(%v) error %v, want one containing %q", c.in, err, c.err)
			}
			if l.Check(c.in) == nil {
				t.Errorf("Check(%v) accepts what Normalize refuses", c.in)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Normalize(%v) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if err := l.Check(got); err != nil {
			t.Errorf("Check(Normalize(%v) = %v): %v", c.in, got, err)
		}
		if again, _ := l.Normalize(got); again != got {
			t.Errorf("Normalize is not idempotent on %v: %v", got, again)
		}
	}
	if err := l.Check(Position{Phase: 1, Step: 100}); err == nil {
		t.Error("Check accepts a finished phase not written as the next one's start")
	}
	if l.End() != (Position{Phase: 4, Step: 0}) {
		t.Errorf("End %v", l.End())
	}
}
