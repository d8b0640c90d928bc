package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A run's objects live under runs/<run-id>/:
//
//	runs/<id>/ckpt/<seq>-p<phase>-s<step>/<blob>          blobs, written first
//	runs/<id>/ckpt/<seq>-p<phase>-s<step>/MANIFEST.json   then the manifest
//	runs/<id>/LATEST                                      then the pointer
//
// seq, phase and step are zero-padded so keys sort in commit order. The
// manifest is the commit point: it is written, once and never overwritten,
// only after every blob exists with the size it records, and it carries
// each blob's sha256 and its own. LATEST names the newest manifest for
// people and quick readers; a loader still verifies what it names and falls
// back to older manifests when something does not verify.

// ManifestFormatVersion is the manifest format this code writes and the
// newest it reads.
const ManifestFormatVersion = 1

const (
	manifestName = "MANIFEST.json"
	latestName   = "LATEST"
	// maxManifestBytes bounds what we read as a manifest: a corrupt size
	// must not make us allocate much.
	maxManifestBytes = 16 << 20
)

var (
	runIDPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	blobNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	ckptDirPattern  = regexp.MustCompile(`^([0-9]{8})-p([0-9]{4})-s([0-9]{12})$`)
	sha256Pattern   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidateRunID checks a run id: 1-128 of [A-Za-z0-9._-], not starting
// with a dot, dash or underscore.
func ValidateRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return fmt.Errorf("run id %q: want 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", id)
	}
	return nil
}

// Directions a checkpoint's phase trains.
const (
	DirectionBackward = "backward" // DSB: fitting B_n
	DirectionForward  = "forward"  // DSB: fitting F_n
	DirectionSI       = "si"       // stochastic interpolant: b and eta together
)

// Meta is what the trainer says about a checkpoint.
type Meta struct {
	Phase        int    `json:"phase"`
	IPFIteration int    `json:"ipf_iteration"`
	Direction    string `json:"direction"`
	Step         int64  `json:"step"`
	PhaseEnd     bool   `json:"phase_end"`
	ConfigHash   string `json:"config_hash"`
}

func (m Meta) validate() error {
	switch {
	case m.Phase < 0 || m.Phase > 9999:
		return fmt.Errorf("phase %d: want 0..9999", m.Phase)
	case m.Step < 0 || m.Step > 999_999_999_999:
		return fmt.Errorf("step %d: want 0..999999999999", m.Step)
	case m.IPFIteration < 0:
		return fmt.Errorf("ipf_iteration %d is negative", m.IPFIteration)
	case m.Direction != DirectionBackward && m.Direction != DirectionForward && m.Direction != DirectionSI:
		return fmt.Errorf("direction %q: want %q, %q or %q", m.Direction, DirectionBackward, DirectionForward, DirectionSI)
	case m.ConfigHash == "":
		return errors.New("config_hash is empty")
	}
	return nil
}

// BlobRef records one blob of a checkpoint.
type BlobRef struct {
	Name   string `json:"name"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest is a committed checkpoint's description.
type Manifest struct {
	FormatVersion int    `json:"format_version"`
	RunID         string `json:"run_id"`
	Seq           int64  `json:"seq"`
	Meta
	Created string    `json:"created"` // RFC 3339, UTC
	Blobs   []BlobRef `json:"blobs"`
	// Checksum is the sha256 of this manifest's JSON encoding with
	// Checksum empty, so a damaged manifest that still parses is caught.
	Checksum string `json:"checksum"`
}

// Blob returns the named blob's reference.
func (m *Manifest) Blob(name string) (BlobRef, bool) {
	for _, b := range m.Blobs {
		if b.Name == name {
			return b, true
		}
	}
	return BlobRef{}, false
}

// ID names a checkpoint: Seq orders checkpoints of a run (one commit each),
// Phase and Step make keys self-describing.
type ID struct {
	Seq   int64
	Phase int
	Step  int64
}

func (id ID) dirName() string { return fmt.Sprintf("%08d-p%04d-s%012d", id.Seq, id.Phase, id.Step) }

func (id ID) String() string { return id.dirName() }

// ParseID parses a checkpoint directory name, the inverse of ID.String.
func ParseID(s string) (ID, error) {
	id, ok := parseDirName(s)
	if !ok {
		return ID{}, fmt.Errorf("checkpoint id %q: want seq-phase-step as 00000001-p0000-s000000000000", s)
	}
	return id, nil
}

func parseDirName(s string) (ID, bool) {
	m := ckptDirPattern.FindStringSubmatch(s)
	if m == nil {
		return ID{}, false
	}
	seq, _ := strconv.ParseInt(m[1], 10, 64)
	phase, _ := strconv.Atoi(m[2])
	step, _ := strconv.ParseInt(m[3], 10, 64)
	return ID{Seq: seq, Phase: phase, Step: step}, true
}

// Checkpoints reads and writes one run's checkpoints in a Store.
type Checkpoints struct {
	store Store
	run   string
	log   *slog.Logger
	now   func() time.Time
}

// NewCheckpoints returns the checkpoints of run runID in store. log nil:
// slog.Default().
func NewCheckpoints(store Store, runID string, log *slog.Logger) (*Checkpoints, error) {
	if err := ValidateRunID(runID); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Checkpoints{store: store, run: runID, log: log, now: time.Now}, nil
}

// RunPrefix is the key prefix of everything that belongs to run.
func RunPrefix(run string) string { return "runs/" + run + "/" }

func (c *Checkpoints) ckptPrefix() string             { return RunPrefix(c.run) + "ckpt/" }
func (c *Checkpoints) dir(id ID) string               { return c.ckptPrefix() + id.dirName() + "/" }
func (c *Checkpoints) manifestKey(id ID) string       { return c.dir(id) + manifestName }
func (c *Checkpoints) latestKey() string              { return RunPrefix(c.run) + latestName }
func (c *Checkpoints) blobKey(id ID, n string) string { return c.dir(id) + n }

func validateBlobName(name string) error {
	if !blobNamePattern.MatchString(name) || name == manifestName {
		return fmt.Errorf("blob name %q: want 1-128 characters of A-Z a-z 0-9 . _ -, not %s", name, manifestName)
	}
	return nil
}

// Entry is one checkpoint directory found in the store.
type Entry struct {
	ID          ID
	ManifestKey string
	// Manifest is nil when the directory has no readable, well-formed
	// manifest; Err then says why (an uncommitted or abandoned write shows
	// as "no manifest").
	Manifest *Manifest
	Err      error
	// Latest marks the one the LATEST pointer names.
	Latest bool
	Bytes  int64 // total size of the objects in the directory
}

// List returns the run's checkpoint directories in commit (seq) order.
// Manifests are read and checked; blobs are not (see Verify).
func (c *Checkpoints) List(ctx context.Context) ([]Entry, error) {
	ents, err := c.scan(ctx)
	if err != nil {
		return nil, err
	}
	for i := range ents {
		if err := c.fill(ctx, &ents[i]); err != nil {
			return nil, err
		}
	}
	return ents, nil
}

// scan lists the run's checkpoint directories in seq order, marking LATEST,
// without reading manifests (Manifest nil, Err nil unless there is none).
func (c *Checkpoints) scan(ctx context.Context) ([]Entry, error) {
	objs, err := c.store.List(ctx, c.ckptPrefix())
	if err != nil {
		return nil, fmt.Errorf("list checkpoints of run %s: %w", c.run, err)
	}
	byDir := map[ID]*Entry{}
	var order []ID
	hasManifest := map[ID]bool{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, c.ckptPrefix())
		dir, name, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		id, ok := parseDirName(dir)
		if !ok {
			continue
		}
		e := byDir[id]
		if e == nil {
			e = &Entry{ID: id, ManifestKey: c.manifestKey(id)}
			byDir[id] = e
			order = append(order, id)
		}
		e.Bytes += o.Size
		if name == manifestName {
			hasManifest[id] = true
		}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Seq < order[j].Seq })
	latest, lerr := c.readLatest(ctx)
	out := make([]Entry, 0, len(order))
	for _, id := range order {
		e := byDir[id]
		if !hasManifest[id] {
			e.Err = invalid(fmt.Errorf("no manifest %s: never committed (incomplete or abandoned write): %w", e.ManifestKey, ErrNotFound))
		}
		e.Latest = lerr == nil && latest.Manifest == e.ManifestKey
		out = append(out, *e)
	}
	return out, nil
}

// fill reads and checks e's manifest; content errors land in e.Err, other
// errors (the store failing) are returned.
func (c *Checkpoints) fill(ctx context.Context, e *Entry) error {
	if e.Err != nil || e.Manifest != nil {
		return nil
	}
	e.Manifest, e.Err = c.readManifest(ctx, e.ManifestKey, e.ID)
	if e.Err != nil && !errors.Is(e.Err, ErrInvalid) {
		return fmt.Errorf("list checkpoints of run %s: %w", c.run, e.Err)
	}
	return nil
}

type latestPointer struct {
	Manifest string `json:"manifest"`
	Seq      int64  `json:"seq"`
}

func (c *Checkpoints) readLatest(ctx context.Context) (latestPointer, error) {
	b, err := readSmall(ctx, c.store, c.latestKey(), 64<<10)
	if err != nil {
		return latestPointer{}, err
	}
	return decodeLatest(b, c.latestKey(), c.ckptPrefix(), c.run)
}

// decodeLatest parses a LATEST pointer; content errors match ErrInvalid.
func decodeLatest(b []byte, key, ckptPrefix, run string) (latestPointer, error) {
	var p latestPointer
	if err := strictUnmarshal(b, &p); err != nil {
		return latestPointer{}, invalid(fmt.Errorf("%s: %w", key, err))
	}
	dir, ok := strings.CutSuffix(strings.TrimPrefix(p.Manifest, ckptPrefix), "/"+manifestName)
	if !strings.HasPrefix(p.Manifest, ckptPrefix) || !ok {
		return latestPointer{}, invalid(fmt.Errorf("%s: manifest %q is not a manifest of run %s", key, p.Manifest, run))
	}
	if id, ok := parseDirName(dir); !ok || id.Seq != p.Seq {
		return latestPointer{}, invalid(fmt.Errorf("%s: manifest %q and seq %d do not name one checkpoint", key, p.Manifest, p.Seq))
	}
	return p, nil
}

// readSmall reads a whole object of at most limit bytes.
func readSmall(ctx context.Context, s Store, key string, limit int64) ([]byte, error) {
	// Small objects that are overwritten in place (LATEST, LEASE) can be
	// replaced mid-read; a few fresh tries then read the new version.
	for try := 1; ; try++ {
		b, err := readSmallOnce(ctx, s, key, limit)
		if !errors.Is(err, errReplaced) || try == 3 {
			return b, err
		}
	}
}

func readSmallOnce(ctx context.Context, s Store, key string, limit int64) ([]byte, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if info.Size > limit {
		return nil, invalid(fmt.Errorf("%s: %d bytes, at most %d expected", key, info.Size, limit))
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if int64(len(b)) != info.Size {
		return nil, fmt.Errorf("read %s: got %d bytes, the store says %d", key, len(b), info.Size)
	}
	return b, nil
}

func manifestChecksum(m Manifest) (string, error) {
	m.Checksum = ""
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ErrNewerFormat marks a manifest written by a newer sbtrain.
var ErrNewerFormat = errors.New("manifest format is newer than this program reads")

// decodeManifest parses and checks a manifest's bytes; key names it in
// errors, and it must be the manifest of checkpoint id of run.
func decodeManifest(b []byte, key, run string, id ID, blobPrefix string) (*Manifest, error) {
	var v struct {
		FormatVersion *int `json:"format_version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("manifest %s: not valid JSON (truncated or damaged?): %w", key, err)
	}
	if v.FormatVersion == nil {
		return nil, fmt.Errorf("manifest %s: no format_version", key)
	}
	if *v.FormatVersion > ManifestFormatVersion {
		return nil, fmt.Errorf("manifest %s: format version %d, this sbtrain reads up to %d; upgrade sbtrain: %w", key, *v.FormatVersion, ManifestFormatVersion, ErrNewerFormat)
	}
	if *v.FormatVersion < 1 {
		return nil, fmt.Errorf("manifest %s: format version %d, want 1..%d", key, *v.FormatVersion, ManifestFormatVersion)
	}
	var m Manifest
	if err := strictUnmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", key, err)
	}
	want, err := manifestChecksum(m)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", key, err)
	}
	if m.Checksum != want {
		return nil, fmt.Errorf("manifest %s: checksum %q does not match its content (%s): damaged", key, m.Checksum, want)
	}
	if m.RunID != run {
		return nil, fmt.Errorf("manifest %s: run_id %q, want %q", key, m.RunID, run)
	}
	if got := (ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}); got != id {
		return nil, fmt.Errorf("manifest %s: describes checkpoint %s, but lies in %s", key, got, id)
	}
	if err := m.Meta.validate(); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", key, err)
	}
	if len(m.Blobs) == 0 {
		return nil, fmt.Errorf("manifest %s: no blobs", key)
	}
	seen := map[string]bool{}
	for _, bl := range m.Blobs {
		switch {
		case validateBlobName(bl.Name) != nil:
			return nil, fmt.Errorf("manifest %s: %w", key, validateBlobName(bl.Name))
		case seen[bl.Name]:
			return nil, fmt.Errorf("manifest %s: blob %q listed twice", key, bl.Name)
		case bl.Key != blobPrefix+bl.Name:
			return nil, fmt.Errorf("manifest %s: blob %q has key %q, want %q", key, bl.Name, bl.Key, blobPrefix+bl.Name)
		case bl.Size < 0:
			return nil, fmt.Errorf("manifest %s: blob %q has negative size %d", key, bl.Name, bl.Size)
		case !sha256Pattern.MatchString(bl.SHA256):
			return nil, fmt.Errorf("manifest %s: blob %q sha256 %q is not 64 lowercase hex digits", key, bl.Name, bl.SHA256)
		}
		seen[bl.Name] = true
	}
	return &m, nil
}

func (c *Checkpoints) readManifest(ctx context.Context, key string, id ID) (*Manifest, error) {
	b, err := readSmall(ctx, c.store, key, maxManifestBytes)
	if errors.Is(err, ErrNotFound) {
		return nil, invalid(fmt.Errorf("no manifest %s: never committed (incomplete or abandoned write): %w", key, err))
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := decodeManifest(b, key, c.run, id, c.dir(id))
	if err != nil {
		return nil, invalid(err)
	}
	return m, nil
}

// ErrInvalid marks a checkpoint whose stored content is wrong: a manifest
// missing, damaged or of a newer format, a blob missing or whose size or
// checksum disagrees with the manifest. A loader falls back past these; any
// other error (the store not answering, a cut connection) stops it, so a
// network problem never silently loads an older checkpoint.
var ErrInvalid = errors.New("invalid checkpoint")

type invalidError struct{ err error }

func (e invalidError) Error() string        { return e.err.Error() }
func (e invalidError) Unwrap() error        { return e.err }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(err error) error { return invalidError{err} }

// NextID returns the ID for a new checkpoint at (phase, step): one past the
// highest seq in use, committed or not, so an abandoned write is never
// reused.
func (c *Checkpoints) NextID(ctx context.Context, phase int, step int64) (ID, error) {
	entries, err := c.scan(ctx)
	if err != nil {
		return ID{}, err
	}
	next := int64(1)
	if n := len(entries); n > 0 {
		next = entries[n-1].ID.Seq + 1
	}
	if next > 99_999_999 {
		return ID{}, fmt.Errorf("run %s: checkpoint sequence %d exceeds 8 digits", c.run, next)
	}
	if phase < 0 || phase > 9999 || step < 0 || step > 999_999_999_999 {
		return ID{}, fmt.Errorf("checkpoint at phase %d step %d: want phase 0..9999 and step 0..999999999999", phase, step)
	}
	return ID{Seq: next, Phase: phase, Step: step}, nil
}

// hashingReader counts and hashes what passes through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// PutBlob writes one blob of checkpoint id (any process may write blobs; the
// committer needs their BlobRefs).
func (c *Checkpoints) PutBlob(ctx context.Context, id ID, name string, data []byte) (BlobRef, error) {
	return c.PutBlobFrom(ctx, id, name, bytes.NewReader(data), int64(len(data)))
}

// PutBlobFrom writes size bytes read from r as one blob. The sha256 is
// computed while the upload runs, not before it.
func (c *Checkpoints) PutBlobFrom(ctx context.Context, id ID, name string, r io.ReaderAt, size int64) (BlobRef, error) {
	if err := validateBlobName(name); err != nil {
		return BlobRef{}, err
	}
	key := c.blobKey(id, name)
	type result struct {
		sum []byte
		err error
	}
	hashed := make(chan result, 1)
	go func() { // ends after reading size bytes from memory or disk
		h := sha256.New()
		_, err := io.Copy(h, io.NewSectionReader(r, 0, size))
		hashed <- result{h.Sum(nil), err}
	}()
	err := c.store.Put(ctx, key, io.NewSectionReader(r, 0, size), size)
	res := <-hashed
	if err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: blob %s: %w", id, name, err)
	}
	if res.err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: blob %s: hash: %w", id, name, res.err)
	}
	return BlobRef{Name: name, Key: key, Size: size, SHA256: hex.EncodeToString(res.sum)}, nil
}

// PutTensors writes tensors as one safetensors blob without copying their
// data into a file image first.
func (c *Checkpoints) PutTensors(ctx context.Context, id ID, name string, tensors []Tensor, metadata map[string]string) (BlobRef, error) {
	r, err := NewSafetensorsReader(tensors, metadata)
	if err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: blob %s: %w", id, name, err)
	}
	return c.PutBlobFrom(ctx, id, name, r, r.Size())
}

// PutBlobStream writes a blob read from r, hashing as it streams. A failed
// upload is not retried (r cannot be replayed); the caller may retry.
func (c *Checkpoints) PutBlobStream(ctx context.Context, id ID, name string, r io.Reader) (BlobRef, error) {
	if err := validateBlobName(name); err != nil {
		return BlobRef{}, err
	}
	key := c.blobKey(id, name)
	hr := &hashingReader{r: r, h: sha256.New()}
	if err := c.store.Put(ctx, key, hr, -1); err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: blob %s: %w", id, name, err)
	}
	return BlobRef{Name: name, Key: key, Size: hr.n, SHA256: hex.EncodeToString(hr.h.Sum(nil))}, nil
}

// DescribeBlob reads an existing blob and returns its BlobRef, for a
// committer that did not write it and was not told its checksum.
func (c *Checkpoints) DescribeBlob(ctx context.Context, id ID, name string) (BlobRef, error) {
	if err := validateBlobName(name); err != nil {
		return BlobRef{}, err
	}
	key := c.blobKey(id, name)
	rc, _, err := c.store.Get(ctx, key)
	if err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: blob %s: %w", id, name, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return BlobRef{}, fmt.Errorf("checkpoint %s: read blob %s: %w", id, name, err)
	}
	return BlobRef{Name: name, Key: key, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Commit makes checkpoint id visible: it checks that every blob exists with
// its recorded size, writes the manifest (never over an existing one), then
// moves LATEST to it unless LATEST already names a newer checkpoint.
func (c *Checkpoints) Commit(ctx context.Context, id ID, meta Meta, blobs []BlobRef) (*Manifest, error) {
	return c.commit(ctx, id, meta, blobs, true)
}

// commit is Commit; checkBlobs false skips the blob size checks when this
// process has just written the blobs itself.
func (c *Checkpoints) commit(ctx context.Context, id ID, meta Meta, blobs []BlobRef, checkBlobs bool) (*Manifest, error) {
	if err := meta.validate(); err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: %w", id, err)
	}
	if meta.Phase != id.Phase || meta.Step != id.Step {
		return nil, fmt.Errorf("commit checkpoint %s: meta says phase %d step %d", id, meta.Phase, meta.Step)
	}
	if id.Seq < 1 {
		return nil, fmt.Errorf("commit checkpoint %s: seq must be positive", id)
	}
	m := Manifest{
		FormatVersion: ManifestFormatVersion, RunID: c.run, Seq: id.Seq, Meta: meta,
		Created: c.now().UTC().Format(time.RFC3339Nano),
		Blobs:   append([]BlobRef(nil), blobs...),
	}
	sort.Slice(m.Blobs, func(i, j int) bool { return m.Blobs[i].Name < m.Blobs[j].Name })
	for _, b := range m.Blobs {
		if !checkBlobs {
			break
		}
		info, err := c.store.Stat(ctx, b.Key)
		if err != nil {
			return nil, fmt.Errorf("commit checkpoint %s: blob %s: %w", id, b.Name, err)
		}
		if info.Size != b.Size {
			return nil, fmt.Errorf("commit checkpoint %s: blob %s is %d bytes in the store, %d expected", id, b.Key, info.Size, b.Size)
		}
	}
	sum, err := manifestChecksum(m)
	if err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: %w", id, err)
	}
	m.Checksum = sum
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: %w", id, err)
	}
	// Validate what we are about to commit exactly as a reader will.
	if _, err := decodeManifest(body, c.manifestKey(id), c.run, id, c.dir(id)); err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: %w", id, err)
	}
	if err := c.store.PutIfAbsent(ctx, c.manifestKey(id), bytes.NewReader(body), int64(len(body))); err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: manifest: %w", id, err)
	}
	if cur, err := c.readLatest(ctx); err == nil && cur.Seq > id.Seq {
		// A pointer to a newer checkpoint stays only while that checkpoint
		// exists: one removed by hand would otherwise pin LATEST forever.
		_, serr := c.store.Stat(ctx, cur.Manifest)
		if !errors.Is(serr, ErrNotFound) {
			c.log.Warn("LATEST already names a newer checkpoint; leaving it", "run", c.run, "latest", cur.Manifest, "committed", c.manifestKey(id))
			return &m, nil
		}
		c.log.Warn("LATEST names a checkpoint that is not in the store; repairing it", "run", c.run, "latest", cur.Manifest, "committed", c.manifestKey(id))
	}
	if err := c.writeLatest(ctx, id); err != nil {
		// The manifest is the commit point, so the checkpoint is
		// committed and loadable; only the pointer is stale.
		return &m, fmt.Errorf("commit checkpoint %s: manifest written, LATEST not updated: %w", id, err)
	}
	return &m, nil
}

// Blob is one named blob to save: Data, or else a safetensors file of
// Tensors and Metadata.
type Blob struct {
	Name     string
	Data     []byte
	Tensors  []Tensor
	Metadata map[string]string
}

// Save writes a whole checkpoint from one process: blobs, manifest, LATEST.
func (c *Checkpoints) Save(ctx context.Context, meta Meta, blobs []Blob) (*Manifest, error) {
	if err := meta.validate(); err != nil {
		return nil, fmt.Errorf("save checkpoint: %w", err)
	}
	id, err := c.NextID(ctx, meta.Phase, meta.Step)
	if err != nil {
		return nil, fmt.Errorf("save checkpoint: %w", err)
	}
	refs := make([]BlobRef, 0, len(blobs))
	for _, b := range blobs {
		var ref BlobRef
		var err error
		if b.Tensors != nil {
			ref, err = c.PutTensors(ctx, id, b.Name, b.Tensors, b.Metadata)
		} else {
			ref, err = c.PutBlob(ctx, id, b.Name, b.Data)
		}
		if err != nil {
			return nil, fmt.Errorf("save checkpoint: %w", err)
		}
		refs = append(refs, ref)
	}
	return c.commit(ctx, id, meta, refs, false)
}

// readBlob reads and verifies one blob against its reference. keep false
// hashes without keeping the bytes.
func (c *Checkpoints) readBlob(ctx context.Context, b BlobRef, keep bool) ([]byte, error) {
	rc, info, err := c.store.Get(ctx, b.Key)
	if errors.Is(err, ErrNotFound) {
		return nil, invalid(fmt.Errorf("blob %s: %w", b.Key, err))
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", b.Key, err)
	}
	defer rc.Close()
	if info.Size != b.Size {
		return nil, invalid(fmt.Errorf("blob %s: %d bytes in the store, the manifest says %d", b.Key, info.Size, b.Size))
	}
	var data []byte
	var sum []byte
	if keep {
		data = make([]byte, b.Size)
		if sum, err = readHashing(ctx, rc, data); err != nil {
			return nil, fmt.Errorf("blob %s: read: %w", b.Key, err)
		}
	} else {
		h := sha256.New()
		if n, err := io.Copy(h, ctxReader{ctx, rc}); err != nil || n != b.Size {
			return nil, fmt.Errorf("blob %s: read %d of %d bytes: %v", b.Key, n, b.Size, err)
		}
		sum = h.Sum(nil)
	}
	if got := hex.EncodeToString(sum); got != b.SHA256 {
		return nil, invalid(fmt.Errorf("blob %s: sha256 %s, the manifest says %s: damaged", b.Key, got, b.SHA256))
	}
	return data, nil
}

// Verify reads checkpoint e's manifest and every blob, checking sizes and
// checksums.
func (c *Checkpoints) Verify(ctx context.Context, id ID) (*Manifest, error) {
	m, err := c.readManifest(ctx, c.manifestKey(id), id)
	if err != nil {
		return nil, err
	}
	for _, b := range m.Blobs {
		if _, err := c.readBlob(ctx, b, false); err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", id, err)
		}
	}
	return m, nil
}

// Loaded is a verified checkpoint held in memory.
type Loaded struct {
	Manifest *Manifest
	Blobs    map[string][]byte
}

// Tensors decodes the named blob as safetensors.
func (l *Loaded) Tensors(name string) ([]Tensor, map[string]string, error) {
	b, ok := l.Blobs[name]
	if !ok {
		return nil, nil, fmt.Errorf("checkpoint %d has no blob %q", l.Manifest.Seq, name)
	}
	t, meta, err := DecodeSafetensors(b)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %d blob %s: %w", l.Manifest.Seq, name, err)
	}
	return t, meta, nil
}

// Load loads checkpoint id, whose manifest and every blob must verify: a
// checkpoint other than the newest, such as a phase end kept by GC.
func (c *Checkpoints) Load(ctx context.Context, id ID) (*Loaded, error) {
	m, err := c.readManifest(ctx, c.manifestKey(id), id)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s of run %s: %w", id, c.run, err)
	}
	l := &Loaded{Manifest: m, Blobs: map[string][]byte{}}
	for _, b := range m.Blobs {
		data, err := c.readBlob(ctx, b, true)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint %s of run %s: %w", id, c.run, err)
		}
		l.Blobs[b.Name] = data
	}
	return l, nil
}

// ErrNoCheckpoint means the run has no checkpoint that verifies.
var ErrNoCheckpoint = errors.New("no valid checkpoint")

// LoadLatest loads the newest checkpoint whose manifest and blobs all
// verify, logging each newer one it skips and why. It returns
// ErrNoCheckpoint when none verifies (or none exists).
func (c *Checkpoints) LoadLatest(ctx context.Context) (*Loaded, error) {
	entries, err := c.scan(ctx)
	if err != nil {
		return nil, err
	}
	var reasons []string
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if err := c.fill(ctx, &e); err != nil {
			return nil, err
		}
		if e.Manifest == nil {
			level := slog.LevelWarn
			if errors.Is(e.Err, ErrNotFound) {
				level = slog.LevelInfo // blobs without a manifest: a write in progress or abandoned
			}
			c.log.Log(ctx, level, "skipping checkpoint", "run", c.run, "checkpoint", e.ID.String(), "reason", e.Err)
			reasons = append(reasons, fmt.Sprintf("%s: %v", e.ID, e.Err))
			continue
		}
		l := &Loaded{Manifest: e.Manifest, Blobs: map[string][]byte{}}
		var bad error
		for _, b := range e.Manifest.Blobs {
			data, err := c.readBlob(ctx, b, true)
			if err != nil {
				bad = err
				break
			}
			l.Blobs[b.Name] = data
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("load checkpoint of run %s: %w", c.run, ctx.Err())
		}
		if bad != nil {
			if !errors.Is(bad, ErrInvalid) {
				return nil, fmt.Errorf("load checkpoint %s of run %s: %w", e.ID, c.run, bad)
			}
			c.log.Warn("checkpoint does not verify; falling back to the previous one", "run", c.run, "checkpoint", e.ID.String(), "reason", bad)
			reasons = append(reasons, fmt.Sprintf("%s: %v", e.ID, bad))
			continue
		}
		if !e.Latest {
			c.log.Info("loading a checkpoint LATEST does not name", "run", c.run, "checkpoint", e.ID.String())
		}
		return l, nil
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("run %s in %s: no checkpoints: %w", c.run, c.store, ErrNoCheckpoint)
	}
	return nil, fmt.Errorf("run %s in %s: none of %d checkpoints verifies (%s): %w", c.run, c.store, len(reasons), strings.Join(reasons, "; "), ErrNoCheckpoint)
}

// GCResult says what GC kept and removed.
type GCResult struct {
	Kept, Removed []ID
}

// GC removes checkpoints except the newest keep committed ones, every
// phase-end checkpoint, and the newest one that verifies (so GC never
// leaves a run without a loadable checkpoint). Directories without a
// manifest older than the newest commit are abandoned writes and go too;
// newer ones may be in progress and stay. A checkpoint whose manifest
// exists but cannot be read (a newer format version, or damaged) always
// stays, with a warning: what this program cannot read it must not judge
// old. Each removal deletes the manifest before the blobs, so a reader
// never sees a manifest whose blobs are gone. Last, a LATEST that names a
// checkpoint which is not there is pointed at the newest one that
// verifies.
func (c *Checkpoints) GC(ctx context.Context, keep int) (GCResult, error) {
	if keep < 1 {
		return GCResult{}, fmt.Errorf("gc: keep %d, want at least 1", keep)
	}
	entries, err := c.List(ctx)
	if err != nil {
		return GCResult{}, err
	}
	keepSet := map[ID]bool{}
	var newestValid *Manifest // the newest checkpoint that verifies
	var newestCommitted int64 = -1
	n := 0
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Manifest == nil {
			continue
		}
		newestCommitted = max(newestCommitted, e.ID.Seq)
		if n < keep || e.Manifest.PhaseEnd {
			keepSet[e.ID] = true
		}
		n++
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Manifest == nil {
			continue
		}
		if m, err := c.Verify(ctx, e.ID); err == nil {
			keepSet[e.ID] = true
			newestValid = m
			break
		} else if !errors.Is(err, ErrInvalid) {
			return GCResult{}, fmt.Errorf("gc: %w", err)
		}
	}
	var res GCResult
	for _, e := range entries {
		unreadable := e.Manifest == nil && !errors.Is(e.Err, ErrNotFound)
		if unreadable {
			c.log.Warn("gc: keeping a checkpoint it cannot read", "run", c.run, "checkpoint", e.ID.String(), "reason", e.Err)
		}
		if keepSet[e.ID] || unreadable || (e.Manifest == nil && e.ID.Seq > newestCommitted) {
			res.Kept = append(res.Kept, e.ID)
			continue
		}
		if err := c.remove(ctx, e.ID); err != nil {
			return res, err
		}
		res.Removed = append(res.Removed, e.ID)
	}
	if newestValid != nil {
		if err := c.repairLatest(ctx, newestValid); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
	}
	return res, nil
}

// repairLatest points LATEST at m when it is missing, unreadable, or names
// a manifest that is not in the store; a LATEST naming a manifest that
// exists stays as it is (that checkpoint may be newer than m, or of a
// newer format).
func (c *Checkpoints) repairLatest(ctx context.Context, m *Manifest) error {
	cur, err := c.readLatest(ctx)
	if err == nil {
		_, serr := c.store.Stat(ctx, cur.Manifest)
		if serr == nil {
			return nil
		}
		if !errors.Is(serr, ErrNotFound) {
			return fmt.Errorf("check LATEST of run %s: %w", c.run, serr)
		}
		c.log.Warn("LATEST names a checkpoint that is not in the store; repairing it", "run", c.run, "latest", cur.Manifest, "now", c.manifestKey(ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}))
	} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
		return fmt.Errorf("read LATEST of run %s: %w", c.run, err)
	}
	return c.writeLatest(ctx, ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step})
}

func (c *Checkpoints) writeLatest(ctx context.Context, id ID) error {
	lp, _ := json.Marshal(latestPointer{Manifest: c.manifestKey(id), Seq: id.Seq})
	if err := c.store.Put(ctx, c.latestKey(), bytes.NewReader(lp), int64(len(lp))); err != nil {
		return fmt.Errorf("write LATEST of run %s: %w", c.run, err)
	}
	return nil
}

func (c *Checkpoints) remove(ctx context.Context, id ID) error {
	if err := c.store.Delete(ctx, c.manifestKey(id)); err != nil {
		return fmt.Errorf("gc: remove checkpoint %s: %w", id, err)
	}
	objs, err := c.store.List(ctx, c.dir(id))
	if err != nil {
		return fmt.Errorf("gc: remove checkpoint %s: %w", id, err)
	}
	for _, o := range objs {
		if err := c.store.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("gc: remove checkpoint %s: %w", id, err)
		}
	}
	return nil
}

// readHashing fills buf from r and returns its sha256, hashing each chunk in
// a second goroutine while the next one is read, so verification costs
// little beyond the transfer.
func readHashing(ctx context.Context, r io.Reader, buf []byte) ([]byte, error) {
	const chunk = 4 << 20
	ready := make(chan []byte, 16)
	sum := make(chan []byte, 1)
	go func() { // ends when ready is closed
		h := sha256.New()
		for b := range ready {
			h.Write(b)
		}
		sum <- h.Sum(nil)
	}()
	var err error
	for off := 0; off < len(buf) && err == nil; {
		if err = ctx.Err(); err != nil {
			break
		}
		var n int
		n, err = io.ReadFull(r, buf[off:min(off+chunk, len(buf))])
		if n > 0 {
			ready <- buf[off : off+n]
		}
		off += n
	}
	close(ready)
	s := <-sum
	if err != nil {
		return nil, err
	}
	return s, nil
}
