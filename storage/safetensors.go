package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"unicode/utf8"
)

// This file is the project's one safetensors encoding
// (https://github.com/huggingface/safetensors, "Format"): an 8-byte
// little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
// "__metadata__" string map, then the tensor bytes, little-endian and
// row-major, offsets relative to the end of the header.

// DType names a safetensors element type.
type DType string

// The element types of the safetensors format.
const (
	BOOL    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8E5M2  DType = "F8_E5M2"
	F8E4M3  DType = "F8_E4M3"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	F64     DType = "F64"
	I64     DType = "I64"
	U64     DType = "U64"
	metaKey       = "__metadata__"
)

// MaxSafetensorsHeader bounds the JSON header we accept (the reference
// implementation's limit), so a corrupt length cannot make us allocate
// gigabytes before failing.
const MaxSafetensorsHeader = 100 << 20

// headerAlign pads the header with spaces so tensor data starts 8-byte
// aligned, as the reference writer does; readers must accept any padding.
const headerAlign = 8

// Size returns the bytes per element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case BOOL, U8, I8, F8E5M2, F8E4M3:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case F64, I64, U64:
		return 8
	}
	return 0
}

// Tensor is one named array: Data holds the elements little-endian,
// row-major, len(Data) == product(Shape) * DType.Size(). An empty Shape is a
// scalar (one element).
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// NumElements returns the product of the shape, or an error if a dimension
// is negative or the product overflows.
func NumElements(shape []int) (int, error) {
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v: dimension %d is negative", shape, i)
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("shape %v: element count overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that the tensor is well formed.
func (t Tensor) Validate() error {
	if t.Name == "" {
		return errors.New("tensor has an empty name")
	}
	if t.Name == metaKey {
		return fmt.Errorf("tensor name %q is reserved", metaKey)
	}
	if !utf8.ValidString(t.Name) {
		return fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
	}
	size := t.DType.Size()
	if size == 0 {
		return fmt.Errorf("tensor %q: unknown dtype %q", t.Name, t.DType)
	}
	n, err := NumElements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if n > math.MaxInt/size || n*size != len(t.Data) {
		return fmt.Errorf("tensor %q: %s%v needs %d×%d bytes, has %d", t.Name, t.DType, t.Shape, n, size, len(t.Data))
	}
	return nil
}

// F32Tensor encodes v as an F32 tensor.
func F32Tensor(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: F32, Shape: append([]int(nil), shape...), Data: b}
}

// F64Tensor encodes v as an F64 tensor.
func F64Tensor(name string, shape []int, v []float64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return Tensor{Name: name, DType: F64, Shape: append([]int(nil), shape...), Data: b}
}

// I64Tensor encodes v as an I64 tensor.
func I64Tensor(name string, shape []int, v []int64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{Name: name, DType: I64, Shape: append([]int(nil), shape...), Data: b}
}

// Float32s decodes an F32 tensor.
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != F32 || len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("tensor %q is %s with %d bytes, want F32", t.Name, t.DType, len(t.Data))
	}
	v := make([]float32, len(t.Data)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return v, nil
}

// Float64s decodes an F64 tensor.
func (t Tensor) Float64s() ([]float64, error) {
	if t.DType != F64 || len(t.Data)%8 != 0 {
		return nil, fmt.Errorf("tensor %q is %s with %d bytes, want F64", t.Name, t.DType, len(t.Data))
	}
	v := make([]float64, len(t.Data)/8)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return v, nil
}

// Int64s decodes an I64 tensor.
func (t Tensor) Int64s() ([]int64, error) {
	if t.DType != I64 || len(t.Data)%8 != 0 {
		return nil, fmt.Errorf("tensor %q is %s with %d bytes, want I64", t.Name, t.DType, len(t.Data))
	}
	v := make([]int64, len(t.Data)/8)
	for i := range v {
		v[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return v, nil
}

type tensorEntry struct {
	DType       DType   `json:"dtype"`
	Shape       []int   `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// safetensorsHeader builds the padded JSON header. Tensor data is laid out in
// the order given, so the same inputs always give the same bytes.
func safetensorsHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	seen := make(map[string]bool, len(tensors))
	var buf bytes.Buffer
	buf.WriteByte('{')
	if len(metadata) > 0 {
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
			}
		}
		m, err := json.Marshal(metadata) // sorted keys
		if err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		buf.WriteString(`"` + metaKey + `":`)
		buf.Write(m)
	}
	var off int64
	for i, t := range tensors {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		e, err := json.Marshal(tensorEntry{DType: t.DType, Shape: shape, DataOffsets: []int64{off, off + int64(len(t.Data))}})
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		name, _ := json.Marshal(t.Name)
		if i > 0 || len(metadata) > 0 {
			buf.WriteByte(',')
		}
		buf.Write(name)
		buf.WriteByte(':')
		buf.Write(e)
		off += int64(len(t.Data))
	}
	buf.WriteByte('}')
	for (8+buf.Len())%headerAlign != 0 {
		buf.WriteByte(' ')
	}
	return buf.Bytes(), nil
}

// WriteSafetensors writes tensors (in the given order) and metadata as one
// safetensors file. Names must be unique.
func WriteSafetensors(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	h, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	if _, err := w.Write(h); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// EncodeSafetensors returns the safetensors encoding of tensors and metadata.
func EncodeSafetensors(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	h, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	size := 8 + len(h)
	for _, t := range tensors {
		size += len(t.Data)
	}
	out := make([]byte, 8, size)
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	out = append(out, h...)
	for _, t := range tensors {
		out = append(out, t.Data...)
	}
	return out, nil
}

// parsedHeader is a validated header: tensors sorted by offset, dataLen the
// number of data bytes that must follow it.
type parsedHeader struct {
	tensors  []Tensor // Data nil
	offsets  [][2]int64
	metadata map[string]string
	dataLen  int64
}

// parseSafetensorsHeader validates the JSON header strictly: one object,
// no duplicate keys, no unknown fields, known dtypes, sizes matching shapes,
// and offsets that tile [0, dataLen) with no gap or overlap.
func parseSafetensorsHeader(h []byte) (*parsedHeader, error) {
	if !utf8.Valid(h) {
		return nil, errors.New("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(h))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("header JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("header JSON: want an object, got %v", tok)
	}
	p := &parsedHeader{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("header JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("header JSON: want a key, got %v", tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("header: key %q appears twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("header JSON: value of %q: %w", name, err)
		}
		if name == metaKey {
			if err := strictUnmarshal(raw, &p.metadata); err != nil {
				return nil, fmt.Errorf("header: %s must map strings to strings: %w", metaKey, err)
			}
			continue
		}
		if name == "" {
			return nil, errors.New("header: tensor with an empty name")
		}
		var e tensorEntry
		var fields map[string]json.RawMessage
		if err := strictUnmarshal(raw, &fields); err != nil {
			return nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		for _, f := range []string{"dtype", "shape", "data_offsets"} {
			if _, ok := fields[f]; !ok {
				return nil, fmt.Errorf("header: tensor %q: missing %q", name, f)
			}
		}
		if err := strictUnmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		t := Tensor{Name: name, DType: e.DType, Shape: e.Shape}
		size := t.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("header: tensor %q: unknown dtype %q", name, e.DType)
		}
		n, err := NumElements(t.Shape)
		if err != nil {
			return nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("header: tensor %q: data_offsets has %d numbers, want 2", name, len(e.DataOffsets))
		}
		if e.Shape == nil {
			return nil, fmt.Errorf("header: tensor %q: shape is null, want a list", name)
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end < b {
			return nil, fmt.Errorf("header: tensor %q: bad data_offsets [%d, %d]", name, b, end)
		}
		if n > math.MaxInt64/size || int64(n*size) != end-b {
			return nil, fmt.Errorf("header: tensor %q: %s%v needs %d bytes, data_offsets [%d, %d] give %d", name, t.DType, t.Shape, int64(n)*int64(size), b, end, end-b)
		}
		p.tensors = append(p.tensors, t)
		p.offsets = append(p.offsets, [2]int64{b, end})
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return nil, fmt.Errorf("header JSON: %w", err)
	}
	rest := h[dec.InputOffset():]
	if len(bytes.TrimRight(rest, " ")) != 0 {
		return nil, fmt.Errorf("header: %d unexpected bytes after the JSON object (only space padding is allowed)", len(rest))
	}
	idx := make([]int, len(p.tensors))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		oa, ob := p.offsets[idx[a]], p.offsets[idx[b]]
		if oa[0] != ob[0] {
			return oa[0] < ob[0]
		}
		return oa[1] < ob[1]
	})
	tensors := make([]Tensor, len(idx))
	offsets := make([][2]int64, len(idx))
	var next int64
	for i, j := range idx {
		tensors[i], offsets[i] = p.tensors[j], p.offsets[j]
		if offsets[i][0] != next {
			return nil, fmt.Errorf("header: tensor %q starts at %d, want %d (data must be contiguous, without gaps or overlaps)", tensors[i].Name, offsets[i][0], next)
		}
		next = offsets[i][1]
	}
	p.tensors, p.offsets, p.dataLen = tensors, offsets, next
	return p, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

func readHeaderLen(lenBytes []byte, limit int64) (int64, error) {
	n := binary.LittleEndian.Uint64(lenBytes)
	if n < 2 || n > MaxSafetensorsHeader {
		return 0, fmt.Errorf("header length %d is outside [2, %d]", n, MaxSafetensorsHeader)
	}
	if limit >= 0 && int64(n) > limit {
		return 0, fmt.Errorf("header length %d exceeds the %d bytes after it", n, limit)
	}
	return int64(n), nil
}

// DecodeSafetensors parses a whole safetensors file held in memory. The
// returned tensors are sorted by data offset and their Data aliases b.
func DecodeSafetensors(b []byte) ([]Tensor, map[string]string, error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("safetensors: %d bytes is shorter than the 8-byte header length", len(b))
	}
	n, err := readHeaderLen(b[:8], int64(len(b)-8))
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	p, err := parseSafetensorsHeader(b[8 : 8+n])
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	data := b[8+n:]
	if int64(len(data)) != p.dataLen {
		return nil, nil, fmt.Errorf("safetensors: header describes %d data bytes, file has %d", p.dataLen, len(data))
	}
	for i := range p.tensors {
		o := p.offsets[i]
		p.tensors[i].Data = data[o[0]:o[1]:o[1]]
	}
	return p.tensors, p.metadata, nil
}

// ReadSafetensors reads one safetensors file from r, which must end where the
// file ends. Tensors are returned sorted by data offset.
func ReadSafetensors(r io.Reader) ([]Tensor, map[string]string, error) {
	var lb [8]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, nil, fmt.Errorf("safetensors: read header length: %w", err)
	}
	n, err := readHeaderLen(lb[:], -1)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	h, err := readExactly(r, n)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: read %d-byte header: %w", n, err)
	}
	p, err := parseSafetensorsHeader(h)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	if p.dataLen > math.MaxInt {
		return nil, nil, fmt.Errorf("safetensors: %d data bytes do not fit in memory", p.dataLen)
	}
	for i := range p.tensors {
		o := p.offsets[i]
		buf, err := readExactly(r, o[1]-o[0])
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors: read tensor %q (%d bytes at offset %d): %w", p.tensors[i].Name, o[1]-o[0], o[0], err)
		}
		p.tensors[i].Data = buf
	}
	var extra [1]byte
	if k, _ := io.ReadFull(r, extra[:]); k != 0 {
		return nil, nil, fmt.Errorf("safetensors: data continues past the %d bytes the header describes", p.dataLen)
	}
	return p.tensors, p.metadata, nil
}

// readExactly reads n bytes from r. A stream has no length to check a
// declared size against, so memory grows with what actually arrives
// (doubling, from at most readChunk): a header that declares terabytes
// fails at the stream's end, not in make.
func readExactly(r io.Reader, n int64) ([]byte, error) {
	const readChunk = 16 << 20
	buf := make([]byte, 0, min(n, readChunk))
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(n-int64(len(buf)), int64(cap(buf)))))
		}
		k, err := io.ReadFull(r, buf[len(buf):int(min(int64(cap(buf)), n))])
		buf = buf[:len(buf)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("got %d of %d bytes: %w", len(buf), n, err)
		}
	}
	return buf, nil
}

// TensorByName returns the tensor called name.
func TensorByName(tensors []Tensor, name string) (Tensor, error) {
	for _, t := range tensors {
		if t.Name == name {
			return t, nil
		}
	}
	return Tensor{}, fmt.Errorf("no tensor named %q", name)
}

// SafetensorsReader presents tensors as a safetensors file without copying
// their data: it reads from the tensors' own Data slices, which must not
// change while it is in use. It implements io.ReaderAt and io.ReadSeeker,
// so an S3 upload can send parts in parallel and retry.
type SafetensorsReader struct {
	segs   [][]byte
	starts []int64 // starts[i] is the file offset of segs[i]
	size   int64
	off    int64
}

// NewSafetensorsReader validates tensors and metadata as WriteSafetensors
// does and returns a reader of the file it would write.
func NewSafetensorsReader(tensors []Tensor, metadata map[string]string) (*SafetensorsReader, error) {
	h, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	head := make([]byte, 8, 8+len(h))
	binary.LittleEndian.PutUint64(head, uint64(len(h)))
	r := &SafetensorsReader{}
	for _, s := range append([][]byte{append(head, h...)}, tensorData(tensors)...) {
		if len(s) == 0 {
			continue
		}
		r.segs = append(r.segs, s)
		r.starts = append(r.starts, r.size)
		r.size += int64(len(s))
	}
	return r, nil
}

func tensorData(tensors []Tensor) [][]byte {
	out := make([][]byte, len(tensors))
	for i, t := range tensors {
		out[i] = t.Data
	}
	return out
}

// Size is the length of the file.
func (r *SafetensorsReader) Size() int64 { return r.size }

// ReadAt implements io.ReaderAt.
func (r *SafetensorsReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("safetensors reader: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	i := sort.Search(len(r.starts), func(i int) bool { return r.starts[i] > off }) - 1
	for ; i >= 0 && i < len(r.segs) && n < len(p); i++ {
		k := copy(p[n:], r.segs[i][off+int64(n)-r.starts[i]:])
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader.
func (r *SafetensorsReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (r *SafetensorsReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("safetensors reader: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("safetensors reader: negative position")
	}
	r.off = offset
	return offset, nil
}
