// Package api is the coordinator-trainer control protocol: protobuf
// messages and generated gRPC stubs; regenerate with make proto.
//
// control.proto is the source of truth; control.pb.go and control_grpc.pb.go
// are generated from it and must not be edited by hand. This file holds the
// few hand-written helpers the generated types lack.
package api

import "github.com/sbtrain/sbtrain/position"

// FromPosition is the wire form of p. Positions the sender holds were
// checked against the run's layout, whose phase count config bounds far
// below int32.
func FromPosition(p position.Position) *Position {
	return &Position{Phase: int32(p.Phase), Step: p.Step}
}

// ToPosition is the position a wire message carries; nil is the start of
// the run, {0, 0}, which is what an unset field means. It is not checked:
// the receiver normalises it against its run's layout.
func (p *Position) ToPosition() position.Position {
	return position.Position{Phase: int(p.GetPhase()), Step: p.GetStep()}
}

// NewPosition builds the wire form of a run position: step optimiser steps
// of phase phase applied. Callers keep positions as plain (int, int64)
// pairs, so the narrowing to the wire's int32 phase happens here, once.
func NewPosition(phase int, step int64) *Position {
	return &Position{Phase: int32(phase), Step: step}
}

// Less reports whether p comes before q, by phase then step. A nil position
// is the start of the run, {0, 0}, which is what an unset message field
// means on the wire.
func (p *Position) Less(q *Position) bool {
	return p.ToPosition().Less(q.ToPosition())
}
