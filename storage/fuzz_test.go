package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var fuzzNow = time.Date(2026, 1, 2, 3, 4, 10, 0, time.UTC)

// fuzzManifestSeed is a manifest as Commit writes it.
func fuzzManifestSeed(f *testing.F) []byte {
	m := Manifest{FormatVersion: ManifestFormatVersion, RunID: "run-1", Seq: 3,
		Meta:    Meta{Phase: 1, IPFIteration: 1, Direction: DirectionForward, Step: 20, ConfigHash: "abc"},
		Created: "2026-01-02T03:04:05Z",
		Blobs: []BlobRef{{Name: "a.bin", Key: "runs/run-1/ckpt/00000003-p0001-s000000000020/a.bin", Size: 4,
			SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}}
	sum, err := manifestChecksum(m)
	if err != nil {
		f.Fatal(err)
	}
	m.Checksum = sum
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzDecodeManifest: any bytes give a manifest of the asked-for
// checkpoint or an error, and never a panic; a manifest that decodes
// encodes to the same checksum.
func FuzzDecodeManifest(f *testing.F) {
	seed := fuzzManifestSeed(f)
	f.Add(seed)
	f.Add(bytes.Replace(seed, []byte(`"format_version": 1`), []byte(`"format_version": 2`), 1))
	f.Add([]byte(`{"format_version": 1}`))
	f.Add([]byte(`{"format_version": 1e400}`))
	f.Add([]byte(`[]`))
	id := ID{Seq: 3, Phase: 1, Step: 20}
	const prefix = "runs/run-1/ckpt/00000003-p0001-s000000000020/"
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b, prefix+manifestName, "run-1", id, prefix)
		if err != nil {
			return
		}
		if got := (ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}); got != id || len(m.Blobs) == 0 {
			t.Fatalf("decoded %+v for checkpoint %s", m, id)
		}
		if sum, err := manifestChecksum(*m); err != nil || sum != m.Checksum {
			t.Fatalf("checksum %q of a decoded manifest recomputes as %q (%v)", m.Checksum, sum, err)
		}
	})
}

// FuzzDecodeLatest: a LATEST pointer decodes to a manifest key of the run
// whose seq it also states, or to an error.
func FuzzDecodeLatest(f *testing.F) {
	const prefix = "runs/run-1/ckpt/"
	f.Add([]byte(`{"manifest":"runs/run-1/ckpt/00000003-p0001-s000000000020/MANIFEST.json","seq":3}`))
	f.Add([]byte(`{"manifest":"runs/run-1/ckpt/../../x/MANIFEST.json","seq":3}`))
	f.Add([]byte(`{"manifest":"runs/run-1/ckpt/00000003-p0001-s000000000020/MANIFEST.json","seq":4}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeLatest(b, "runs/run-1/LATEST", prefix, "run-1")
		if err != nil {
			return
		}
		if err := ValidateKey(p.Manifest); err != nil {
			t.Fatalf("LATEST %q names a key the store refuses: %v", p.Manifest, err)
		}
	})
}

// FuzzDecodeSafetensors: a safetensors image decodes into tensors that tile
// its data exactly, or gives an error; the streaming reader agrees with the
// in-memory decoder and allocates only what the stream holds.
func FuzzDecodeSafetensors(f *testing.F) {
	good, err := EncodeSafetensors([]Tensor{
		F32Tensor("w", []int{2, 2}, []float32{1, 2, 3, 4}),
		I64Tensor("step", []int{}, []int64{7}),
	}, map[string]string{"phase": "1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(safetensorsImage(`{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}`, 8))
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tensors, meta, err := DecodeSafetensors(b)
		st, smeta, serr := ReadSafetensors(bytes.NewReader(b))
		if (err == nil) != (serr == nil) {
			t.Fatalf("DecodeSafetensors: %v, ReadSafetensors: %v", err, serr)
		}
		if err != nil {
			return
		}
		var total int
		for i, tn := range tensors {
			if err := tn.Validate(); err != nil {
				t.Fatalf("decoded tensor %q does not validate: %v", tn.Name, err)
			}
			if !bytes.Equal(tn.Data, st[i].Data) || tn.Name != st[i].Name {
				t.Fatalf("tensor %d: the decoders disagree", i)
			}
			total += len(tn.Data)
		}
		if total > len(b) || len(meta) != len(smeta) {
			t.Fatalf("%d data bytes from a %d-byte file", total, len(b))
		}
	})
}

// safetensorsImage is a file of the given header and data bytes.
func safetensorsImage(header string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), make([]byte, data)...)
}

// A header declaring a 4 TiB tensor once made ReadSafetensors allocate it
// before reading a byte of it: the process died of out of memory.
func TestReadSafetensorsAllocatesWhatTheStreamHolds(t *testing.T) {
	img := safetensorsImage(`{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}`, 8)
	if _, _, err := ReadSafetensors(bytes.NewReader(img)); err == nil || !strings.Contains(err.Error(), "got 8 of 4398046511104 bytes") {
		t.Fatalf("ReadSafetensors of a 4 TiB tensor in 8 bytes: %v", err)
	}
}

// FuzzDecodeLease: a lease object's bytes decode strictly or give an error.
func FuzzDecodeLease(f *testing.F) {
	f.Add([]byte(`{"holder":"coordinator@a","acquired":"2026-01-02T03:04:05Z","token":"t","renewed":"2026-01-02T03:04:05.5Z","ttl_seconds":10,"host":"h","pid":3}`))
	f.Add([]byte(`{"holder":"x","acquired":"","token":"","ttl_seconds":1e308}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var info LeaseInfo
		if err := strictUnmarshal(b, &info); err != nil {
			return
		}
		// Whatever it says, judging it must not panic.
		_, _ = LeaseLive("run-1", info, fuzzNow, func(string, int) bool { return true })
	})
}
