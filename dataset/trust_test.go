package dataset

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// A shape whose n*dim*size overflows int to exactly the data's length once
// passed the size check and then panicked in make (n*dim negative) or
// produced no points.
func TestNPYShapeOverflowIsAnError(t *testing.T) {
	cases := []struct {
		name, descr, shape string
		payload            int
	}{
		{"n*dim negative, n*dim*8 = 32", "<f8", fmt.Sprintf("(%d, 4)", (1<<61)+1), 32},
		{"n*dim*4 wraps to 16", "<f4", fmt.Sprintf("(%d, 4)", (1<<62)+1), 16},
		{"n*dim*4 wraps to 0", "<f4", fmt.Sprintf("(%d, 4)", 1<<62), 0},
		{"dim alone past the data", "<f8", fmt.Sprintf("(1, %d)", (1<<60)+1), 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "big.npy")
			writeNPY(t, p, 1, c.descr, false, c.shape, make([]byte, c.payload))
			d, err := New(Spec{Name: "points", Path: p})
			if err == nil {
				t.Fatalf("accepted shape %s with %d data bytes: %d points of dim %d", c.shape, c.payload, d.(*Points).Len(), d.Dim())
			}
			if !strings.Contains(err.Error(), "big.npy") || !strings.Contains(err.Error(), "too few for shape") {
				t.Fatalf("error %q does not name the file and the shape", err)
			}
		})
	}
}

// FuzzDecodeNPY: any bytes give points or an error; points that decode fill
// exactly the shape the header declared, and that the body holds.
func FuzzDecodeNPY(f *testing.F) {
	le := func(v any) []byte {
		var b bytes.Buffer
		binary.Write(&b, binary.LittleEndian, v)
		return b.Bytes()
	}
	f.Add(npyImage(1, "<f8", false, "(3, 2)", le([]float64{1, 2, 3, 4, 5, 6})))
	f.Add(npyImage(2, "<f4", false, "(2, 1)", le([]float32{1, 2})))
	f.Add(npyImage(3, ">f8", false, "(1, 1)", make([]byte, 8)))
	f.Add(npyImage(1, "<f8", true, "(1, 1)", make([]byte, 8)))
	f.Add(npyImage(1, "<f8", false, fmt.Sprintf("(%d, 4)", (1<<61)+1), make([]byte, 32)))
	f.Add([]byte("\x93NUMPY\x01\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		data, dim, err := decodeNPY(raw, "fuzz.npy")
		if err != nil {
			return
		}
		if dim <= 0 || len(data) == 0 || len(data)%dim != 0 || len(data)*4 > len(raw) {
			t.Fatalf("%d values of dim %d from %d bytes", len(data), dim, len(raw))
		}
	})
}

// FuzzDecodeCSV: any text gives points or an error, never a panic; points
// come in whole rows of one dimension.
func FuzzDecodeCSV(f *testing.F) {
	f.Add("x,y\n1.5,-2\n0.25,3\n")
	f.Add("1\n\n2\n")
	f.Add("1,2\n3\n")
	f.Add("\"1\",\"2\"\n")
	f.Add("nan,inf\n")
	f.Fuzz(func(t *testing.T, text string) {
		data, dim, err := decodeCSV(strings.NewReader(text), "fuzz.csv")
		if err != nil {
			return
		}
		if dim <= 0 || len(data) == 0 || len(data)%dim != 0 {
			t.Fatalf("%d values of dim %d", len(data), dim)
		}
		for _, v := range data {
			if !finite(v) {
				t.Fatalf("non-finite value %v accepted", v)
			}
		}
	})
}
