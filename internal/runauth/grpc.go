package runauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// tlsIdentity is the key pair every process of a run derives from the
// secret, and the self-signed certificate carrying its public key.
type tlsIdentity struct {
	pub  ed25519.PublicKey
	cert tls.Certificate
}

func (s *Secret) tlsIdentity() (*tlsIdentity, error) {
	priv := ed25519.NewKeyFromSeed(s.Derive("grpc tls ed25519 seed", ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{tlsServerName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("runauth: make the run certificate: %w", err)
	}
	return &tlsIdentity{pub: pub, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}}, nil
}

const tlsServerName = "sbtrain-run"

// verifyPeer accepts exactly the run's own public key: a peer that shows it
// has, in the TLS handshake, signed with the key derived from the secret.
// Chains, names and dates carry no meaning here.
func (id *tlsIdentity) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return errors.New("the peer presented no certificate")
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok || !bytes.Equal(pub, id.pub) {
		return errors.New("the peer's certificate is not derived from this run's secret")
	}
	return nil
}

// ServerTLS is the TLS configuration of the run's servers: TLS 1.3, the
// derived certificate, and a client certificate with the derived key
// required.
func (s *Secret) ServerTLS() (*tls.Config, error) {
	id, err := s.tlsIdentity()
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.cert},
		ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: id.verifyPeer}, nil
}

// ClientTLS is the TLS configuration of the run's clients: it presents the
// derived certificate and accepts only a server that presents it too.
func (s *Secret) ClientTLS() (*tls.Config, error) {
	id, err := s.tlsIdentity()
	if err != nil {
		return nil, err
	}
	// The standard chain check is replaced by verifyPeer: the trust anchor
	// is the derived key itself, not a CA.
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.cert}, ServerName: tlsServerName,
		InsecureSkipVerify: true, VerifyPeerCertificate: id.verifyPeer}, nil
}

// ServerCredentials are the gRPC server's transport credentials; every
// refused handshake goes to rej (channel "grpc").
func (s *Secret) ServerCredentials(rej *Rejects) (credentials.TransportCredentials, error) {
	cfg, err := s.ServerTLS()
	if err != nil {
		return nil, err
	}
	return serverCreds{TransportCredentials: credentials.NewTLS(cfg), rej: rej}, nil
}

// ClientCredentials are the gRPC client's transport credentials.
func (s *Secret) ClientCredentials() (credentials.TransportCredentials, error) {
	cfg, err := s.ClientTLS()
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// serverCreds reports refused handshakes, which gRPC itself only logs at
// its own verbosity.
type serverCreds struct {
	credentials.TransportCredentials
	rej *Rejects
}

func (c serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	// A connection closed before saying anything (a TCP probe) is no
	// attempt to get in.
	if err != nil && !errors.Is(err, io.EOF) {
		c.rej.Refused("grpc", conn.RemoteAddr().String(), err.Error())
	}
	return out, info, err
}

func (c serverCreds) Clone() credentials.TransportCredentials {
	return serverCreds{TransportCredentials: c.TransportCredentials.Clone(), rej: c.rej}
}

// InstanceHeader is the gRPC metadata key of a trainer process's instance
// ID: random per process, sent with every call, so the coordinator can tell
// a reconnect of the process that holds a trainer ID from another process
// claiming it.
const InstanceHeader = "sbtrain-instance"

// NewInstance returns a fresh random instance ID.
func NewInstance() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported systems
	return hex.EncodeToString(b)
}

// WithInstance are dial options that send id with every call.
func WithInstance(id string) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
			invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, InstanceHeader, id), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
			streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, InstanceHeader, id), desc, cc, method, opts...)
		}),
	}
}

// InstanceOf is the instance ID a call carries, "" if none.
func InstanceOf(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(InstanceHeader); len(v) == 1 {
		return v[0]
	}
	return ""
}
