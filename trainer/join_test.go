package trainer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/membership"
)

// freeTCPUDPPorts returns n distinct loopback ports, each free for both
// TCP and UDP, as gossip needs. Every port stays held until all n are
// chosen, so two calls' worth of ports cannot coincide.
func freeTCPUDPPorts(t *testing.T, n int) []int {
	t.Helper()
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for range 20 * n {
		if len(ports) == n {
			return ports
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		held = append(held, u)
		ports = append(ports, port)
	}
	if len(ports) == n {
		return ports
	}
	t.Fatalf("found %d of %d ports free for TCP and UDP", len(ports), n)
	return nil
}

// TestRunWaitsForCoordinator: a trainer started before its coordinator
// (pods start in any order) keeps trying to join until CoordinatorTimeout,
// binds the fixed ports it is given and advertises them.
func TestRunWaitsForCoordinator(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name      string
		seedAfter time.Duration // 0: no seed ever
		fixed     bool          // fixed gossip and ring ports
		wantErr   string
		notErr    string
	}{
		{name: "no coordinator", wantErr: "no answer for 1.5s"},
		{name: "coordinator starts late", seedAfter: 800 * time.Millisecond, notErr: "join the coordinator", wantErr: "no coordinator reachable"},
		{name: "fixed ports", seedAfter: 100 * time.Millisecond, fixed: true, notErr: "join the coordinator", wantErr: "no coordinator reachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ports := freeTCPUDPPorts(t, 3)
			seedPort := ports[0]
			seedAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(seedPort))
			opts := Options{ID: "t-0", Run: shardsRun, Job: shardsJob(t), Version: "test", Join: seedAddr,
				CoordinatorTimeout: 1500 * time.Millisecond, Logger: quiet}
			opts.Store, _ = shardStore(t)
			if tc.fixed {
				opts.GossipPort, opts.RingPort = ports[1], ports[2]
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			seed := make(chan *membership.Node, 1)
			if tc.seedAfter > 0 {
				go func() {
					time.Sleep(tc.seedAfter)
					// A coordinator's gossip node whose control service
					// is not there: joining works, following does not.
					n, err := membership.Start(ctx, membership.Options{Name: "coordinator", BindAddr: seedAddr, Logger: quiet,
						Meta: membership.Meta{Role: membership.RoleCoordinator, Run: shardsRun, GRPC: "127.0.0.1:1",
							ConfigHash: opts.Job.Hash, Version: "test"}})
					if err != nil {
						t.Error(err)
					}
					seed <- n
				}()
			}
			start := time.Now()
			err := Run(ctx, opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || tc.notErr != "" && strings.Contains(err.Error(), tc.notErr) {
				t.Fatalf("Run: %v; want an error with %q and without %q", err, tc.wantErr, tc.notErr)
			}
			if took := time.Since(start); took < opts.CoordinatorTimeout {
				t.Errorf("gave up after %s, before CoordinatorTimeout %s", took, opts.CoordinatorTimeout)
			}
			if tc.seedAfter == 0 {
				return
			}
			n := <-seed
			if n == nil {
				return
			}
			defer n.Close(context.Background())
			if !tc.fixed {
				return
			}
			// The seed saw the trainer at its fixed ports before it left.
			var found bool
			for _, p := range seenMembers(n) {
				if p.Name == opts.ID {
					found = true
					wantGossip := net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.GossipPort))
					wantRing := net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.RingPort))
					if p.Addr != wantGossip || p.Meta.Ring != wantRing {
						t.Errorf("trainer seen at gossip %s ring %s, want %s and %s", p.Addr, p.Meta.Ring, wantGossip, wantRing)
					}
				}
			}
			if !found {
				t.Error("the seed never saw the trainer")
			}
		})
	}
}

// seenMembers are the members a node's events announced (the trainer has
// left by the time Run returns).
func seenMembers(n *membership.Node) []membership.Peer {
	var out []membership.Peer
	for {
		select {
		case ev := <-n.Events():
			out = append(out, ev.Peer)
		default:
			return out
		}
	}
}

func TestOptionsPorts(t *testing.T) {
	cases := []struct {
		name         string
		gossip, ring int
		wantErr      string
	}{
		{"free ports", 0, 0, ""},
		{"fixed", 7946, 7948, ""},
		{"negative", -1, 0, "gossip port -1"},
		{"too large", 0, 70000, "ring port 70000"},
		{"same", 7946, 7946, "both 7946"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ID: "t", Run: "r", Job: shardsJob(t), Join: "127.0.0.1:1", GossipPort: tc.gossip, RingPort: tc.ring}
			o.Store, _ = shardStore(t)
			err := o.fill()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("fill: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// A trainer whose run name differs from its coordinator's was once told
// "no coordinator among the gossip members"; it is refused at once, with
// both names.
func TestRunOfAnotherNameIsRefused(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	seedAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeTCPUDPPorts(t, 1)[0]))
	opts := Options{ID: "t-0", Run: shardsRun, Job: shardsJob(t), Version: "test", Join: seedAddr,
		CoordinatorTimeout: 20 * time.Second, Logger: quiet}
	opts.Store, _ = shardStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := membership.Start(ctx, membership.Options{Name: "coordinator", BindAddr: seedAddr, Logger: quiet,
		Meta: membership.Meta{Role: membership.RoleCoordinator, Run: "other-run", GRPC: "127.0.0.1:1",
			ConfigHash: opts.Job.Hash, Version: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	start := time.Now()
	err = Run(ctx, opts)
	for _, want := range []string{`runs run "other-run"`, `this trainer run "` + shardsRun + `"`, "the run names differ"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: %v; want an error containing %q", err, want)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("refused after %s, want at once (CoordinatorTimeout is %s)", took, opts.CoordinatorTimeout)
	}
}
