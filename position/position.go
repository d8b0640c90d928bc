// Package position owns the one coordinate of a run's progress, (phase,
// step), that the coordinator, the trainers, the job state, the dashboard
// and the wire all speak: its ordering, its canonical form and the checks
// that a position is possible in a run of a given shape.
package position

import "fmt"

// Position is how far a run is: Step optimiser steps of phase Phase have
// been applied. A finished phase p is written {p+1, 0}, so the end of a run
// of n phases is {n, 0}. Positions compare lexicographically.
type Position struct {
	Phase int   `json:"phase"`
	Step  int64 `json:"step"`
}

// Compare orders p and q by phase, then step: -1, 0 or +1.
func (p Position) Compare(q Position) int {
	switch {
	case p.Phase < q.Phase:
		return -1
	case p.Phase > q.Phase:
		return 1
	case p.Step < q.Step:
		return -1
	case p.Step > q.Step:
		return 1
	}
	return 0
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

func (p Position) String() string { return fmt.Sprintf("phase %d step %d", p.Phase, p.Step) }

// Layout is the shape of a run: Phases phases of StepsPerPhase steps each.
type Layout struct {
	Phases        int
	StepsPerPhase int64
}

// End is the position of a finished run: {Phases, 0}.
func (l Layout) End() Position { return Position{Phase: l.Phases} }

// Normalize checks that p lies inside the run and writes a finished phase
// {p, StepsPerPhase} as {p+1, 0}, so that equal positions compare equal
// however a peer spells them. Anything else outside the run is an error:
// a negative field, more steps than a phase has, or a position past the
// end.
func (l Layout) Normalize(p Position) (Position, error) {
	if p.Phase < 0 || p.Step < 0 {
		return p, fmt.Errorf("position %v is negative", p)
	}
	if p.Step > l.StepsPerPhase {
		return p, fmt.Errorf("position %v has more than the %d steps of a phase", p, l.StepsPerPhase)
	}
	if p.Step == l.StepsPerPhase {
		p = Position{Phase: p.Phase + 1}
	}
	if l.End().Less(p) {
		return p, fmt.Errorf("position %v is beyond the end %v", p, l.End())
	}
	return p, nil
}

// Check says whether p is a position of the run in canonical form, as
// Normalize writes it.
func (l Layout) Check(p Position) error {
	switch {
	case p.Phase < 0 || p.Phase > l.Phases:
		return fmt.Errorf("position %v: phase outside 0..%d", p, l.Phases)
	case p.Step < 0 || p.Step >= l.StepsPerPhase:
		return fmt.Errorf("position %v: step outside 0..%d", p, l.StepsPerPhase-1)
	case p.Phase == l.Phases && p.Step != 0:
		return fmt.Errorf("position %v: past the end of the run", p)
	}
	return nil
}
