package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sbtrain/sbtrain/api"
	"github.com/sbtrain/sbtrain/internal/runauth"
	"github.com/sbtrain/sbtrain/storage"
)

// A run with a secret, while a forger without it hammers every channel
// (gRPC calls in plaintext and with another secret, gossip packets and
// streams, ring handshakes far in the future, dashboard requests without
// the token), finishes with the same bytes as the undisturbed run, and each
// channel's refusals are logged rate-limited.
func TestClusterForgersRefused(t *testing.T) {
	skipUnderRace(t)
	base := baseline(t)
	dir := t.TempDir()
	cfg := writeClusterConfig(t, 3)
	storeDir, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	storeURL := "file://" + storeDir
	secret, err := runauth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	secretFile, tokenFile := filepath.Join(dir, "secret"), filepath.Join(dir, "token")
	if err := os.WriteFile(secretFile, []byte(secret.Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("dashboard-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gossip, grpcAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	args := append(coordinatorArgs(cfg, storeURL, gossip, out, 3), "--grpc", grpcAddr, "--http", httpAddr,
		"--http-token-file", tokenFile, "--secret-file", secretFile)
	coord := startProc(t, "coordinator", dir, args...)
	coord.waitLine(0, time.Minute, "coordinator started", logged("coordinator started"))

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	forge := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					f()
				}
			}
		}()
	}
	var mu sync.Mutex
	var rings []string
	wrong, _ := runauth.Generate()
	wrongCreds, _ := wrong.ClientCredentials()
	for _, creds := range []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithTransportCredentials(wrongCreds)} {
		forge(func() {
			conn, err := grpc.NewClient(grpcAddr, creds)
			if err != nil {
				return
			}
			defer conn.Close()
			c := api.NewControlClient(conn)
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			c.Report(cctx, &api.Report{TrainerId: "trainer-0", Generation: ^uint64(0) - 1, Kind: api.Report_RING_FAILED, Error: "forged"})
			if s, err := c.Follow(cctx, &api.Hello{TrainerId: "trainer-1", RingAddr: "127.0.0.1:1"}); err == nil {
				s.Recv()
			}
		})
	}
	forge(func() {
		if c, err := net.Dial("udp", gossip); err == nil {
			c.Write([]byte("\x00forged gossip packet"))
			c.Close()
		}
		if c, err := net.DialTimeout("tcp", gossip, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write([]byte("\x01forged gossip stream"))
			c.Close()
		}
	})
	forge(func() {
		mu.Lock()
		targets := slices.Clone(rings)
		mu.Unlock()
		for _, r := range targets {
			c, err := net.DialTimeout("tcp", r, time.Second)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(time.Second))
			var challenge [36]byte
			io.ReadFull(c, challenge[:])
			hello := fmt.Sprintf("SBHI forged hello of run %s at generation %d", clusterRun, uint64(1)<<62)
			c.Write(append([]byte(hello), make([]byte, 64)...))
			c.Close()
		}
	})
	forge(func() {
		resp, err := http.Get("http://" + httpAddr + "/api/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("dashboard without the token: %s", resp.Status)
			}
		}
	})
	refusal := func(channel string) func(logLine) bool {
		return logged("refused an unauthenticated attempt", "channel", channel)
	}
	for _, ch := range []string{"grpc", "gossip", "dashboard"} {
		coord.waitLine(0, 30*time.Second, "a refused "+ch+" attempt", refusal(ch))
	}
	// Two trainers join and are hammered while the coordinator waits for
	// the third; the run starts when it joins, with the forgers still on.
	var trainers []*proc
	for _, id := range []string{"trainer-0", "trainer-1", "trainer-2"} {
		tr := startProc(t, id, dir, append(trainerArgs(cfg, storeURL, gossip, id), "--secret-file", secretFile)...)
		trainers = append(trainers, tr)
		_, ln := tr.waitLine(0, time.Minute, "joined", logged("joined"))
		mu.Lock()
		rings = append(rings, attrs(ln)["ring"])
		mu.Unlock()
		if id != "trainer-2" {
			tr.waitLine(0, 30*time.Second, "a refused ring handshake", refusal("ring"))
		}
	}

	coord.waitOK(procTimeout())
	stop()
	wg.Wait()
	for _, tr := range trainers {
		tr.waitOK(30 * time.Second)
	}
	requireSameBytes(t, readFinal(t, openStore(t, storeURL, storage.Options{})), base.state)

	// Each channel's refusals are logged once per window (10 s), with a
	// count: a handful of lines for the whole run.
	count := func(p *proc, channel string) int {
		lines, _ := p.out.since(0)
		n := 0
		for _, ln := range lines {
			if refusal(channel)(ln) {
				n++
			}
		}
		return n
	}
	for _, ch := range []string{"grpc", "gossip", "dashboard"} {
		if n := count(coord, ch); n < 1 || n > 10 {
			t.Errorf("coordinator logged %d refusal lines for %s, want 1 to 10", n, ch)
		}
	}
	for _, tr := range trainers[:2] {
		if n := count(tr, "ring"); n < 1 || n > 10 {
			t.Errorf("%s logged %d refusal lines for the ring, want 1 to 10", tr.name, n)
		}
	}
	if strings.Contains(coord.out.String(), secret.Reveal()) {
		t.Error("the coordinator's log shows the run secret")
	}
}
