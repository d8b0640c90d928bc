// Package job owns the step-by-step state of one training run as every
// trainer replica holds it: where the run is (phase, step), the method's
// state (networks, Adam moments, EMA shadows, through method.State, the
// same interface `sbtrain train` drives) and the loss history; how one
// step's local gradient is computed on the virtual shards a replica owns
// and how the summed gradient is applied; the byte encoding of that state,
// which is both a checkpoint and what a replica broadcasts to the others
// when a ring re-forms; loading that state from a run's checkpoints; and
// the concluding evaluation of a distributed run, which writes the same
// figures as `sbtrain train`. Cache shards come from a ShardSource the
// caller supplies, and bytes go wherever the caller sends them.
//
// The state after step s depends only on the config and s, not on how
// shards are split across replicas (State.Sum sums in fixed point), so a
// replica restored from any snapshot at s continues exactly as the replica
// that wrote it would have, in a ring of any size.
package job

import (
	"fmt"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/position"
	"github.com/sbtrain/sbtrain/storage"
)

// SIShards is the number of virtual shards an interpolant batch is cut
// into (see method.SIShards).
const SIShards = method.SIShards

// Position is how far a run is (package position owns its rules).
type Position = position.Position

// Job is the run a config describes, split into phases of steps.
type Job struct {
	Setup *experiment.Setup
	Hash  string
	// Workers bounds the goroutines that simulate cache shards; 0 means
	// one per core. The shards are the same bytes for any value.
	Workers int

	method method.Method
	phases []method.Phase
}

// New validates cfg and derives the run's phases.
func New(cfg *config.Config) (*Job, error) {
	setup, err := experiment.Prepare(cfg)
	if err != nil {
		return nil, err
	}
	m, err := setup.Method()
	if err != nil {
		return nil, err
	}
	return &Job{Setup: setup, Hash: cfg.Hash(), method: m, phases: m.Phases()}, nil
}

// Method is the config's method, "dsb", "si" or "dsbm".
func (j *Job) Method() string { return j.method.Name() }

// Core is the run's training method, which the job's states drive.
func (j *Job) Core() method.Method { return j.method }

// Phases is the number of phases: 2 per IPF iteration, or 1.
func (j *Job) Phases() int { return len(j.phases) }

// StepsPerPhase is the number of optimiser steps of every phase.
func (j *Job) StepsPerPhase() int64 { return j.method.StepsPerPhase() }

// Shards is the number of virtual shards a global batch is cut into.
func (j *Job) Shards() int { return j.method.Shards() }

// Batch is the global batch size.
func (j *Job) Batch() int { return j.method.Batch() }

// Layout is the run's shape, whose rules every position of it follows.
func (j *Job) Layout() position.Layout {
	return position.Layout{Phases: len(j.phases), StepsPerPhase: j.StepsPerPhase()}
}

// End is the position of a finished run.
func (j *Job) End() Position { return j.Layout().End() }

// Normalize writes a finished phase as the start of the next; a position
// outside the run is an error.
func (j *Job) Normalize(p Position) (Position, error) { return j.Layout().Normalize(p) }

// Check says whether p is a position of this run in canonical form.
func (j *Job) Check(p Position) error { return j.Layout().Check(p) }

// PhaseName names phase p for people ("ipf 2 backward", "interpolant").
func (j *Job) PhaseName(p int) string {
	if p < 0 || p >= len(j.phases) {
		return fmt.Sprintf("phase %d", p)
	}
	return j.phases[p].Name
}

// CheckpointMeta is what storage records about a checkpoint at p, the end
// of phase p.Phase-1 when p.Step is 0 and p.Phase > 0.
func (j *Job) CheckpointMeta(p Position) storage.Meta {
	m := storage.Meta{Phase: p.Phase, Step: p.Step, ConfigHash: j.Hash}
	if p.Step == 0 && p.Phase > 0 {
		m.Phase, m.Step, m.PhaseEnd = p.Phase-1, j.StepsPerPhase(), true
	}
	if m.Phase >= 0 && m.Phase < len(j.phases) {
		ph := j.phases[m.Phase]
		m.IPFIteration, m.Direction = ph.Iteration, ph.Direction
	}
	return m
}

// PositionOf is the inverse of CheckpointMeta; metadata naming no position
// of this run is an error.
func (j *Job) PositionOf(m storage.Meta) (Position, error) {
	return j.Normalize(Position{Phase: m.Phase, Step: m.Step})
}
