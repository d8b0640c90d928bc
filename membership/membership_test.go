package membership

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The bound every membership change in these tests must be seen within.
const seeWithin = 5 * time.Second

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("MEMBERSHIP_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func trainerMeta(i int) Meta {
	return Meta{Role: RoleTrainer, Run: "run-1", Ring: fmt.Sprintf("127.0.0.1:%d", 7100+i), ConfigHash: "abc", Version: "v1"}
}

func start(t *testing.T, name string, meta Meta) *Node {
	t.Helper()
	n, err := Start(context.Background(), Options{Name: name, BindAddr: "127.0.0.1:0", Meta: meta, Logger: testLogger()})
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

func join(t *testing.T, n *Node, seed *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), seeWithin)
	defer cancel()
	if err := n.Join(ctx, []string{seed.Addr()}); err != nil {
		t.Fatalf("%s joins %s: %v", n.Name(), seed.Name(), err)
	}
}

// cluster starts a coordinator and k trainers joined to it, and waits until
// every node sees all of them.
func cluster(t *testing.T, k int) []*Node {
	t.Helper()
	nodes := []*Node{start(t, "coord", validCoordinator())}
	for i := 1; i <= k; i++ {
		n := start(t, fmt.Sprintf("trainer-%d", i), trainerMeta(i))
		join(t, n, nodes[0])
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		waitMembers(t, n, len(nodes))
	}
	return nodes
}

func waitMembers(t *testing.T, n *Node, want int) []Peer {
	t.Helper()
	deadline := time.Now().Add(seeWithin)
	for {
		ms := n.Members()
		if len(ms) == want {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d members after %v, want %d: %v", n.Name(), len(ms), seeWithin, want, ms)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvent reads n's events until one matches, failing after within.
func waitEvent(t *testing.T, n *Node, within time.Duration, match func(Event) bool) Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-n.Events():
			if !ok {
				t.Fatalf("%s: events closed", n.Name())
			}
			if match(e) {
				return e
			}
		case <-timer.C:
			t.Fatalf("%s: no matching event within %v", n.Name(), within)
		}
	}
}

func TestClusterSeesMetas(t *testing.T) {
	nodes := cluster(t, 2)
	want := map[string]Meta{"coord": validCoordinator(), "trainer-1": trainerMeta(1), "trainer-2": trainerMeta(2)}
	addrs := map[string]string{}
	for _, n := range nodes {
		addrs[n.Name()] = n.Addr()
		if !strings.HasPrefix(n.Addr(), "127.0.0.1:") || strings.HasSuffix(n.Addr(), ":0") {
			t.Fatalf("%s: Addr %q is not the bound loopback address", n.Name(), n.Addr())
		}
	}
	for _, n := range nodes {
		ms := n.Members()
		for i, p := range ms {
			if i > 0 && ms[i-1].Name >= p.Name {
				t.Fatalf("%s: members not sorted: %v", n.Name(), ms)
			}
			if p.Meta != want[p.Name] {
				t.Fatalf("%s sees %s with meta %+v, want %+v", n.Name(), p.Name, p.Meta, want[p.Name])
			}
			if p.Addr != addrs[p.Name] {
				t.Fatalf("%s sees %s at %s, want %s", n.Name(), p.Name, p.Addr, addrs[p.Name])
			}
		}
		c, ok := n.Find(RoleCoordinator)
		if !ok || c.Name != "coord" || c.Meta.GRPC != "127.0.0.1:7000" {
			t.Fatalf("%s: Find(coordinator) = %+v, %v", n.Name(), c, ok)
		}
		if tr, ok := n.Find(RoleTrainer); !ok || tr.Name != "trainer-1" {
			t.Fatalf("%s: Find(trainer) = %+v, %v", n.Name(), tr, ok)
		}
		if _, ok := n.Find("chef"); ok {
			t.Fatalf("%s: found a chef", n.Name())
		}
	}
	// The coordinator was told about each trainer, with its meta, in
	// whichever order gossip delivered them.
	seen := map[string]Event{}
	for len(seen) < 2 {
		e := waitEvent(t, nodes[0], seeWithin, func(e Event) bool {
			_, dup := seen[e.Peer.Name]
			return !dup && (e.Peer.Name == "trainer-1" || e.Peer.Name == "trainer-2")
		})
		seen[e.Peer.Name] = e
	}
	for name, e := range seen {
		if e.Kind != Up || e.Err != nil || e.Peer.Meta != want[name] {
			t.Fatalf("coordinator's event for %s: %+v", name, e)
		}
	}
}

func TestCloseIsSeenDown(t *testing.T) {
	nodes := cluster(t, 2)
	gone := nodes[2]
	t0 := time.Now()
	if err := gone.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, n := range nodes[:2] {
		e := waitEvent(t, n, seeWithin, func(e Event) bool { return e.Peer.Name == gone.Name() && e.Kind == Down })
		t.Logf("%s saw %s leave after %v", n.Name(), gone.Name(), time.Since(t0))
		if e.Peer.Meta != trainerMeta(2) {
			t.Fatalf("Down event lost the peer's meta: %+v", e.Peer)
		}
		waitMembers(t, n, 2)
	}
	if _, ok := <-gone.Events(); ok {
		// Drain whatever was buffered; the channel must then be closed.
		for range gone.Events() {
		}
	}
	if err := gone.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := gone.Join(context.Background(), []string{nodes[0].Addr()}); err == nil {
		t.Fatal("join after close succeeded")
	}
}

func TestKilledNodeIsSeenDown(t *testing.T) {
	nodes := cluster(t, 2)
	dead := nodes[1]
	t0 := time.Now()
	// Stop without leaving, as a SIGKILLed process would: the others must
	// find out by failure detection.
	if err := dead.close(context.Background(), false); err != nil {
		t.Fatalf("kill: %v", err)
	}
	for _, n := range []*Node{nodes[0], nodes[2]} {
		waitEvent(t, n, seeWithin, func(e Event) bool { return e.Peer.Name == dead.Name() && e.Kind == Down })
		t.Logf("%s saw %s dead after %v", n.Name(), dead.Name(), time.Since(t0))
		waitMembers(t, n, 2)
	}
}

func TestRestartedNodeIsSeenUpAgain(t *testing.T) {
	nodes := cluster(t, 1)
	coord, old := nodes[0], nodes[1]
	if err := old.close(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == "trainer-1" && e.Kind == Down })
	// Same name, new port, new meta.
	m := trainerMeta(9)
	again := start(t, "trainer-1", m)
	join(t, again, coord)
	e := waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == "trainer-1" })
	if e.Kind != Up || e.Peer.Meta != m || e.Peer.Addr != again.Addr() {
		t.Fatalf("after restart: %+v (new addr %s)", e, again.Addr())
	}
}

func TestUpdateMeta(t *testing.T) {
	nodes := cluster(t, 1)
	coord, tr := nodes[0], nodes[1]
	waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == "trainer-1" && e.Kind == Up })
	m := trainerMeta(1)
	m.Ring = "127.0.0.1:7999"
	ctx, cancel := context.WithTimeout(context.Background(), seeWithin)
	defer cancel()
	if err := tr.UpdateMeta(ctx, m); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == "trainer-1" })
	if e.Kind != Update || e.Peer.Meta != m || e.Err != nil {
		t.Fatalf("got %+v", e)
	}
	if p, _ := coord.Find(RoleTrainer); p.Meta.Ring != m.Ring {
		t.Fatalf("Find after update: %+v", p)
	}

	bad := m
	bad.Role = "chef"
	if err := tr.UpdateMeta(ctx, bad); err == nil {
		t.Fatal("UpdateMeta accepted a bad meta")
	}
	other := m
	other.Run = "run-2"
	if err := tr.UpdateMeta(ctx, other); err == nil {
		t.Fatal("UpdateMeta changed the run")
	}
}

// rawMeta is a memberlist delegate that sends whatever meta it is given.
type rawMeta []byte

func (r rawMeta) NodeMeta(int) []byte                  { return r }
func (rawMeta) NotifyMsg([]byte)                       {}
func (rawMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (rawMeta) LocalState(bool) []byte                 { return nil }
func (rawMeta) MergeRemoteState(buf []byte, join bool) {}

func TestBadPeerMetaIsAnErrorEvent(t *testing.T) {
	other := trainerMeta(1)
	other.Run = "run-2"
	otherJSON, err := other.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		meta []byte
		want string
	}{
		{"not json", []byte("\x00\xffgarbage"), "not JSON"},
		{"no meta", nil, "meta: empty"},
		{"unknown role", []byte(`{"role":"chef","run":"run-1","config_hash":"c","version":"v"}`), `unknown role "chef"`},
		{"trainer without ring", []byte(`{"role":"trainer","run":"run-1","config_hash":"c","version":"v"}`), "ring is empty"},
		{"other run", otherJSON, `run "run-2"`},
	}
	coord := start(t, "coord", validCoordinator())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("bad-%d", i)
			conf := memberlist.DefaultLocalConfig()
			conf.Name = name
			conf.BindAddr, conf.BindPort = "127.0.0.1", 0
			conf.Delegate = rawMeta(tt.meta)
			conf.Logger = log.New(io.Discard, "", 0)
			ml, err := memberlist.Create(conf)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = ml.Leave(time.Second)
				_ = ml.Shutdown()
			}()
			if _, err := ml.Join([]string{coord.Addr()}); err != nil {
				t.Fatal(err)
			}
			e := waitEvent(t, coord, seeWithin, func(e Event) bool { return e.Peer.Name == name })
			if e.Err == nil || !strings.Contains(e.Err.Error(), tt.want) || !strings.Contains(e.Err.Error(), name) {
				t.Fatalf("event %+v: want error naming %s and containing %q", e, name, tt.want)
			}
			for _, p := range coord.Members() {
				if p.Name == name {
					t.Fatalf("bad peer listed as member: %+v", p)
				}
			}
			if got := len(coord.Members()); got != 1 {
				t.Fatalf("members: %v", coord.Members())
			}
		})
	}
}

// freePort returns a loopback port nothing listens on (for a moment).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestJoinFailsNamingTheSeed(t *testing.T) {
	n := start(t, "lonely", trainerMeta(1))

	// A listener that accepts connections and never answers: memberlist
	// would wait out its TCP timeout; Join must stop at ctx's deadline.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	refused := freePort(t)
	tests := []struct {
		name    string
		seeds   []string
		timeout time.Duration // 0: no deadline, Join's default applies
		within  time.Duration
		want    []string
	}{
		{"refused", []string{refused}, 0, seeWithin, []string{"seed " + refused, "connection refused"}},
		{"two refused", []string{refused, refused}, 0, seeWithin, []string{"seed " + refused}},
		{"silent seed, short deadline", []string{silent.Addr().String()}, 300 * time.Millisecond, time.Second,
			[]string{"seed " + silent.Addr().String(), "no answer", "deadline exceeded"}},
		{"no port", []string{"127.0.0.1"}, 0, time.Second, []string{`seed "127.0.0.1": want host:port`}},
		{"no seeds", nil, 0, time.Second, []string{"no seeds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			t0 := time.Now()
			err := n.Join(ctx, tt.seeds)
			took := time.Since(t0)
			if err == nil {
				t.Fatal("join succeeded")
			}
			t.Logf("after %v: %v", took, err)
			if took >= tt.within {
				t.Fatalf("join took %v, want < %v", took, tt.within)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n\t*") {
				t.Fatalf("error kept memberlist's multi-line form: %q", err)
			}
		})
	}
	if got := len(n.Members()); got != 1 {
		t.Fatalf("members after failed joins: %v", n.Members())
	}
}

func TestStartRejects(t *testing.T) {
	bad := validTrainer()
	bad.Role = "chef"
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"bad meta", Options{Name: "a", BindAddr: "127.0.0.1:0", Meta: bad}, `unknown role "chef"`},
		{"no port", Options{Name: "a", BindAddr: "127.0.0.1", Meta: validTrainer()}, "want ip:port"},
		{"host name", Options{Name: "a", BindAddr: "localhost:0", Meta: validTrainer()}, "must be an IP"},
		{"bad advertise", Options{Name: "a", BindAddr: "127.0.0.1:0", AdvertiseAddr: "x", Meta: validTrainer()}, "advertise address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = testLogger()
			n, err := Start(context.Background(), tt.opts)
			if err == nil {
				_ = n.Close(context.Background())
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}

	// A port in use is refused, naming the address.
	first := start(t, "first", validTrainer())
	_, err := Start(context.Background(), Options{Name: "second", BindAddr: first.Addr(), Meta: validTrainer(), Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), first.Addr()) {
		t.Fatalf("second node on %s: %v", first.Addr(), err)
	}
}

// ours counts goroutines running memberlist or this package's code.
func ours() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "membership.(*") {
			n++
		}
	}
	return n
}

func TestGoroutinesEndAfterClose(t *testing.T) {
	// An earlier test's memberlist may still be finishing a probe; start
	// from a baseline without any.
	for i := 0; ours() > 0 && i < 150; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	base := runtime.NumGoroutine()
	ctx := context.Background()
	var nodes []*Node
	for i, m := range []Meta{validCoordinator(), trainerMeta(1), trainerMeta(2)} {
		n, err := Start(ctx, Options{Name: fmt.Sprintf("g-%d", i), BindAddr: "127.0.0.1:0", Meta: m, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		if i > 0 {
			if err := n.Join(ctx, []string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range nodes {
		waitMembers(t, n, 3)
	}
	// One killed, the others closed in turn.
	if err := nodes[2].close(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		if err := n.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(seeWithin)
	for {
		got := runtime.NumGoroutine()
		if got <= base && ours() == 0 {
			t.Logf("goroutines: %d before, %d after close", base, got)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before, still %d %v after close:\n%s", base, got, seeWithin, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
