package coordinator

import (
	"fmt"
	"net"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/storage"
)

// What a trainer sends is decoded here, into the machine's events, before
// anything acts on it. Decoding checks shape only (ids present and
// bounded, addresses host:port, counts bounded); whether an event is
// possible for the run (generation, position, membership) is the
// machine's to judge.
const (
	// maxIDBytes bounds a trainer id, which is also its gossip node name.
	maxIDBytes = 256
	// maxCommitBlobs bounds the blobs of one checkpoint: a job writes a
	// handful.
	maxCommitBlobs = 1024
)

func checkTrainerID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s: trainer_id is empty", what)
	case len(id) > maxIDBytes:
		return fmt.Errorf("%s: trainer_id of %d bytes, at most %d", what, len(id), maxIDBytes)
	}
	return nil
}

// decodeHello is a Follow call's hello as the machine's MemberUp.
func decodeHello(h *api.Hello) (MemberUp, error) {
	if err := checkTrainerID("hello", h.GetTrainerId()); err != nil {
		return MemberUp{}, err
	}
	if h.GetRingAddr() == "" {
		return MemberUp{}, fmt.Errorf("hello from %s: ring_addr is empty", h.GetTrainerId())
	}
	if _, port, err := net.SplitHostPort(h.GetRingAddr()); err != nil || port == "" {
		return MemberUp{}, fmt.Errorf("hello from %s: ring_addr %q: want host:port", h.GetTrainerId(), h.GetRingAddr())
	}
	return MemberUp{ID: h.GetTrainerId(), RingAddr: h.GetRingAddr(), HasState: h.GetHasState(),
		Held: h.GetHeld().ToPosition(), LastGeneration: h.GetLastGeneration()}, nil
}

// decodeReport is a Report call as the machine's event.
func decodeReport(r *api.Report) (Event, error) {
	if err := checkTrainerID("report", r.GetTrainerId()); err != nil {
		return nil, err
	}
	pos := r.GetPosition().ToPosition()
	switch r.GetKind() {
	case api.Report_HOLDING:
		return Holding{ID: r.GetTrainerId(), Generation: r.GetGeneration(), HasState: r.GetHasState(), Held: pos}, nil
	case api.Report_PROGRESS:
		return Progress{ID: r.GetTrainerId(), Generation: r.GetGeneration(), Pos: pos, Loss: r.GetLoss(),
			SamplesPerSec: r.GetSamplesPerSec(), AllReduceFraction: r.GetAllreduceFraction(),
			Steps: r.GetSteps(), StepSeconds: r.GetStepSeconds(), AllReduceSeconds: r.GetAllreduceSeconds(), AllReduceBytes: r.GetAllreduceBytes()}, nil
	case api.Report_RING_FAILED:
		return RingFailed{ID: r.GetTrainerId(), Generation: r.GetGeneration(), Suspect: r.GetSuspect(), Err: r.GetError()}, nil
	}
	return nil, fmt.Errorf("report from %s: unknown kind %v", r.GetTrainerId(), r.GetKind())
}

// commitCall is a Commit call decoded: the machine's event, and the
// checkpoint to commit if the machine approves.
type commitCall struct {
	event CommitRequested
	id    storage.ID
	meta  storage.Meta
	blobs []storage.BlobRef
}

// decodeCommit decodes a Commit call of a run whose config hashes to
// configHash (the trainer's word is not taken for it).
func decodeCommit(r *api.CommitRequest, configHash string) (commitCall, error) {
	if err := checkTrainerID("commit", r.GetTrainerId()); err != nil {
		return commitCall{}, err
	}
	id, err := storage.ParseID(r.GetCheckpoint())
	if err != nil {
		return commitCall{}, fmt.Errorf("commit from %s: %w", r.GetTrainerId(), err)
	}
	if n := len(r.GetBlobs()); n == 0 || n > maxCommitBlobs {
		return commitCall{}, fmt.Errorf("commit from %s: %d blobs, want 1..%d", r.GetTrainerId(), n, maxCommitBlobs)
	}
	pos := r.GetPosition().ToPosition()
	blobs := make([]storage.BlobRef, len(r.GetBlobs()))
	for i, b := range r.GetBlobs() {
		blobs[i] = storage.BlobRef{Name: b.GetName(), Key: b.GetKey(), Size: b.GetSize(), SHA256: b.GetSha256()}
	}
	return commitCall{
		event: CommitRequested{ID: r.GetTrainerId(), Generation: r.GetGeneration(), Pos: pos, Checkpoint: r.GetCheckpoint()},
		id:    id,
		meta: storage.Meta{Phase: int(r.GetPhase()), IPFIteration: int(r.GetIpfIteration()), Direction: r.GetDirection(),
			Step: r.GetStep(), PhaseEnd: r.GetPhaseEnd(), ConfigHash: configHash},
		blobs: blobs,
	}, nil
}
