package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const testHash = "cfg-hash-1"

// fakeControl is a ControlServer that streams fixed plans to any trainer
// with the right config hash and records the unary calls it gets.
type fakeControl struct {
	UnimplementedControlServer

	plans []*Plan

	mu      sync.Mutex
	reports []*Report
}

func (f *fakeControl) Follow(h *Hello, stream grpc.ServerStreamingServer[Plan]) error {
	if h.GetConfigHash() != testHash {
		return status.Errorf(codes.FailedPrecondition, "config hash %q differs from the coordinator's %q", h.GetConfigHash(), testHash)
	}
	for _, p := range f.plans {
		if err := stream.Send(p); err != nil {
			return fmt.Errorf("send plan %d: %w", p.GetGeneration(), err)
		}
	}
	return nil
}

func (f *fakeControl) Report(_ context.Context, r *Report) (*Ack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, r)
	return &Ack{}, nil
}

func (f *fakeControl) Commit(_ context.Context, r *CommitRequest) (*CommitReply, error) {
	if r.GetTrainerId() != "t0" {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not rank 0", r.GetTrainerId())
	}
	return &CommitReply{Checkpoint: r.GetCheckpoint()}, nil
}

func (f *fakeControl) Status(context.Context, *StatusRequest) (*RunStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &RunStatus{Run: "r", Generation: 2, State: "running", Phases: 4, StepsPerPhase: 100}
	for _, r := range f.reports {
		st.Members = append(st.Members, &MemberStatus{TrainerId: r.GetTrainerId(), Position: r.GetPosition(), Loss: r.GetLoss()})
	}
	return st, nil
}

func testPlans() []*Plan {
	return []*Plan{
		{Generation: 1, Kind: Plan_WAIT, Run: "r", Reason: "1 of 2 trainers"},
		{
			Generation: 2, Kind: Plan_RUN, Run: "r", Reason: "2 trainers",
			Members: []*PlanMember{
				{TrainerId: "t0", RingAddr: "127.0.0.1:7001", Shards: []int32{0, 1}},
				{TrainerId: "t1", RingAddr: "127.0.0.1:7002", Shards: []int32{2, 3}},
			},
			Start: NewPosition(1, 40), Source: Plan_CHECKPOINT, Checkpoint: "ckpt-000040", CheckpointEvery: 20,
		},
	}
}

// serve starts srv on a real loopback listener and returns a client
// connected to it; both are torn down when the test ends.
func serve(t *testing.T, srv ControlServer) ControlClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	RegisterControlServer(gs, srv)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", lis.Addr(), err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return NewControlClient(conn)
}

func TestFollow(t *testing.T) {
	client := serve(t, &fakeControl{plans: testPlans()})
	tests := []struct {
		name     string
		hash     string
		want     []*Plan
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "plans in order", hash: testHash, want: testPlans(), wantCode: codes.OK},
		{
			name: "config mismatch refused", hash: "other", wantCode: codes.FailedPrecondition,
			wantMsg: `config hash "other" differs from the coordinator's "cfg-hash-1"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stream, err := client.Follow(ctx, &Hello{TrainerId: "t0", ConfigHash: tc.hash, Version: "v1", RingAddr: "127.0.0.1:7001"})
			if err != nil {
				t.Fatalf("Follow: %v", err)
			}
			var got []*Plan
			for {
				p, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					st, _ := status.FromError(err)
					if st.Code() != tc.wantCode || st.Message() != tc.wantMsg {
						t.Fatalf("Recv error = %v %q, want %v %q", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
					}
					if len(got) != 0 {
						t.Fatalf("got %d plans before the refusal, want none", len(got))
					}
					return
				}
				got = append(got, p)
			}
			if tc.wantCode != codes.OK {
				t.Fatalf("stream ended cleanly, want %v", tc.wantCode)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d plans, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !proto.Equal(got[i], tc.want[i]) {
					t.Errorf("plan %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestUnary(t *testing.T) {
	client := serve(t, &fakeControl{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	rep := &Report{TrainerId: "t1", Generation: 2, Kind: Report_PROGRESS, HasState: true, Position: NewPosition(1, 45), Loss: 0.25}
	if _, err := client.Report(ctx, rep); err != nil {
		t.Fatalf("Report: %v", err)
	}

	commits := []struct {
		name     string
		trainer  string
		wantCode codes.Code
	}{
		{name: "rank 0 commits", trainer: "t0", wantCode: codes.OK},
		{name: "other rank refused", trainer: "t1", wantCode: codes.PermissionDenied},
	}
	for _, tc := range commits {
		t.Run(tc.name, func(t *testing.T) {
			req := &CommitRequest{
				TrainerId: tc.trainer, Generation: 2, Position: NewPosition(1, 60), Checkpoint: "ckpt-000060",
				Blobs: []*Blob{{Name: "state", Key: "runs/r/ckpt-000060/state", Size: 3, Sha256: "abc"}},
			}
			reply, err := client.Commit(ctx, req)
			if code := status.Code(err); code != tc.wantCode {
				t.Fatalf("Commit code = %v (%v), want %v", code, err, tc.wantCode)
			}
			if err == nil && reply.GetCheckpoint() != req.GetCheckpoint() {
				t.Errorf("Commit checkpoint = %q, want %q", reply.GetCheckpoint(), req.GetCheckpoint())
			}
		})
	}

	st, err := client.Status(ctx, &StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	want := &RunStatus{
		Run: "r", Generation: 2, State: "running", Phases: 4, StepsPerPhase: 100,
		Members: []*MemberStatus{{TrainerId: "t1", Position: NewPosition(1, 45), Loss: 0.25}},
	}
	if !proto.Equal(st, want) {
		t.Errorf("Status = %v, want %v", st, want)
	}
}

func TestPlanMarshalRoundTrip(t *testing.T) {
	for _, p := range append(testPlans(), &Plan{}, &Plan{Generation: 1 << 60, Kind: Plan_FINISH}) {
		b, err := proto.Marshal(p)
		if err != nil {
			t.Fatalf("marshal %v: %v", p, err)
		}
		var got Plan
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatalf("unmarshal %v: %v", p, err)
		}
		if !proto.Equal(&got, p) {
			t.Errorf("round trip = %v, want %v", &got, p)
		}
	}
}

func TestPositionLess(t *testing.T) {
	tests := []struct {
		p, q *Position
		want bool
	}{
		{NewPosition(0, 0), NewPosition(0, 1), true},
		{NewPosition(0, 99), NewPosition(1, 0), true},
		{NewPosition(1, 0), NewPosition(0, 99), false},
		{NewPosition(2, 5), NewPosition(2, 5), false},
		{nil, NewPosition(0, 1), true},
		{nil, NewPosition(0, 0), false},
		{NewPosition(0, 1), nil, false},
	}
	for _, tc := range tests {
		if got := tc.p.Less(tc.q); got != tc.want {
			t.Errorf("%v.Less(%v) = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}
}
