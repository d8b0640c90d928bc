package job

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbtrain/sbtrain/nn"
)

// goldenBLAS is the BLAS of the build that wrote testdata's snapshots:
// another one takes the steps before them with other low bits.
const goldenBLAS = "pure-Go (gonum)"

// TestLoadsSnapshotsOfTheFormerCode: testdata holds snapshots that the job
// wrote before the methods moved behind method.State (format
// sbtrain.job/1). They decode and encode back to the same bytes; with the
// BLAS that wrote them, a run resumed from them ends where an
// uninterrupted run ends.
func TestLoadsSnapshotsOfTheFormerCode(t *testing.T) {
	for _, tc := range []struct {
		file, yaml string
		at         Position
	}{
		{"dsb-p1-s3.safetensors", dsbYAML, Position{1, 3}},
		{"dsb-p2-s0.safetensors", dsbYAML, Position{2, 0}},
		{"si-p0-s5.safetensors", siYAML, Position{0, 5}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			old, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			j := newJob(t, tc.yaml)
			s, err := j.Decode(old, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if s.Position() != tc.at {
				t.Fatalf("decoded at %v, want %v", s.Position(), tc.at)
			}
			if !bytes.Equal(encode(t, s), old) {
				t.Fatal("the snapshot encodes to other bytes than the former code wrote")
			}
			if nn.BLAS() != goldenBLAS {
				t.Skipf("resuming needs the BLAS that wrote the snapshot (%s), this build has %s", goldenBLAS, nn.BLAS())
			}
			whole := replicas(t, j, 1)
			runReplicas(t, whole, j.End())
			resumed := []*State{s}
			runReplicas(t, resumed, j.End())
			if !bytes.Equal(encode(t, resumed[0]), encode(t, whole[0])) {
				t.Error("a run resumed from the former snapshot ends elsewhere than an uninterrupted run")
			}
		})
	}
}
