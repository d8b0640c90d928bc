// Package allreduce owns the collective operations of data-parallel
// training: a ring all-reduce of a []float32 (sum and mean) or of an
// []int64 (sum and max), Broadcast from a root (float32 or raw bytes) and
// Barrier, over a Transport that is either in memory (tests, with fault
// injection) or TCP between processes.
//
// The int64 sum is what makes a gradient sum independent of who holds
// which terms: integer addition is associative, so any split and any
// ring order give the same bits (see internal/fixedsum, which turns
// float32 terms into such integers with a scale agreed by the int64 max).
// Both int64 operations travel in frames of their own operation kinds,
// with the framing, checks, deadlines and authentication of the float32
// all-reduce; each element is 8 bytes on the wire.
//
// # Algorithm
//
// The N members form a ring: each one sends only to the next rank and
// receives only from the previous one. The buffer of L elements is cut into
// N chunks. In the reduce-scatter phase (N-1 steps) member r sends chunk
// r-s at step s and adds the chunk r-s-1 it receives into its own buffer;
// after it, member r holds the full sum of chunk r+1. In the all-gather
// phase (N-1 more steps) each finished chunk travels once around the ring
// and overwrites the stale copies, so every member ends with bitwise the same
// result (each element was summed by exactly one member).
//
// Bandwidth: every member sends 2(N-1) chunks of L/N elements, 2(N-1)/N of
// the buffer, independent of N; a link carries the same, so the operation
// time tends to 2(N-1)/N · L·4 bytes / link bandwidth. That is why the
// benchmark reports busbw = algbw · 2(N-1)/N, comparable to one TCP stream.
//
// Each chunk is cut into segments (Config.SegmentBytes) and every segment is
// forwarded as soon as it is added, so the sender goroutine writes segment i
// of step s+1 while the operation goroutine reads and adds segment i+1 of
// step s: sending, receiving and adding overlap. Sends never block the
// receiving goroutine (an unbounded per-ring queue), which rules out the
// cyclic wait where every member blocks writing to a full socket.
//
// # Failures
//
// Every frame carries (generation, operation sequence, step, segment, total
// length) and a CRC-32C of its header (of its payload too with
// Config.PayloadChecksum). A frame of an older
// generation is dropped; one of a newer generation aborts the operation with
// a *GenerationError. Any other mismatch (length, operation, order, corrupt
// or truncated frame) is a *PeerError naming the member and what differed,
// never a wrong sum. For as long as its ring is open a member sends
// heartbeats downstream when it has nothing else to send, inside
// operations and between them, so a member waiting on its previous peer
// can tell "peer is alive and waiting on its own previous peer" or "peer
// is alive and still busy before this operation" from "peer is dead or
// silent": silence for Config.Deadline is blamed on the previous peer, and
// so is a live peer that has not entered the operation Config.SkewLimit
// after this member did. The member that detects a failure sends an
// abort frame naming the culprit downstream, so every survivor returns a
// *PeerError naming the same member within the deadline plus one trip
// around the ring. After an error the ring is broken for good: build a new
// one, with a newer generation, from the survivors.
//
// On error the buffer holds a partial result and must not be used.
//
// # Transport
//
// The data plane is raw TCP, one connection per ring link, with a
// 64-byte frame header written together with the payload by writev. On a
// loopback measurement (BenchmarkLoopbackStreamTCP vs
// BenchmarkLoopbackStreamGRPC, 1 MiB messages, 2 cores) a gRPC stream with
// a pass-through codec moved data at one third to two thirds of the raw
// socket's rate, and it copies every message once more, so gRPC is kept
// for the control plane only. The handshake of each link carries (run,
// generation, ring size, both ranks, both member IDs) and is checked on
// both ends; buffer lengths are checked on every frame. With a key
// (ListenOptions.Key) the handshake is a mutual challenge-response,
// HMAC-SHA256 over both ends' fresh nonces and the hello, checked before any
// of its fields is trusted; a hello whose generation is implausibly far ahead
// of what the endpoint knows (ListenOptions.MaxGenerationLead,
// Endpoint.Observe) is refused either way, so a forged hello cannot break
// the run's later rings.
//
// Received segments are added with an AVX2 (or SSE) kernel on amd64
// (add_amd64.s; the purego build tag or another architecture selects the
// portable loop). Headers and payloads are read with exact lengths straight
// from the connection, never through a read buffer: an all-gather payload
// lands in the caller's buffer, a reduce-scatter one in a 256 KiB scratch
// piece that is added while still in the cache.
//
// On Linux the TCP data path reads and writes through syscall.RawConn with
// raw system calls on the non-blocking sockets (rawio_linux.go): such a
// read or writev only copies, so the scheduler need not know about it, and
// waiting for data or for room still parks in the netpoller under the
// connection's deadlines. Through net.Conn every copy of a few hundred KiB
// outlasts a sysmon tick, so sysmon takes the P away, wakes another thread
// for it and keeps polling every 20µs: with one P per member process that
// was about a tenth of the CPU (7.9% in sysmon alone with 4 members on 2
// cores) and a thread switch per segment. With the raw calls a member runs
// on one thread; context switches in a 65-operation run at 64 MiB fell
// from 34k to 12k (N=2) and from 97k to 15k (N=4), and busbw rose from
// 1.96 to 2.29 GB/s with 2 members and from 0.91 to 1.04 GB/s with 4
// (medians of interleaved runs, together with the exact reads, on a 2-core
// machine).
//
// Members that share a machine should each be bound to their own cores
// (sbtrain's local cluster and benchmark do it, see internal/cpuset): left
// to the scheduler, a member keeps moving between cores, and each move
// leaves its loopback packets and cache lines behind. With 4 members on 2
// cores, binding raised busbw at 64 MiB from 1.01 to 1.24 GB/s (medians of
// 5 interleaved runs).
//
// The float32 data travel as their in-memory bytes (an unsafe.Slice view),
// so all members must share the byte order; NewRing refuses big-endian
// machines.
package allreduce
