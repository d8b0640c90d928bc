package experiment

import (
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/storage"
)

// A network file whose spec declares 64 layers of the widest MLP once made
// DecodeNet allocate that network (about a terabyte) before it compared a
// single tensor.
func TestDecodeNetRefusesASpecBiggerThanTheFile(t *testing.T) {
	hidden := strings.TrimSuffix(strings.Repeat("65536,", 64), ",")
	spec := `{"arch":"mlp","dim":2,"hidden":[` + hidden + `],"time_embed":0,"activation":"silu"}`
	b, err := storage.EncodeSafetensors([]storage.Tensor{storage.F32Tensor("w", []int{1}, []float32{1})},
		map[string]string{metaFormat: formatPT, metaRole: "backward", metaSpec: spec, metaHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeNet(b, "huge.safetensors"); err == nil || !strings.Contains(err.Error(), "declares at least") {
		t.Fatalf("DecodeNet of a huge spec in a small file: %v", err)
	}
}
