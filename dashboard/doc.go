// Package dashboard owns a run's HTTP face: one page (HTML, script and
// style embedded in the binary, nothing fetched from outside), its JSON
// (/api/status), server-sent events pushing the same JSON on change
// (/events), the latest samples plot (/samples.png), Prometheus metrics
// (/metrics) and a liveness check (/healthz).
//
// It is read-only: every route is a GET, nothing a request says changes
// the run. With Options.Token every request but /healthz needs the bearer
// token (a header, or a cookie set by opening /?token=...); the
// coordinator binds it to loopback unless told otherwise.
//
// It does no training math and reads no storage. The coordinator tells it
// facts as they happen, through PlanPublished, MemberJoined, MemberLeft,
// Progress and CheckpointCommitted, and the command that runs the
// coordinator hands it a rendered samples plot through SetSamples. Each of
// those takes a lock briefly and returns, so the coordinator can call them
// from its event loop. History is bounded: every phase keeps at most
// MaxLossPoints loss points (thinned evenly beyond that), the plan timeline
// its newest MaxTimeline entries, and at most MaxGoneMembers departed
// members are remembered.
//
// # Metrics
//
// /metrics serves a registry of the dashboard's own (never the global
// one), in base units. Labels are bounded: trainer is a trainer ID, phase a
// phase index of the run.
//
//	sbtrain_step_duration_seconds{trainer}        histogram of optimiser step wall time (each step of a progress report is observed at that report's mean)
//	sbtrain_samples_per_second{trainer}           gauge, the trainer's latest rate (every member counts the global batch of each step)
//	sbtrain_loss{phase}                           gauge, the latest global training loss of the phase
//	sbtrain_steps_total{trainer}                  counter of optimiser steps the trainer applied
//	sbtrain_allreduce_duration_seconds_total{trainer} counter of seconds spent in gradient all-reduces
//	sbtrain_allreduce_bytes_total{trainer}        counter of payload bytes the trainer sent in all-reduces
//	sbtrain_checkpoint_duration_seconds           histogram of checkpoint cost: blob write plus commit
//	sbtrain_checkpoint_bytes_total                counter of committed checkpoint blob bytes
//	sbtrain_checkpoints_total                     counter of committed checkpoints
//	sbtrain_members                               gauge, trainers currently in the run
//	sbtrain_generation                            gauge, generation of the newest plan
//	sbtrain_phase                                 gauge, index of the phase in progress (the phase count once done)
//	sbtrain_member_up{trainer}                    gauge, 1 while the trainer is a member, 0 once it has left
//
// A trainer that leaves keeps its series, with sbtrain_member_up at 0; only
// when more than MaxGoneMembers trainers have left are the oldest forgotten
// and their series deleted. The registry also carries the standard Go and
// process collectors.
//
// # Page
//
// The page is one document driven by /events (with /api/status as its
// first read and fallback). For tests and tools it marks its state in the
// DOM: every member row is a tr with data-member-row, data-member-id and
// data-state ("live" or "gone"); the loss canvas #loss-canvas carries
// data-loss-points (points drawn); the root element carries data-run-state,
// data-generation and data-updates (status documents received).
package dashboard
