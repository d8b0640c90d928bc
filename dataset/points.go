package dataset

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/sbtrain/sbtrain/rng"
)

// Points is the empirical distribution of a point cloud read from a file:
// a sample is a stored point picked uniformly, plus optional Gaussian jitter.
type Points struct {
	path   string
	dim    int
	data   []float64 // row-major, Len() x dim
	jitter float64
}

func (p *Points) Dim() int     { return p.dim }
func (p *Points) Name() string { return "points" }

// Len is the number of stored points.
func (p *Points) Len() int { return len(p.data) / p.dim }

// Path is the file the points were read from.
func (p *Points) Path() string { return p.path }

func (p *Points) Sample(s *rng.Stream, dst []float64) {
	i := s.Intn(p.Len())
	copy(dst[:p.dim], p.data[i*p.dim:(i+1)*p.dim])
	if p.jitter != 0 {
		for j := range p.dim {
			dst[j] += p.jitter * s.Norm()
		}
	}
}

// loadPoints reads s.Path as .npy when its name ends in .npy, else as CSV.
// ReadRows reads the points of a .npy file (its first axis; an N×C×H×W
// array is N images) or a CSV file, one point per line, as float32 rows of
// dim values.
func ReadRows(path string) (rows []float32, dim int, err error) {
	var data []float64
	if strings.HasSuffix(strings.ToLower(path), ".npy") {
		data, dim, err = readNPY(path)
	} else {
		data, dim, err = readCSV(path)
	}
	if err != nil {
		return nil, 0, err
	}
	rows = make([]float32, len(data))
	for i, v := range data {
		rows[i] = float32(v)
	}
	return rows, dim, nil
}

func loadPoints(s Spec) (*Points, error) {
	var (
		data []float64
		dim  int
		err  error
	)
	if strings.HasSuffix(strings.ToLower(s.Path), ".npy") {
		data, dim, err = readNPY(s.Path)
	} else {
		data, dim, err = readCSV(s.Path)
	}
	if err != nil {
		return nil, fmt.Errorf("dataset %q: %w", s.Name, err)
	}
	if s.Dim != 0 && s.Dim != dim {
		return nil, fmt.Errorf("dataset %q: %s has dimension %d, but dim = %d", s.Name, s.Path, dim, s.Dim)
	}
	return &Points{path: s.Path, dim: dim, data: data, jitter: s.Jitter}, nil
}

// readCSV reads one point per line. The first line is a header when none of
// its cells is a number; blank lines are skipped.
func readCSV(path string) ([]float64, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read points: %w", err)
	}
	defer f.Close()
	return decodeCSV(f, path)
}

// decodeCSV is readCSV of what r yields; path names it in errors.
func decodeCSV(in io.Reader, path string) ([]float64, int, error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1 // checked below, with a message naming the line
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	var (
		data  []float64
		dim   int
		first = true
	)
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read points %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if first {
			first = false
			if isHeader(rec) {
				continue
			}
		}
		if dim == 0 {
			dim = len(rec)
		} else if len(rec) != dim {
			return nil, 0, fmt.Errorf("read points %s: line %d has %d fields, want %d like the first point", path, line, len(rec), dim)
		}
		for j, cell := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(cell), 64)
			if err != nil {
				return nil, 0, fmt.Errorf("read points %s: line %d field %d: %q is not a number", path, line, j+1, cell)
			}
			if !finite(v) {
				return nil, 0, fmt.Errorf("read points %s: line %d field %d: %v, want a finite number", path, line, j+1, v)
			}
			data = append(data, v)
		}
	}
	if len(data) == 0 {
		return nil, 0, fmt.Errorf("read points %s: no points in the file", path)
	}
	return data, dim, nil
}

func isHeader(rec []string) bool {
	for _, cell := range rec {
		if _, err := strconv.ParseFloat(strings.TrimSpace(cell), 64); err == nil {
			return false
		}
	}
	return true
}

var (
	npyMagic   = []byte("\x93NUMPY")
	npyDescr   = regexp.MustCompile(`['"]descr['"]\s*:\s*['"]([^'"]*)['"]`)
	npyFortran = regexp.MustCompile(`['"]fortran_order['"]\s*:\s*(\w+)`)
	npyShape   = regexp.MustCompile(`['"]shape['"]\s*:\s*\(([^)]*)\)`)
)

// readNPY reads a float32 or float64 array in C order from a NumPy .npy
// file (format versions 1.0 to 3.0): one point per index of its first axis,
// the rest of its axes flattened into the point.
func readNPY(path string) ([]float64, int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read points: %w", err)
	}
	return decodeNPY(raw, path)
}

// decodeNPY is readNPY of a file's bytes; path names it in errors.
func decodeNPY(raw []byte, path string) ([]float64, int, error) {
	fail := func(format string, args ...any) ([]float64, int, error) {
		return nil, 0, fmt.Errorf("read points %s: %s", path, fmt.Sprintf(format, args...))
	}
	if len(raw) < 10 || !bytes.Equal(raw[:6], npyMagic) {
		return fail("not a .npy file (bad magic, want \\x93NUMPY)")
	}
	major := raw[6]
	var headerLen, start int
	switch major {
	case 1:
		headerLen, start = int(binary.LittleEndian.Uint16(raw[8:10])), 10
	case 2, 3:
		if len(raw) < 12 {
			return fail("truncated header")
		}
		headerLen, start = int(binary.LittleEndian.Uint32(raw[8:12])), 12
	default:
		return fail("format version %d.%d, want 1.0, 2.0 or 3.0", major, raw[7])
	}
	if headerLen > len(raw)-start {
		return fail("header length %d runs past the end of the file (%d bytes)", headerLen, len(raw))
	}
	header := string(raw[start : start+headerLen])
	body := raw[start+headerLen:]

	m := npyDescr.FindStringSubmatch(header)
	if m == nil {
		return fail("header has no descr: %q", strings.TrimSpace(header))
	}
	var (
		size  int
		order binary.ByteOrder
	)
	switch m[1] {
	case "<f4":
		size, order = 4, binary.LittleEndian
	case ">f4":
		size, order = 4, binary.BigEndian
	case "<f8":
		size, order = 8, binary.LittleEndian
	case ">f8":
		size, order = 8, binary.BigEndian
	default:
		return fail("dtype descr %q is not supported, want '<f4' or '<f8' (float32 or float64)", m[1])
	}
	m = npyFortran.FindStringSubmatch(header)
	if m == nil {
		return fail("header has no fortran_order: %q", strings.TrimSpace(header))
	}
	if m[1] != "False" {
		return fail("fortran_order = %s, want False (C order; save with np.ascontiguousarray)", m[1])
	}
	m = npyShape.FindStringSubmatch(header)
	if m == nil {
		return fail("header has no shape: %q", strings.TrimSpace(header))
	}
	var shape []int
	for _, part := range strings.Split(m[1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return fail("shape (%s) has a bad entry %q", m[1], part)
		}
		shape = append(shape, n)
	}
	if len(shape) < 2 {
		return fail("shape (%s) is %d-D, want 2-D (points, dim) or more (points, then each point's axes, as N×C×H×W images)", m[1], len(shape))
	}
	// A point of several axes (an image) is the flat row of its values in
	// C order. Products that overflow an int, which no file can hold, are
	// refused before they could pass the size check as a small one.
	n, dim := shape[0], 1
	for _, d := range shape[1:] {
		if d != 0 && dim > math.MaxInt/size/d {
			return fail("data is %d bytes, too few for shape (%s) of %d-byte floats", len(body), m[1], size)
		}
		dim *= d
	}
	if n == 0 || dim == 0 {
		return fail("shape (%s) holds no points", m[1])
	}
	if n > math.MaxInt/size/dim {
		return fail("data is %d bytes, too few for shape (%s) of %d-byte floats", len(body), m[1], size)
	}
	if want := n * dim * size; len(body) != want {
		return fail("data is %d bytes, want %d for shape (%s) of %d-byte floats", len(body), want, m[1], size)
	}
	data := make([]float64, n*dim)
	for i := range data {
		var v float64
		if size == 4 {
			v = float64(math.Float32frombits(order.Uint32(body[i*4:])))
		} else {
			v = math.Float64frombits(order.Uint64(body[i*8:]))
		}
		if !finite(v) {
			return fail("row %d column %d is %v, want a finite number", i/dim, i%dim, v)
		}
		data[i] = v
	}
	return data, dim, nil
}
