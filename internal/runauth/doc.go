// Package runauth owns the run secret and what is derived from it: the
// keys of every channel of a run (gRPC control plane, memberlist gossip,
// all-reduce ring), the per-process instance ID that ties a trainer's
// control calls to its plan stream, the rule that a run without a secret
// stays on loopback, and the rate-limited log of refused attempts.
//
// # Threat model
//
// The run runs on a shared network where any process can reach any port
// (a Kubernetes cluster without network policies). The secret is given to
// the run's processes out of band (a mounted Secret, a 0600 file, or the
// environment of a child process), never on a command line and never in a
// log. Each channel's key is HKDF-SHA256 of the secret with a label of its
// own, so a key leaked from one channel opens none of the others.
//
// An attacker on the network without the secret can:
//   - connect to every port, and have the connection refused (gRPC during
//     the TLS handshake, gossip packets dropped by memberlist's label and
//     AES-GCM check, ring links at the challenge-response), which costs the
//     run a handshake and a rate-limited log line;
//   - see the gossip and ring traffic and its timing if it can capture
//     packets: ring payloads (gradients) and frame headers are not
//     encrypted, gossip and gRPC are;
//   - cut connections it sits on the path of (a reset), which the run
//     treats like a failed peer: a re-plan, never a wrong step.
//
// It cannot: call any control method (Follow, Report, Commit, Status), read
// or alter plans, join the gossip, take shards or become rank 0, open a
// ring link, or replay a captured handshake (both ends contribute a fresh
// nonce). Splicing frames into an established ring connection needs the
// attacker on the path (off the path, TCP sequence numbers and RFC 5961
// checks stop blind injection), and one that is on the path can already cut
// the link; the ring therefore authenticates the connection once, mutually,
// instead of paying a MAC over every payload byte.
//
// A process that holds the secret is trusted as a member of the run. What
// such a process sends is still checked for being possible before it is
// adopted (generation window, position within the run and the plan), and a
// trainer's plan stream can be superseded only by the process that opened
// it (its instance ID), so a second process started with the same trainer
// ID waits for the first to go instead of stealing its stream.
//
// # gRPC: TLS rather than a per-RPC token
//
// The control plane uses mutual TLS 1.3 with an Ed25519 certificate whose
// key is derived from the secret: both ends present it and each checks that
// the other's public key is the derived one, which proves the peer holds the
// secret. A per-RPC HMAC token (HMAC-SHA256 over method, timestamp and
// nonce, a clock-skew window and a replay cache) was measured against it
// (BenchmarkUnaryRPC in this package) and costs about the same per call on a
// kept-alive connection, but it authenticates only requests: the plans the
// coordinator streams back would travel unauthenticated, and the token
// needs synchronized clocks. TLS authenticates both directions, encrypts,
// needs no clock, and its one extra cost is the handshake per connection,
// which a trainer pays once per coordinator.
package runauth
