package runauth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// EnvVar is the environment variable a process reads its run secret from
// when no secret file is given.
const EnvVar = "SBTRAIN_SECRET"

// MinLen is the shortest secret accepted, in bytes: a shorter one could be
// guessed by trying handshakes.
const MinLen = 16

// Secret is a run's shared secret. Its zero value is not usable; a nil
// *Secret means the run has none (and stays on loopback).
type Secret struct {
	key []byte
}

// Parse makes a secret of b, without surrounding white space (a secret
// file usually ends in a newline).
func Parse(b []byte) (*Secret, error) {
	b = bytes.TrimSpace(b)
	if len(b) < MinLen {
		return nil, fmt.Errorf("run secret is %d bytes, want at least %d", len(b), MinLen)
	}
	return &Secret{key: bytes.Clone(b)}, nil
}

// Load reads the run secret from file, or when file is empty from the
// environment variable EnvVar; with neither it returns nil and no error.
// Errors name where the secret came from, never the secret.
func Load(file string) (*Secret, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read the run secret: %w", err)
		}
		s, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("secret file %s: %w", file, err)
		}
		return s, nil
	}
	v, ok := os.LookupEnv(EnvVar)
	if !ok || strings.TrimSpace(v) == "" {
		return nil, nil
	}
	s, err := Parse([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("environment variable %s: %w", EnvVar, err)
	}
	return s, nil
}

// Generate makes a fresh random secret for one run.
func Generate() (*Secret, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate a run secret: %w", err)
	}
	return &Secret{key: []byte(hex.EncodeToString(b))}, nil
}

// Reveal is the secret's text, to hand to a child process through its
// environment (EnvVar) or a 0600 file. Nothing else should call it.
func (s *Secret) Reveal() string { return string(s.key) }

// String keeps the secret out of logs and error messages.
func (s *Secret) String() string { return "[run secret]" }

// LogValue keeps the secret out of structured logs.
func (s *Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Derive returns n bytes of key material for one purpose: HKDF-SHA256 of
// the secret with the purpose as info, so every channel has its own key.
func (s *Secret) Derive(purpose string, n int) []byte {
	if s == nil || len(s.key) == 0 {
		panic("runauth: Derive on a missing secret")
	}
	k, err := hkdf.Key(sha256.New, s.key, []byte("sbtrain run secret v1"), purpose, n)
	if err != nil {
		// Only an n beyond 255*32 bytes fails; callers ask for 32.
		panic(fmt.Sprintf("runauth: derive %q: %v", purpose, err))
	}
	return k
}

// GossipKey is the AES-256 key of memberlist's packet and stream
// encryption (memberlist.Config.SecretKey).
func (s *Secret) GossipKey() []byte { return s.Derive("gossip aes-256-gcm", 32) }

// RingKey is the HMAC-SHA256 key of the all-reduce ring's handshake.
func (s *Secret) RingKey() []byte { return s.Derive("ring handshake hmac-sha256", 32) }

// GossipLabel is memberlist's label for the run (memberlist.Config.Label):
// gossip of another run on the same network is dropped even when it
// shares the secret. memberlist allows 255 bytes.
func GossipLabel(run string) string {
	l := "sbtrain/" + run
	if len(l) > 255 {
		sum := sha256.Sum256([]byte(run))
		l = "sbtrain/" + hex.EncodeToString(sum[:])
	}
	return l
}

// ErrNoSecret marks a refusal because the run has no secret.
var ErrNoSecret = errors.New("no run secret")
