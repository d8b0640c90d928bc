package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte)
// and the number of dimensions.
const (
	idxUbyte       = 0x08
	idxImagesMagic = 0x00000803
	idxLabelsMagic = 0x00000801
	// maxIDXBytes bounds the body a header may declare: MNIST's training
	// images are 47 MB, and a header's dimensions could otherwise size
	// terabytes.
	maxIDXBytes = 1 << 31
)

// idxArray is a decoded IDX file of unsigned bytes.
type idxArray struct {
	dims []int
	data []byte
}

// readIDX reads an IDX file, gzip-compressed or not (told by its first
// bytes), and checks it has want dimensions.
func readIDX(path string, wantDims int) (*idxArray, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read idx: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read idx %s: gzip: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	a, err := decodeIDX(r, path)
	if err != nil {
		return nil, err
	}
	if len(a.dims) != wantDims {
		kind := "labels (magic 0x00000801, 1 dimension)"
		if wantDims == 3 {
			kind = "images (magic 0x00000803, 3 dimensions)"
		}
		return nil, fmt.Errorf("read idx %s: %d dimensions %v, want %s", path, len(a.dims), a.dims, kind)
	}
	return a, nil
}

// decodeIDX decodes one IDX array of unsigned bytes from r; name labels
// errors. The body must be exactly as long as the header's dimensions say.
// Memory grows with the bytes actually read, never with what a header
// claims.
func decodeIDX(r io.Reader, name string) (*idxArray, error) {
	fail := func(format string, args ...any) (*idxArray, error) {
		return nil, fmt.Errorf("read idx %s: %s", name, fmt.Sprintf(format, args...))
	}
	var magic [4]byte
	if n, err := io.ReadFull(r, magic[:]); err != nil {
		return fail("truncated header: %d of 4 magic bytes", n)
	}
	m := binary.BigEndian.Uint32(magic[:])
	if magic[0] != 0 || magic[1] != 0 || magic[2] != idxUbyte || magic[3] < 1 || magic[3] > 4 {
		return fail("magic number 0x%08x, want 0x%08x (images) or 0x%08x (labels) of unsigned bytes", m, idxImagesMagic, idxLabelsMagic)
	}
	nd := int(magic[3])
	hdr := make([]byte, 4*nd)
	if n, err := io.ReadFull(r, hdr); err != nil {
		return fail("truncated header: %d of %d dimension bytes", n, len(hdr))
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(hdr[4*i:])
		dims[i] = int(d)
		total *= int64(d)
		if total > maxIDXBytes {
			return fail("dimensions %v exceed %d bytes", dims[:i+1], int64(maxIDXBytes))
		}
	}
	if total == 0 {
		return fail("dimensions %v hold no data", dims)
	}
	var body bytes.Buffer
	n, err := io.Copy(&body, io.LimitReader(r, total+1))
	if err != nil {
		return fail("read body: %v", err)
	}
	switch {
	case n < total:
		return fail("truncated body: %d bytes, want %d for dimensions %v", n, total, dims)
	case n > total:
		return fail("trailing bytes after the %d the dimensions %v declare", total, dims)
	}
	return &idxArray{dims: dims, data: body.Bytes()}, nil
}
