package coordinator

import (
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/api"
	"google.golang.org/protobuf/proto"
)

func TestDecodeRefusesMalformedCalls(t *testing.T) {
	pos := &api.Position{Phase: 1, Step: 5}
	blob := []*api.Blob{{Name: "state.safetensors", Key: "k", Size: 1, Sha256: "x"}}
	long := strings.Repeat("t", maxIDBytes+1)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"hello without id", second(decodeHello(&api.Hello{RingAddr: "127.0.0.1:1"})), "hello: trainer_id is empty"},
		{"hello with a long id", second(decodeHello(&api.Hello{TrainerId: long, RingAddr: "127.0.0.1:1"})), "trainer_id of 257 bytes"},
		{"hello without ring", second(decodeHello(&api.Hello{TrainerId: "t"})), "ring_addr is empty"},
		{"hello with a bad ring", second(decodeHello(&api.Hello{TrainerId: "t", RingAddr: "127.0.0.1"})), `ring_addr "127.0.0.1": want host:port`},
		{"report without id", second(decodeReport(&api.Report{Kind: api.Report_PROGRESS})), "report: trainer_id is empty"},
		{"report of an unknown kind", second(decodeReport(&api.Report{TrainerId: "t", Kind: 99})), "unknown kind"},
		{"commit without id", second(decodeCommit(&api.CommitRequest{Checkpoint: "00000001-p0000-s000000000001", Blobs: blob}, "h")), "commit: trainer_id is empty"},
		{"commit of a bad checkpoint", second(decodeCommit(&api.CommitRequest{TrainerId: "t", Checkpoint: "../x", Blobs: blob}, "h")), `checkpoint id "../x"`},
		{"commit without blobs", second(decodeCommit(&api.CommitRequest{TrainerId: "t", Checkpoint: "00000001-p0000-s000000000001", Position: pos}, "h")), "0 blobs, want 1..1024"},
		{"commit of too many blobs", second(decodeCommit(&api.CommitRequest{TrainerId: "t", Checkpoint: "00000001-p0000-s000000000001", Blobs: make([]*api.Blob, maxCommitBlobs+1)}, "h")), "1025 blobs"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, c.err, c.want)
		}
	}
	call, err := decodeCommit(&api.CommitRequest{TrainerId: "t", Generation: 4, Checkpoint: "00000002-p0001-s000000000005",
		Position: pos, Blobs: blob, Phase: 1, Step: 5, Direction: "forward"}, "ours")
	if err != nil {
		t.Fatal(err)
	}
	if call.event.Pos != (Position{Phase: 1, Step: 5}) || call.id.Seq != 2 || call.meta.ConfigHash != "ours" || len(call.blobs) != 1 {
		t.Fatalf("decoded %+v", call)
	}
}

func second[T any](_ T, err error) error { return err }

// FuzzDecodeControlCalls: the bytes of a Follow, Report or Commit call, as
// gRPC hands them to the coordinator, decode into the machine's events or
// give an error, never a panic; what decodes carries the call's own ids
// and positions.
func FuzzDecodeControlCalls(f *testing.F) {
	for _, m := range []proto.Message{
		&api.Hello{TrainerId: "trainer-0", ConfigHash: "abc", Version: "v", RingAddr: "127.0.0.1:7000", HasState: true, Held: &api.Position{Phase: 2, Step: 9}, LastGeneration: 3},
		&api.Report{TrainerId: "trainer-1", Generation: 5, Kind: api.Report_PROGRESS, Position: &api.Position{Phase: 1, Step: 4}, Loss: 0.5},
		&api.Report{TrainerId: "trainer-1", Generation: 5, Kind: api.Report_RING_FAILED, Suspect: "trainer-2", Error: "timeout"},
		&api.CommitRequest{TrainerId: "trainer-0", Generation: 5, Checkpoint: "00000003-p0001-s000000000020", Position: &api.Position{Phase: 1, Step: 20},
			Blobs: []*api.Blob{{Name: "state.safetensors", Key: "runs/r/ckpt/00000003-p0001-s000000000020/state.safetensors", Size: 10, Sha256: "ab"}}, Phase: 1, Step: 20, Direction: "forward"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h api.Hello
		if proto.Unmarshal(b, &h) == nil {
			if up, err := decodeHello(&h); err == nil && (up.ID != h.TrainerId || up.Held != h.Held.ToPosition()) {
				t.Fatalf("hello %v decoded as %+v", &h, up)
			}
		}
		var r api.Report
		if proto.Unmarshal(b, &r) == nil {
			if e, err := decodeReport(&r); err == nil && e == nil {
				t.Fatalf("report %v decoded to no event", &r)
			}
		}
		var c api.CommitRequest
		if proto.Unmarshal(b, &c) == nil {
			if call, err := decodeCommit(&c, "ours"); err == nil {
				if call.event.Checkpoint != call.id.String() || len(call.blobs) != len(c.Blobs) || call.meta.ConfigHash != "ours" {
					t.Fatalf("commit %v decoded as %+v", &c, call)
				}
			}
		}
	})
}
