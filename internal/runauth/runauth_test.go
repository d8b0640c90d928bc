package runauth

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sbtrain/sbtrain/api"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	short := filepath.Join(dir, "short")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	os.WriteFile(short, []byte("short\n"), 0o600)
	for _, c := range []struct {
		name, file, env string
		want            string // the secret, "" = none
		err             string
	}{
		{name: "file", file: good, want: "0123456789abcdef0123"},
		{name: "file wins over env", file: good, env: "ffffffffffffffffffffffff", want: "0123456789abcdef0123"},
		{name: "env", env: "  abcdefabcdefabcdef  ", want: "abcdefabcdefabcdef"},
		{name: "none"},
		{name: "short file", file: short, err: "secret file " + short},
		{name: "short env", env: "tiny", err: EnvVar},
		{name: "missing file", file: filepath.Join(dir, "nope"), err: "read the run secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(EnvVar, c.env)
			s, err := Load(c.file)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Load: %v, want an error naming %q", err, c.err)
				}
				if c.env != "" && strings.Contains(err.Error(), c.env) {
					t.Fatalf("the error shows the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if s != nil {
					t.Fatalf("Load gave a secret with none set")
				}
				return
			}
			if s == nil || s.Reveal() != c.want {
				t.Fatalf("Load = %v, want %q", s, c.want)
			}
		})
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s)
	if strings.Contains(buf.String(), s.Reveal()) || strings.Contains(s.String(), s.Reveal()) {
		t.Fatalf("the secret shows in a log line: %s", buf.String())
	}
}

func TestDeriveSeparatesPurposesAndSecrets(t *testing.T) {
	a, _ := Parse([]byte("secret-a-0123456789"))
	a2, _ := Parse([]byte("secret-a-0123456789"))
	b, _ := Parse([]byte("secret-b-0123456789"))
	if !bytes.Equal(a.GossipKey(), a2.GossipKey()) {
		t.Error("the same secret derives different gossip keys")
	}
	if bytes.Equal(a.GossipKey(), b.GossipKey()) {
		t.Error("two secrets derive the same gossip key")
	}
	if bytes.Equal(a.GossipKey(), a.RingKey()) {
		t.Error("gossip and ring keys are equal")
	}
	if len(a.GossipKey()) != 32 || len(a.RingKey()) != 32 {
		t.Error("keys are not 32 bytes")
	}
	if l := GossipLabel(strings.Repeat("r", 400)); len(l) > 255 {
		t.Errorf("label of %d bytes", len(l))
	}
}

func TestCheckBind(t *testing.T) {
	s, _ := Generate()
	for _, c := range []struct {
		addr   string
		secret *Secret
		ok     bool
	}{
		{"127.0.0.1:0", nil, true},
		{"127.0.0.3:7946", nil, true},
		{"[::1]:80", nil, true},
		{"localhost:80", nil, true},
		{"0.0.0.0:8080", nil, false},
		{":8080", nil, false},
		{"10.1.2.3:7946", nil, false},
		{"10.1.2.3:7946", s, true},
		{":8080", s, true},
		{"nonsense", nil, false},
	} {
		err := CheckBind(c.secret, "--gossip", c.addr)
		if (err == nil) != c.ok {
			t.Errorf("CheckBind(%v, %q) = %v, want ok=%v", c.secret != nil, c.addr, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--gossip") {
			t.Errorf("error does not name the flag: %v", err)
		}
	}
}

func TestRejectsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	r := NewRejects(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for i := 0; i < 500; i++ {
		r.Refused("ring", "127.0.0.9:1", "bad mac")
	}
	r.Refused("grpc", "127.0.0.9:2", "bad cert")
	if n := strings.Count(buf.String(), "refused an unauthenticated attempt"); n != 2 {
		t.Fatalf("%d lines for 501 refusals on two channels within the window, want 2:\n%s", n, buf.String())
	}
	now = now.Add(11 * time.Second)
	r.Refused("ring", "127.0.0.9:1", "bad mac")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "refused=500") || !strings.Contains(lines[2], "refused_total=501") {
		t.Fatalf("after the window, want one line counting the 500 refusals since the last:\n%s", buf.String())
	}
	if r.Total("ring") != 501 || r.Total("dashboard") != 0 {
		t.Errorf("totals %d %d", r.Total("ring"), r.Total("dashboard"))
	}
}

// statusServer answers Status; enough to test and time the transport.
type statusServer struct {
	api.UnimplementedControlServer
}

func (statusServer) Status(ctx context.Context, _ *api.StatusRequest) (*api.RunStatus, error) {
	return &api.RunStatus{Run: "r", Generation: 7, State: "running"}, nil
}

func serve(t testing.TB, opts ...grpc.ServerOption) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	api.RegisterControlServer(srv, statusServer{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func call(t testing.TB, addr string, opts ...grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = api.NewControlClient(conn).Status(ctx, &api.StatusRequest{})
	return err
}

func TestGRPCTLS(t *testing.T) {
	good, _ := Generate()
	wrong, _ := Generate()
	var buf bytes.Buffer
	rej := NewRejects(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	sc, err := good.ServerCredentials(rej)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, grpc.Creds(sc))
	gc, _ := good.ClientCredentials()
	wc, _ := wrong.ClientCredentials()
	if err := call(t, addr, grpc.WithTransportCredentials(gc)); err != nil {
		t.Fatalf("a client with the run secret: %v", err)
	}
	for name, opt := range map[string]grpc.DialOption{
		"wrong secret": grpc.WithTransportCredentials(wc),
		"plaintext":    grpc.WithTransportCredentials(insecure.NewCredentials()),
	} {
		for range 3 {
			err := call(t, addr, opt)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: %v, want Unavailable (handshake refused)", name, err)
			}
		}
	}
	// A client with the secret refuses a server without it too.
	wsc, _ := wrong.ServerCredentials(nil)
	if err := call(t, serve(t, grpc.Creds(wsc)), grpc.WithTransportCredentials(gc)); status.Code(err) != codes.Unavailable {
		t.Errorf("client against a server with another secret: %v, want Unavailable", err)
	}
	waitFor(t, func() bool { return rej.Total("grpc") >= 6 })
	if n := strings.Count(buf.String(), "channel=grpc"); n != 1 {
		t.Errorf("%d log lines for %d refused handshakes, want 1:\n%s", n, rej.Total("grpc"), buf.String())
	}
}

func waitFor(t testing.TB, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInstanceMetadata(t *testing.T) {
	var got string
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		got = InstanceOf(ctx)
		return h(ctx, req)
	}))
	api.RegisterControlServer(srv, statusServer{})
	go srv.Serve(lis)
	defer srv.Stop()
	id := NewInstance()
	opts := append(WithInstance(id), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err := call(t, lis.Addr().String(), opts...); err != nil {
		t.Fatal(err)
	}
	if got != id || len(id) != 32 || NewInstance() == id {
		t.Fatalf("instance %q arrived as %q", id, got)
	}
	if InstanceOf(context.Background()) != "" {
		t.Fatal("instance from a context without metadata")
	}
}

func apiClient(conn *grpc.ClientConn) func(context.Context) error {
	c := api.NewControlClient(conn)
	return func(ctx context.Context) error {
		_, err := c.Status(ctx, &api.StatusRequest{})
		return err
	}
}
