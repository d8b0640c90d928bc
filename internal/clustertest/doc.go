// Package clustertest owns the in-process cluster harness the fault tests
// run on: a coordinator and N trainers in one test process, with the ring
// on allreduce's in-memory network, gossip on a GossipNet (an in-memory
// memberlist transport that can be partitioned, made lossy and slow,
// killed and fed forged packets), gRPC on 127.0.0.1 and a file store in a
// temporary directory. Faults go in through those transports, never
// through the code under test; the harness then asserts on what the run
// leaves behind: the coordinator's status, the checkpoints in the store
// and the replicas' parameters after every step.
//
// It imports both coordinator and trainer, which must not import each
// other, so it is a package of its own rather than a testing file of
// either; it is internal because only the project's tests use it. Its
// schedule test (seeded random fault schedules) and the control-plane
// benchmark live in its _test files.
package clustertest
