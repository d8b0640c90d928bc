package method

import (
	"fmt"
	"strconv"

	"github.com/sbtrain/sbtrain/storage"
)

// Writer collects the tensors and metadata of a snapshot in the order they
// are added, which is the order they are encoded in.
type Writer struct {
	Tensors []storage.Tensor
	Meta    map[string]string
}

// Vec adds the flat float32 tensor name.
func (w *Writer) Vec(name string, v []float32) {
	w.Tensors = append(w.Tensors, storage.F32Tensor(name, []int{len(v)}, v))
}

// Int records the metadata key as a decimal integer.
func (w *Writer) Int(key string, n int64) {
	if w.Meta == nil {
		w.Meta = map[string]string{}
	}
	w.Meta[key] = strconv.FormatInt(n, 10)
}

// Snapshot is a decoded snapshot with lookups whose errors name the file
// and what is wrong.
type Snapshot struct {
	Name    string
	Tensors map[string]storage.Tensor
	Meta    map[string]string
}

// NewSnapshot indexes decoded tensors by name; name labels errors.
func NewSnapshot(name string, ts []storage.Tensor, meta map[string]string) *Snapshot {
	sn := &Snapshot{Name: name, Tensors: make(map[string]storage.Tensor, len(ts)), Meta: meta}
	for _, t := range ts {
		sn.Tensors[t.Name] = t
	}
	return sn
}

// Vec copies the tensor name, which must hold exactly n values, into into.
func (sn *Snapshot) Vec(name string, n int, into []float32) error {
	t, ok := sn.Tensors[name]
	if !ok {
		return fmt.Errorf("%s: tensor %s is missing", sn.Name, name)
	}
	v, err := t.Float32s()
	if err != nil {
		return fmt.Errorf("%s: tensor %s: %w", sn.Name, name, err)
	}
	if len(v) != n {
		return fmt.Errorf("%s: tensor %s has %d values, want %d", sn.Name, name, len(v), n)
	}
	copy(into, v)
	return nil
}

// Has says whether the snapshot holds the tensor name.
func (sn *Snapshot) Has(name string) bool { _, ok := sn.Tensors[name]; return ok }

// Int reads the metadata key as a non-negative integer.
func (sn *Snapshot) Int(key string) (int64, error) {
	v, ok := sn.Meta[key]
	if !ok {
		return 0, fmt.Errorf("%s: metadata %q is missing", sn.Name, key)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: metadata %s = %q, want a non-negative integer", sn.Name, key, v)
	}
	return n, nil
}
