package membership

import (
	"encoding/json"
	"strings"
	"testing"
)

func validCoordinator() Meta {
	return Meta{Role: RoleCoordinator, Run: "run-1", GRPC: "127.0.0.1:7000", ConfigHash: "abc", Version: "v1"}
}

func validTrainer() Meta {
	return Meta{Role: RoleTrainer, Run: "run-1", Ring: "127.0.0.1:7100", ConfigHash: "abc", Version: "v1"}
}

func TestMetaValidate(t *testing.T) {
	with := func(m Meta, f func(*Meta)) Meta { f(&m); return m }
	long := strings.Repeat("x", 600)
	tests := []struct {
		name string
		meta Meta
		want string // substring of the error; "" means valid
	}{
		{"coordinator", validCoordinator(), ""},
		{"trainer", validTrainer(), ""},
		{"trainer with grpc", with(validTrainer(), func(m *Meta) { m.GRPC = "10.0.0.1:9" }), ""},
		{"ipv6 address", with(validTrainer(), func(m *Meta) { m.Ring = "[::1]:7100" }), ""},
		{"empty role", with(validTrainer(), func(m *Meta) { m.Role = "" }), "role is empty"},
		{"unknown role", with(validTrainer(), func(m *Meta) { m.Role = "chef" }), `unknown role "chef"`},
		{"empty run", with(validTrainer(), func(m *Meta) { m.Run = "" }), "run is empty"},
		{"empty config hash", with(validTrainer(), func(m *Meta) { m.ConfigHash = "" }), "config_hash is empty"},
		{"empty version", with(validCoordinator(), func(m *Meta) { m.Version = "" }), "version is empty"},
		{"coordinator without grpc", with(validCoordinator(), func(m *Meta) { m.GRPC = "" }), "grpc is empty"},
		{"trainer without ring", with(validTrainer(), func(m *Meta) { m.Ring = "" }), "ring is empty"},
		{"ring without port", with(validTrainer(), func(m *Meta) { m.Ring = "10.0.0.1" }), "ring address"},
		{"grpc empty port", with(validCoordinator(), func(m *Meta) { m.GRPC = "host:" }), "grpc address"},
		{"too long run", with(validTrainer(), func(m *Meta) { m.Run = long }), "field run is 600 bytes"},
		{"too long version", with(validTrainer(), func(m *Meta) { m.Version = long }), "field version"},
		{"too long together", with(validTrainer(), func(m *Meta) {
			m.Run = strings.Repeat("r", 200)
			m.ConfigHash = strings.Repeat("h", 250)
		}), "field config_hash is 250 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.Encode()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if len(b) > MaxMetaSize {
					t.Fatalf("encoded %d bytes", len(b))
				}
				got, err := DecodeMeta(b)
				if err != nil {
					t.Fatalf("DecodeMeta(%s): %v", b, err)
				}
				if got != tt.meta {
					t.Fatalf("round trip: got %+v, want %+v", got, tt.meta)
				}
				return
			}
			if err == nil {
				t.Fatalf("Encode accepted %+v", tt.meta)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Encode error %q does not contain %q", err, tt.want)
			}
			// A peer sending the same meta is refused the same way.
			raw, jerr := json.Marshal(tt.meta)
			if jerr != nil {
				t.Fatal(jerr)
			}
			if _, err := DecodeMeta(raw); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeMeta error %v does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeMetaBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "empty"},
		{"not json", "role=trainer", "not JSON"},
		{"wrong type", `{"role":1}`, "not JSON"},
		{"array", `[1,2]`, "not JSON"},
		{"trailing", `{"role":"trainer"} {}`, "trailing data"},
		{"null", `null`, "role is empty"},
		{"too long garbage", strings.Repeat("{", 600), "over the 512-byte limit"},
		{"unknown fields only", `{"colour":"blue"}`, "role is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMeta([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeMeta(%q) = %v, want error containing %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestDecodeMetaIgnoresUnknownFields(t *testing.T) {
	b := []byte(`{"role":"trainer","run":"r","ring":"h:1","config_hash":"c","version":"v","zone":"eu"}`)
	m, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Ring != "h:1" {
		t.Fatalf("got %+v", m)
	}
}

func TestParseLine(t *testing.T) {
	tests := []struct{ in, level, msg string }{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5\n", "DEBUG", "Stream connection from=127.0.0.1:5"},
		{"[WARN] memberlist: Refuting a suspect message\n", "WARN", "Refuting a suspect message"},
		{"[ERR] Failed to shutdown transport: x", "ERR", "Failed to shutdown transport: x"},
		{"plain text\n", "INFO", "plain text"},
	}
	for _, tt := range tests {
		level, msg := parseLine(tt.in)
		if level != tt.level || msg != tt.msg {
			t.Errorf("parseLine(%q) = %q, %q; want %q, %q", tt.in, level, msg, tt.level, tt.msg)
		}
	}
}

func TestCoalesce(t *testing.T) {
	ev := func(kind EventKind, name, ring string) Event {
		return Event{Kind: kind, Peer: Peer{Name: name, Meta: Meta{Ring: ring}}}
	}
	type step = Event
	tests := []struct {
		name string
		in   []step
		want []Event
	}{
		{"distinct peers keep order",
			[]step{ev(Up, "a", "1"), ev(Up, "b", "1"), ev(Down, "a", "")},
			[]Event{ev(Down, "a", ""), ev(Up, "b", "1")}},
		{"up then update is up with new meta",
			[]step{ev(Up, "a", "1"), ev(Update, "a", "2")},
			[]Event{ev(Up, "a", "2")}},
		{"updates collapse",
			[]step{ev(Update, "a", "1"), ev(Update, "a", "2"), ev(Update, "a", "3")},
			[]Event{ev(Update, "a", "3")}},
		{"down then up stays two",
			[]step{ev(Down, "a", ""), ev(Up, "a", "2")},
			[]Event{ev(Down, "a", ""), ev(Up, "a", "2")}},
		{"down up down is one down",
			[]step{ev(Down, "a", ""), ev(Up, "a", "2"), ev(Down, "a", "")},
			[]Event{ev(Down, "a", "")}},
		{"flapping is bounded",
			[]step{ev(Up, "a", "1"), ev(Down, "a", ""), ev(Up, "a", "2"), ev(Down, "a", ""), ev(Up, "a", "3"), ev(Update, "a", "4")},
			[]Event{ev(Down, "a", ""), ev(Up, "a", "4")}},
		{"double down",
			[]step{ev(Down, "a", ""), ev(Down, "a", "")},
			[]Event{ev(Down, "a", "")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q []Event
			for _, e := range tt.in {
				q = coalesce(q, e)
			}
			if len(q) != len(tt.want) {
				t.Fatalf("got %v, want %v", q, tt.want)
			}
			for i := range q {
				if q[i].Kind != tt.want[i].Kind || q[i].Peer != tt.want[i].Peer {
					t.Fatalf("event %d: got %v, want %v", i, q, tt.want)
				}
			}
		})
	}
}
