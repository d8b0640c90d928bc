// Package job owns the step-by-step state of one training run as every
// trainer replica holds it: where the run is (phase, step), the networks,
// Adam moments and EMA shadows, and the loss history; how one step's local
// gradient is computed on the virtual shards a replica owns and how the
// summed gradient is applied; and the byte encoding of that state, which is
// both a checkpoint and what a replica broadcasts to the others when a ring
// re-forms. It does no I/O: cache shards come from a ShardSource the caller
// supplies, and bytes go wherever the caller sends them.
//
// The state after step s depends only on the config and s (and, through
// float summation order, on how shards are split across replicas), so a
// replica restored from any snapshot at s continues exactly as the replica
// that wrote it would have.
package job

import (
	"fmt"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/storage"
)

// SIShards is the number of virtual shards an interpolant batch is cut
// into: rows [i*B/S, (i+1)*B/S) form shard i. It is a constant, not a
// config field, because the split only decides who computes which rows.
const SIShards = 16

// Position is how far a run is: Step optimiser steps of phase Phase are
// applied. A finished phase p is written {p+1, 0}; the run ends at
// {Phases, 0}.
type Position struct {
	Phase int
	Step  int64
}

// Less orders positions by phase, then step.
func (p Position) Less(q Position) bool {
	if p.Phase != q.Phase {
		return p.Phase < q.Phase
	}
	return p.Step < q.Step
}

func (p Position) String() string { return fmt.Sprintf("phase %d step %d", p.Phase, p.Step) }

// Job is the run a config describes, split into phases of steps.
type Job struct {
	Setup *experiment.Setup
	Hash  string

	method string
	phases int
	steps  int64
	shards int
	batch  int

	dsbOpts dsb.Options
	chain   *dsb.Chain
	siOpts  si.Options
}

// New validates cfg and derives the run's phases.
func New(cfg *config.Config) (*Job, error) {
	setup, err := experiment.Prepare(cfg)
	if err != nil {
		return nil, err
	}
	j := &Job{Setup: setup, Hash: cfg.Hash(), method: cfg.Method, steps: int64(cfg.Train.Steps), batch: cfg.Train.Batch}
	switch cfg.Method {
	case "dsb":
		if j.dsbOpts, err = setup.DSBOptions(); err != nil {
			return nil, err
		}
		if j.chain, err = j.dsbOpts.Chain(); err != nil {
			return nil, fmt.Errorf("dsb: %w", err)
		}
		j.phases, j.shards = 2*j.dsbOpts.Iterations, j.chain.Shards
	case "si":
		if j.siOpts, err = setup.SIOptions(); err != nil {
			return nil, err
		}
		// Validates the options the way the single-process run does.
		if _, err := si.NewTrainer(j.siOpts); err != nil {
			return nil, err
		}
		j.phases, j.shards = 1, min(SIShards, cfg.Train.Batch)
	default:
		return nil, fmt.Errorf("method %q: want dsb or si", cfg.Method)
	}
	return j, nil
}

// Method is "dsb" or "si".
func (j *Job) Method() string { return j.method }

// Phases is the number of phases: 2 per IPF iteration, or 1.
func (j *Job) Phases() int { return j.phases }

// StepsPerPhase is the number of optimiser steps of every phase.
func (j *Job) StepsPerPhase() int64 { return j.steps }

// Shards is the number of virtual shards a global batch is cut into.
func (j *Job) Shards() int { return j.shards }

// Batch is the global batch size.
func (j *Job) Batch() int { return j.batch }

// End is the position of a finished run.
func (j *Job) End() Position { return Position{Phase: j.phases} }

// Normalize writes a finished phase as the start of the next.
func (j *Job) Normalize(p Position) Position {
	if p.Step >= j.steps && p.Phase < j.phases {
		return Position{Phase: p.Phase + 1}
	}
	return p
}

// Check says whether p is a position of this run.
func (j *Job) Check(p Position) error {
	switch {
	case p.Phase < 0 || p.Phase > j.phases:
		return fmt.Errorf("position %v: phase outside 0..%d", p, j.phases)
	case p.Step < 0 || p.Step >= j.steps:
		return fmt.Errorf("position %v: step outside 0..%d", p, j.steps-1)
	case p.Phase == j.phases && p.Step != 0:
		return fmt.Errorf("position %v: past the end of the run", p)
	}
	return nil
}

// dsbPhase is the IPF phase with index p.
func dsbPhase(p int) dsb.PhaseID {
	dir := dsb.Backward
	if p%2 == 1 {
		dir = dsb.Forward
	}
	return dsb.PhaseID{Iteration: p/2 + 1, Dir: dir}
}

// PhaseName names phase p for people ("ipf 2 backward", "interpolant").
func (j *Job) PhaseName(p int) string {
	if j.method == "si" {
		return "interpolant"
	}
	return dsbPhase(p).String()
}

// CheckpointMeta is what storage records about a checkpoint at p, the end
// of phase p.Phase-1 when p.Step is 0 and p.Phase > 0.
func (j *Job) CheckpointMeta(p Position) storage.Meta {
	m := storage.Meta{Phase: p.Phase, Step: p.Step, ConfigHash: j.Hash}
	if p.Step == 0 && p.Phase > 0 {
		m.Phase, m.Step, m.PhaseEnd = p.Phase-1, j.steps, true
	}
	if j.method == "si" {
		m.Direction = storage.DirectionSI
		return m
	}
	id := dsbPhase(m.Phase)
	m.IPFIteration = id.Iteration
	m.Direction = storage.DirectionBackward
	if id.Dir == dsb.Forward {
		m.Direction = storage.DirectionForward
	}
	return m
}

// PositionOf is the inverse of CheckpointMeta.
func (j *Job) PositionOf(m storage.Meta) Position {
	return j.Normalize(Position{Phase: m.Phase, Step: m.Step})
}

// ShardRange is the half-open row range [from, to) of the global batch
// that virtual shard i of an interpolant batch covers.
func (j *Job) ShardRange(i int) (from, to int) {
	return i * j.batch / j.shards, (i + 1) * j.batch / j.shards
}
