package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// MaxMetaSize is memberlist's limit on a node's metadata (its MetaMaxSize):
// memberlist panics on a longer meta, so Start and UpdateMeta refuse one.
const MaxMetaSize = 512

// Roles a node can have.
const (
	RoleCoordinator = "coordinator"
	RoleTrainer     = "trainer"
)

// Meta is what a node tells the cluster about itself, carried as compact
// JSON in its memberlist node meta. Every node states its role, run,
// config hash and binary version; a coordinator also states the address of
// its gRPC control service, and a trainer the address of its all-reduce ring
// endpoint. The other address may be set (it is then checked too) or left
// empty.
type Meta struct {
	Role       string `json:"role"`
	Run        string `json:"run"`
	GRPC       string `json:"grpc,omitempty"`
	Ring       string `json:"ring,omitempty"`
	ConfigHash string `json:"config_hash"`
	Version    string `json:"version"`
}

// Validate reports the first thing that makes m unusable: an unknown role,
// a required field left empty, an address that is not host:port.
func (m Meta) Validate() error {
	switch m.Role {
	case RoleCoordinator, RoleTrainer:
	case "":
		return errors.New("meta: role is empty")
	default:
		return fmt.Errorf("meta: unknown role %q (want %q or %q)", m.Role, RoleCoordinator, RoleTrainer)
	}
	required := []struct {
		name, value string
	}{
		{"run", m.Run},
		{"config_hash", m.ConfigHash},
		{"version", m.Version},
	}
	switch m.Role {
	case RoleCoordinator:
		// Trainers find the control service through this address; a
		// coordinator without it cannot be followed.
		required = append(required, struct{ name, value string }{"grpc", m.GRPC})
	case RoleTrainer:
		// Ring plans list members by this address.
		required = append(required, struct{ name, value string }{"ring", m.Ring})
	}
	for _, f := range required {
		if f.value == "" {
			return fmt.Errorf("meta: %s is empty (required for a %s)", f.name, m.Role)
		}
	}
	for _, f := range []struct{ name, value string }{{"grpc", m.GRPC}, {"ring", m.Ring}} {
		if f.value == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(f.value); err != nil || port == "" {
			return fmt.Errorf("meta: %s address %q is not host:port", f.name, f.value)
		}
	}
	return nil
}

// Encode validates m and returns its compact JSON form, refusing one longer
// than MaxMetaSize with an error that names the longest field, since that is
// the one to shorten.
func (m Meta) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("meta: encode: %w", err)
	}
	if len(b) > MaxMetaSize {
		return nil, tooLong(m, len(b))
	}
	return b, nil
}

// DecodeMeta parses and validates another node's meta. It never panics on
// bad input; the error says what is wrong. Fields this version does not know
// are ignored, so a newer node's meta still decodes (the version field is
// where a mismatch is caught).
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, errors.New("meta: empty")
	}
	if len(b) > MaxMetaSize {
		// Still decode, so the error can name the field.
		if err := json.Unmarshal(b, &m); err != nil {
			return Meta{}, fmt.Errorf("meta: %d bytes, over the %d-byte limit, and not JSON: %w", len(b), MaxMetaSize, err)
		}
		return m, tooLong(m, len(b))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("meta: not JSON: %w", err)
	}
	if dec.More() {
		return Meta{}, errors.New("meta: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return m, err
	}
	return m, nil
}

func tooLong(m Meta, n int) error {
	longest, size := "", -1
	for _, f := range []struct{ name, value string }{
		{"role", m.Role}, {"run", m.Run}, {"grpc", m.GRPC},
		{"ring", m.Ring}, {"config_hash", m.ConfigHash}, {"version", m.Version},
	} {
		if len(f.value) > size {
			longest, size = f.name, len(f.value)
		}
	}
	return fmt.Errorf("meta: %d bytes encoded, over memberlist's %d-byte limit: field %s is %d bytes, the longest", n, MaxMetaSize, longest, size)
}
