package runauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// hmacToken is the alternative to TLS that BenchmarkUnaryRPC measures: a
// per-RPC token HMAC-SHA256(key, method|unix-nanos|nonce), checked against
// a clock-skew window and a replay cache of the nonces inside it.
type hmacToken struct{ key []byte }

func (h hmacToken) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, _ := credentials.RequestInfoFromContext(ctx)
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	nonce := NewInstance()
	return map[string]string{"authorization": ts + "." + nonce + "." + h.mac(ri.Method, ts, nonce)}, nil
}

func (hmacToken) RequireTransportSecurity() bool { return false }

func (h hmacToken) mac(method, ts, nonce string) string {
	m := hmac.New(sha256.New, h.key)
	fmt.Fprintf(m, "%s|%s|%s", method, ts, nonce)
	return hex.EncodeToString(m.Sum(nil))
}

// hmacChecker verifies tokens; seen is the replay cache.
type hmacChecker struct {
	h    hmacToken
	skew time.Duration
	mu   sync.Mutex
	seen map[string]time.Time
}

func (c *hmacChecker) check(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) != 1 {
		return status.Error(codes.Unauthenticated, "no token")
	}
	parts := strings.Split(v[0], ".")
	if len(parts) != 3 {
		return status.Error(codes.Unauthenticated, "malformed token")
	}
	ns, err := strconv.ParseInt(parts[0], 10, 64)
	now := time.Now()
	if err != nil || now.Sub(time.Unix(0, ns)).Abs() > c.skew {
		return status.Error(codes.Unauthenticated, "token outside the clock window")
	}
	if !hmac.Equal([]byte(parts[2]), []byte(c.h.mac(method, parts[0], parts[1]))) {
		return status.Error(codes.Unauthenticated, "bad token")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.seen[parts[1]]; dup {
		return status.Error(codes.Unauthenticated, "replayed token")
	}
	c.seen[parts[1]] = now
	if len(c.seen) > 4096 {
		for k, t := range c.seen {
			if now.Sub(t) > c.skew {
				delete(c.seen, k)
			}
		}
	}
	return nil
}

func TestHMACTokenAlternative(t *testing.T) {
	s, _ := Generate()
	chk := &hmacChecker{h: hmacToken{key: s.Derive("bench hmac", 32)}, skew: 30 * time.Second, seen: map[string]time.Time{}}
	addr := serve(t, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := chk.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}))
	if err := call(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(chk.h)); err != nil {
		t.Fatalf("with a token: %v", err)
	}
	if err := call(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a token: %v", err)
	}
	wrong := hmacToken{key: []byte("another key")}
	if err := call(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(wrong)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("with a wrong key: %v", err)
	}
}

// BenchmarkUnaryRPC times one Status call on a kept-alive loopback
// connection: plaintext, mutual TLS with the derived certificate, and the
// per-RPC HMAC token. /dial adds a new connection (handshake) per call.
func BenchmarkUnaryRPC(b *testing.B) {
	s, _ := Generate()
	sc, _ := s.ServerCredentials(nil)
	cc, _ := s.ClientCredentials()
	chk := &hmacChecker{h: hmacToken{key: s.Derive("bench hmac", 32)}, skew: 30 * time.Second, seen: map[string]time.Time{}}
	plain := serve(b)
	tlsAddr := serve(b, grpc.Creds(sc))
	hmacAddr := serve(b, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := chk.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}))
	cases := []struct {
		name string
		addr string
		opts []grpc.DialOption
	}{
		{"plaintext", plain, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		{"tls", tlsAddr, []grpc.DialOption{grpc.WithTransportCredentials(cc)}},
		{"hmac", hmacAddr, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(chk.h)}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			conn, err := grpc.NewClient(c.addr, c.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := apiClient(conn)
			ctx := context.Background()
			for b.Loop() {
				if err := client(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, c := range cases {
		b.Run(c.name+"/dial", func(b *testing.B) {
			for b.Loop() {
				if err := call(b, c.addr, c.opts...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
