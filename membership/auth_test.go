package membership

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/sbtrain/sbtrain/internal/runauth"
)

// syncBuffer is a log sink the memberlist goroutines may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAuth(t *testing.T, name string, meta Meta, secret *runauth.Secret, rej *runauth.Rejects) *Node {
	t.Helper()
	n, err := Start(context.Background(), Options{Name: name, BindAddr: "127.0.0.1:0", Meta: meta, Logger: testLogger(),
		Secret: secret, Rejects: rej})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return n
}

// With a run secret, nodes that have it form the cluster; a node with
// another secret, or none, or a raw memberlist node hammering the port, is
// never a member, and the refusals are logged once for the window.
func TestGossipSecret(t *testing.T) {
	secret, _ := runauth.Generate()
	wrong, _ := runauth.Generate()
	var logs syncBuffer
	rej := runauth.NewRejects(slog.New(slog.NewTextHandler(&logs, nil)), time.Hour)
	coord := startAuth(t, "coord", validCoordinator(), secret, rej)
	good := startAuth(t, "good", trainerMeta(0), secret, nil)
	join(t, good, coord)
	waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == "good" && e.Kind == Up })

	bad := startAuth(t, "bad-key", trainerMeta(1), wrong, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := bad.Join(ctx, []string{coord.Addr()})
	cancel()
	if err == nil {
		t.Error("a node with another secret joined")
	}

	// A raw node without key or label, and plain UDP garbage.
	conf := memberlist.DefaultLocalConfig()
	conf.Name = "forger"
	conf.BindAddr, conf.BindPort = "127.0.0.1", 0
	conf.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ml.Shutdown() }()
	if _, err := ml.Join([]string{coord.Addr()}); err == nil {
		t.Error("a node without the secret joined")
	}
	udp, err := net.Dial("udp", coord.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		udp.Write([]byte("\x00forged packet"))
	}
	udp.Close()

	deadline := time.Now().Add(seeWithin)
	for rej.Total("gossip") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rej.Total("gossip") < 3 {
		t.Fatalf("%d gossip refusals counted, want at least 3", rej.Total("gossip"))
	}
	if n := strings.Count(logs.String(), "channel=gossip"); n != 1 {
		t.Errorf("%d log lines for %d refusals, want 1:\n%s", n, rej.Total("gossip"), logs.String())
	}
	time.Sleep(500 * time.Millisecond)
	for _, p := range coord.Members() {
		if p.Name != "coord" && p.Name != "good" {
			t.Errorf("%s is a member without the secret", p.Name)
		}
	}
	if len(coord.Members()) != 2 {
		t.Errorf("members %v, want coord and good", coord.Members())
	}
}

func TestNoSecretStaysOnLoopback(t *testing.T) {
	_, err := Start(context.Background(), Options{Name: "a", BindAddr: "0.0.0.0:0", Meta: validTrainer(), Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("wildcard bind without a secret: %v, want a refusal naming loopback", err)
	}
}
