// Package coordinator owns the run: a state machine that turns membership
// and trainer events into plans, the gRPC control service, gossip
// membership, checkpoint commits and recovery from storage. It also tells
// the run's dashboard (package dashboard, served on Options.HTTPAddr) what
// happens, and appends every progress report and commit to the run's
// metrics.jsonl in storage (see MetricsRecord and ReadMetrics). Every
// call a trainer makes is decoded into the machine's events in one place
// (decode.go) before anything acts on it.
//
// With a run secret (Options.Secret) the control service takes only mutual
// TLS connections with the secret's certificate and gossip only the
// secret's key; a trainer's plan stream, reports and commits are bound to
// the process that opened the stream (runauth.InstanceHeader). Whatever a
// caller sends is checked for being possible before the machine adopts it:
// generations within GenerationWindow of the counter, positions inside the
// run and not behind where the member already was.
//
// The coordinator commits only under the run's lease, fenced with its
// generation (storage.Checkpoints.Fence). When the lease is lost or lapses,
// or rank 0 reports that storage has refused its checkpoint for too long,
// the machine is suspended: every trainer is paused and no commit is
// accepted until the lease is taken back (or storage answers); if another
// coordinator took the run over, this one exits naming it.
//
// The state machine (Machine) is pure: it does no I/O, reads no clock,
// starts no goroutines and draws no random numbers. The server feeds it one
// Event at a time and carries out the Outputs it returns (publish a plan,
// log, approve or reject a commit, exit), so the same events always give the
// same outputs and every scenario can be tested without a network.
package coordinator
