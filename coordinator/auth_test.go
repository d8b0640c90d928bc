package coordinator

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/membership"
)

// newSecureTrainer is newFakeTrainer for a run with a secret: keyed
// gossip, TLS and an instance ID on every call.
func newSecureTrainer(t *testing.T, c *Coordinator, id string, log *slog.Logger, secret *runauth.Secret, instance string) *fakeTrainer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), planWithin)
	defer cancel()
	node, err := membership.Start(ctx, membership.Options{
		Name: id, BindAddr: "127.0.0.1:0", Logger: log, Secret: secret,
		Meta: membership.Meta{Role: membership.RoleTrainer, Run: testRun, Ring: testRing, ConfigHash: testHash, Version: testVersion},
	})
	if err != nil {
		t.Fatalf("gossip node %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Close(ctx)
	})
	if err := node.Join(ctx, []string{c.GossipAddr()}); err != nil {
		t.Fatalf("%s joins %s: %v", id, c.GossipAddr(), err)
	}
	return &fakeTrainer{t: t, id: id, node: node, conn: nil, client: secureClient(t, c, secret, instance)}
}

func secureClient(t *testing.T, c *Coordinator, secret *runauth.Secret, instance string) api.ControlClient {
	t.Helper()
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if secret != nil {
		var err error
		if creds, err = secret.ClientCredentials(); err != nil {
			t.Fatal(err)
		}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if instance != "" {
		opts = append(opts, runauth.WithInstance(instance)...)
	}
	conn, err := grpc.NewClient(c.GRPCAddr(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return api.NewControlClient(conn)
}

// With a run secret, calls without it are refused and logged once; a
// process with the secret but another instance can neither take over a
// live trainer's stream nor report or commit as it.
func TestServiceAuth(t *testing.T) {
	checkGoroutines(t)
	secret, _ := runauth.Generate()
	wrong, _ := runauth.Generate()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	opts := serverOptions(openStore(t), log)
	opts.Secret = secret
	c := startServer(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t1 := newSecureTrainer(t, c, "t1", log, secret, runauth.NewInstance())
	ps := t1.follow(t1.hello())
	_, run := t1.runPlan(ps)

	for name, client := range map[string]api.ControlClient{
		"no secret":    secureClient(t, c, nil, ""),
		"wrong secret": secureClient(t, c, wrong, ""),
	} {
		for range 5 {
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := client.Status(qctx, &api.StatusRequest{})
			qcancel()
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: Status = %v, want Unavailable", name, err)
			}
			_, err = client.Report(ctx, &api.Report{TrainerId: "t1", Generation: ^uint64(0) - 1, Kind: api.Report_RING_FAILED})
			if err == nil {
				t.Errorf("%s: a forged report was accepted", name)
			}
		}
	}
	// Each client's channel retries its handshake with backoff, so there
	// are fewer handshakes than calls, but at least one per client.
	deadline := time.Now().Add(5 * time.Second)
	for c.rejects.Total("grpc") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.rejects.Total("grpc"); n < 2 {
		t.Errorf("%d refused gRPC handshakes counted, want at least 2", n)
	}
	if n := strings.Count(logs.String(), "channel=grpc"); n != 1 {
		t.Errorf("%d log lines for the refused handshakes, want 1", n)
	}

	// Another process with the secret, same trainer ID and ring address.
	other := secureClient(t, c, secret, runauth.NewInstance())
	stream, err := other.Follow(ctx, t1.hello())
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "follow as a live trainer from another process", err, codes.AlreadyExists, "in use by a live trainer")
	if _, err := other.Report(ctx, &api.Report{TrainerId: "t1", Generation: run.Generation, Kind: api.Report_PROGRESS,
		Position: api.NewPosition(0, 9), Loss: 123}); err != nil {
		t.Fatalf("report: %v", err)
	}
	_, err = other.Commit(ctx, checkpointAt(t, opts.Store, "t1", run.Generation, Position{Phase: 0, Step: 5}))
	wantCode(t, "commit from another process", err, codes.PermissionDenied, "does not follow as trainer t1")
	if _, err := t1.client.Report(ctx, &api.Report{TrainerId: "t1", Generation: run.Generation, Kind: api.Report_PROGRESS,
		Position: api.NewPosition(0, 3), Loss: 0.5}); err != nil {
		t.Fatalf("report: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.Members[0].Position.GetStep() != 3 || st.Members[0].Loss != 0.5 {
		t.Errorf("status members %v: want t1 at 0:3 with loss 0.5 (its own report, not the other process's)", st.Members)
	}
	if st.Generation != run.Generation {
		t.Errorf("generation %d after forged reports, want %d", st.Generation, run.Generation)
	}
	for _, ch := range []string{"follow", "report", "commit"} {
		if c.rejects.Total(ch) != 1 {
			t.Errorf("%s refusals %d, want 1", ch, c.rejects.Total(ch))
		}
	}
	// The live stream was not disturbed.
	select {
	case err := <-ps.err:
		t.Fatalf("t1's stream ended: %v", err)
	default:
	}
}

func TestNoSecretRefusesNonLoopback(t *testing.T) {
	opts := serverOptions(openStore(t), testLogger(t))
	opts.GRPCAddr = "0.0.0.0:0"
	if _, err := Start(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Start with a wildcard gRPC address and no secret: %v, want a refusal naming loopback", err)
	}
}
