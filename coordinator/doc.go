// Package coordinator owns the run: a state machine that turns membership
// and trainer events into plans, the gRPC control service, gossip
// membership, checkpoint commits and recovery from storage. It also tells
// the run's dashboard (package dashboard, served on Options.HTTPAddr) what
// happens, and appends every progress report and commit to the run's
// metrics.jsonl in storage (see MetricsRecord and ReadMetrics). Every
// call a trainer makes is decoded into the machine's events in one place
// (decode.go) before anything acts on it.
//
// The state machine (Machine) is pure: it does no I/O, reads no clock,
// starts no goroutines and draws no random numbers. The server feeds it one
// Event at a time and carries out the Outputs it returns (publish a plan,
// log, approve or reject a commit, exit), so the same events always give the
// same outputs and every scenario can be tested without a network.
package coordinator
