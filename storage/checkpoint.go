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
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
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
//
// Fencing. A committer holding the run's lease fences the run with the
// lease generation (Fence): LATEST then records, for each generation that
// took the run over, the seq LATEST had reached at that moment. Every
// manifest carries its writer's generation, and every LATEST write is a
// compare-and-swap that refuses a writer whose generation is below the
// newest fence. A manifest of generation g whose seq lies beyond the seq
// at which a newer generation fenced the run was written by a deposed
// holder after it lost the run: it is not committed, and readers skip it
// (ErrFenced) as they skip an abandoned write.

// ManifestFormatVersion is the newest manifest format this code reads
// and the one it writes for a fenced committer; version 2 added
// lease_generation. An unfenced writer still writes version 1.
const ManifestFormatVersion = 2

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
	// LeaseGeneration is the fencing token of the lease its committer
	// held; 0 for an unfenced committer (and in version 1).
	LeaseGeneration uint64    `json:"lease_generation,omitempty"`
	Created         string    `json:"created"` // RFC 3339, UTC
	Blobs           []BlobRef `json:"blobs"`
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
	// fence is the lease generation this committer fenced the run with
	// (Fence); 0: unfenced.
	fence atomic.Uint64
}

// ErrFenced means a newer lease generation has fenced the run: a write
// refused for it also matches ErrLeaseLost, and a manifest skipped for it
// also matches ErrInvalid.
var ErrFenced = errors.New("fenced off by a newer lease generation")

type fencedError struct{ err error }

func (e fencedError) Error() string        { return e.err.Error() }
func (e fencedError) Unwrap() error        { return e.err }
func (e fencedError) Is(target error) bool { return target == ErrFenced || target == ErrLeaseLost }

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
	ents, latest, err := c.scan(ctx)
	if err != nil {
		return nil, err
	}
	for i := range ents {
		if err := c.fill(ctx, &ents[i], latest); err != nil {
			return nil, err
		}
	}
	return ents, nil
}

// scan lists the run's checkpoint directories in seq order, marking LATEST,
// without reading manifests (Manifest nil, Err nil unless there is none),
// and returns the LATEST pointer (zero if it is missing or unreadable).
func (c *Checkpoints) scan(ctx context.Context) ([]Entry, latestPointer, error) {
	objs, err := c.store.List(ctx, c.ckptPrefix())
	if err != nil {
		return nil, latestPointer{}, fmt.Errorf("list checkpoints of run %s: %w", c.run, err)
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
	latest, _, lerr := c.readLatest(ctx)
	if lerr != nil && !errors.Is(lerr, ErrNotFound) && !errors.Is(lerr, ErrInvalid) {
		// Without LATEST's fences a deposed writer's manifest would look
		// committed: a store that cannot be read is no answer.
		return nil, latestPointer{}, fmt.Errorf("list checkpoints of run %s: %w", c.run, lerr)
	}
	if lerr != nil {
		latest = latestPointer{}
	}
	out := make([]Entry, 0, len(order))
	for _, id := range order {
		e := byDir[id]
		if !hasManifest[id] {
			e.Err = invalid(fmt.Errorf("no manifest %s: never committed (incomplete or abandoned write): %w", e.ManifestKey, ErrNotFound))
		}
		e.Latest = lerr == nil && latest.Manifest != "" && latest.Manifest == e.ManifestKey
		out = append(out, *e)
	}
	return out, latest, nil
}

// fill reads and checks e's manifest; content errors, and a manifest that
// latest's fences show was written by a deposed holder, land in e.Err;
// other errors (the store failing) are returned.
func (c *Checkpoints) fill(ctx context.Context, e *Entry, latest latestPointer) error {
	if e.Err != nil || e.Manifest != nil {
		return nil
	}
	e.Manifest, e.Err = c.readManifest(ctx, e.ManifestKey, e.ID)
	if e.Err != nil && !errors.Is(e.Err, ErrInvalid) {
		return fmt.Errorf("list checkpoints of run %s: %w", c.run, e.Err)
	}
	if m := e.Manifest; m != nil {
		if f, ok := latest.fencedOff(m.LeaseGeneration, m.Seq); ok {
			e.Manifest = nil
			e.Err = invalid(fencedError{fmt.Errorf("manifest %s: written by lease generation %d after generation %d took the run over at checkpoint seq %d: never committed: %w",
				e.ManifestKey, m.LeaseGeneration, f.Generation, f.Seq, ErrFenced)})
		}
	}
	return nil
}

// fence records that lease generation Generation took the run over when
// LATEST had reached checkpoint Seq.
type fence struct {
	Generation uint64 `json:"generation"`
	Seq        int64  `json:"seq"`
}

// maxFences bounds LATEST's fence history; a fence older than that many
// takeovers only hides manifests that GC has long removed.
const maxFences = 256

type latestPointer struct {
	// Manifest and Seq name the newest committed checkpoint; "" and 0 in
	// a run fenced before its first commit.
	Manifest string `json:"manifest"`
	Seq      int64  `json:"seq"`
	// Fences are the takeovers of the run, oldest first (absent in runs
	// never fenced).
	Fences []fence `json:"fences,omitempty"`
}

// generation is the newest fence's generation, 0 if none.
func (p latestPointer) generation() uint64 {
	if len(p.Fences) == 0 {
		return 0
	}
	return p.Fences[len(p.Fences)-1].Generation
}

// fencedOff reports whether a manifest of lease generation gen at seq was
// written after a newer generation took the run over, and names that
// fence.
func (p latestPointer) fencedOff(gen uint64, seq int64) (fence, bool) {
	for _, f := range p.Fences {
		if f.Generation > gen {
			return f, seq > f.Seq
		}
	}
	return fence{}, false
}

// readLatest returns LATEST and its version.
func (c *Checkpoints) readLatest(ctx context.Context) (latestPointer, string, error) {
	b, version, err := readSmallVersion(ctx, c.store, c.latestKey(), 64<<10)
	if err != nil {
		return latestPointer{}, "", err
	}
	p, err := decodeLatest(b, c.latestKey(), c.ckptPrefix(), c.run)
	return p, version, err // the version even of a damaged LATEST, to replace it
}

// Fence fences the run with lease generation gen, the token of the lease
// this process holds: from then on the manifests this Checkpoints commits
// carry gen, and every LATEST write of an older generation is refused. It
// fails with an error matching ErrFenced (and ErrLeaseLost) if a newer
// generation has fenced the run already. prev is the generation that
// fenced the run before (0: none); a holder retaking the run learns from
// it whether someone else held it meanwhile.
func (c *Checkpoints) Fence(ctx context.Context, gen uint64) (prev uint64, err error) {
	if gen == 0 {
		return 0, fmt.Errorf("fence run %s: generation 0", c.run)
	}
	err = c.updateLatest(ctx, true, func(cur latestPointer) (latestPointer, bool, error) {
		prev = cur.generation()
		switch {
		case prev > gen:
			return cur, false, fencedError{fmt.Errorf("fence run %s with lease generation %d: generation %d fenced it already: %w", c.run, gen, prev, ErrFenced)}
		case prev == gen:
			return cur, false, nil
		}
		fs := append(slices.Clone(cur.Fences), fence{Generation: gen, Seq: cur.Seq})
		cur.Fences = fs[max(0, len(fs)-maxFences):]
		return cur, true, nil
	})
	if err != nil {
		return prev, err
	}
	c.fence.Store(gen)
	c.log.Info("run fenced", "run", c.run, "lease_generation", gen, "previous", prev)
	return prev, nil
}

// checkFence refuses a fenced committer once a newer generation fenced
// the run; what names the operation in the error.
func (c *Checkpoints) checkFence(ctx context.Context, what string) error {
	fence := c.fence.Load()
	cur, _, err := c.readLatest(ctx)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		cur, err = latestPointer{}, nil
	}
	if err != nil {
		return fmt.Errorf("%s: read LATEST: %w", what, err)
	}
	if g := cur.generation(); g > fence {
		return fencedError{fmt.Errorf("%s: run %s was taken over by lease generation %d, this committer's is %d: %w", what, c.run, g, fence, ErrFenced)}
	}
	return nil
}

// updateLatest rewrites LATEST as f says, by compare-and-swap from the
// version f was shown, reading again when another write came between.
// Unless fencing (Fence itself), a write is refused (ErrFenced) when a
// generation newer than this committer's has fenced the run; an unfenced
// committer (an operator's repair) keeps the fences as they are.
func (c *Checkpoints) updateLatest(ctx context.Context, fencing bool, f func(cur latestPointer) (latestPointer, bool, error)) error {
	fence := c.fence.Load()
	for try := 1; ; try++ {
		cur, version, err := c.readLatest(ctx)
		if errors.Is(err, ErrInvalid) {
			c.log.Warn("LATEST is damaged; replacing it", "run", c.run, "err", err)
			cur = latestPointer{}
		} else if errors.Is(err, ErrNotFound) {
			cur, version = latestPointer{}, ""
		} else if err != nil {
			return fmt.Errorf("read LATEST of run %s: %w", c.run, err)
		}
		if g := cur.generation(); !fencing && fence > 0 && g > fence {
			return fencedError{fmt.Errorf("write LATEST of run %s: taken over by lease generation %d, this committer's is %d: %w", c.run, g, fence, ErrFenced)}
		}
		next, write, err := f(cur)
		if err != nil || !write {
			return err
		}
		lp, err := json.Marshal(next)
		if err != nil {
			return err
		}
		err = c.store.PutIfMatch(ctx, c.latestKey(), bytes.NewReader(lp), int64(len(lp)), version)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrChanged) || try == 5 {
			return fmt.Errorf("write LATEST of run %s: %w", c.run, err)
		}
	}
}

// fenceGeneration is the newest generation that fenced run, 0 if none (or
// if LATEST is missing or damaged, when it fences nothing either).
func fenceGeneration(ctx context.Context, s Store, run string) (uint64, error) {
	key := RunPrefix(run) + latestName
	b, err := readSmall(ctx, s, key, 64<<10)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	p, err := decodeLatest(b, key, RunPrefix(run)+"ckpt/", run)
	if err != nil {
		return 0, nil
	}
	return p.generation(), nil
}

// decodeLatest parses a LATEST pointer; content errors match ErrInvalid.
func decodeLatest(b []byte, key, ckptPrefix, run string) (latestPointer, error) {
	var p latestPointer
	if err := strictUnmarshal(b, &p); err != nil {
		return latestPointer{}, invalid(fmt.Errorf("%s: %w", key, err))
	}
	for i, f := range p.Fences {
		if f.Generation == 0 || f.Seq < 0 ||
			(i > 0 && (f.Generation <= p.Fences[i-1].Generation || f.Seq < p.Fences[i-1].Seq)) {
			return latestPointer{}, invalid(fmt.Errorf("%s: fence %d (generation %d at seq %d) is out of order", key, i, f.Generation, f.Seq))
		}
	}
	if p.Manifest == "" && p.Seq == 0 && len(p.Fences) > 0 {
		return p, nil // fenced before the first commit
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
	b, _, err := readSmallVersion(ctx, s, key, limit)
	return b, err
}

// readSmallVersion is readSmall that also returns the version read.
func readSmallVersion(ctx context.Context, s Store, key string, limit int64) ([]byte, string, error) {
	// Small objects that are overwritten in place (LATEST, LEASE) can be
	// replaced mid-read; a few fresh tries then read the new version.
	for try := 1; ; try++ {
		b, version, err := readSmallOnce(ctx, s, key, limit)
		if !errors.Is(err, errReplaced) || try == 3 {
			return b, version, err
		}
	}
}

func readSmallOnce(ctx context.Context, s Store, key string, limit int64) ([]byte, string, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	if info.Size > limit {
		return nil, "", invalid(fmt.Errorf("%s: %d bytes, at most %d expected", key, info.Size, limit))
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", key, err)
	}
	if int64(len(b)) != info.Size {
		return nil, "", fmt.Errorf("read %s: got %d bytes, the store says %d", key, len(b), info.Size)
	}
	return b, info.Version, nil
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
	if *v.FormatVersion < 2 && bytes.Contains(b, []byte(`"lease_generation"`)) {
		return nil, fmt.Errorf("manifest %s: format version %d has no lease_generation", key, *v.FormatVersion)
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
	entries, _, err := c.scan(ctx)
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
	fence := c.fence.Load()
	m := Manifest{
		FormatVersion: 1, RunID: c.run, Seq: id.Seq, Meta: meta, LeaseGeneration: fence,
		Created: c.now().UTC().Format(time.RFC3339Nano),
		Blobs:   append([]BlobRef(nil), blobs...),
	}
	if fence > 0 {
		m.FormatVersion = 2
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
	// A deposed committer stops here, before its manifest. One deposed
	// between this check and the manifest write is stopped by the swap of
	// LATEST, and the fence hides its manifest from every reader.
	if err := c.checkFence(ctx, "commit checkpoint "+id.String()); err != nil {
		return nil, err
	}
	if err := c.store.PutIfAbsent(ctx, c.manifestKey(id), bytes.NewReader(body), int64(len(body))); err != nil {
		return nil, fmt.Errorf("commit checkpoint %s: manifest: %w", id, err)
	}
	err = c.updateLatest(ctx, false, func(cur latestPointer) (latestPointer, bool, error) {
		if cur.Seq > id.Seq {
			// A pointer to a newer checkpoint stays only while that
			// checkpoint exists: one removed by hand would otherwise pin
			// LATEST forever.
			_, serr := c.store.Stat(ctx, cur.Manifest)
			if !errors.Is(serr, ErrNotFound) {
				c.log.Warn("LATEST already names a newer checkpoint; leaving it", "run", c.run, "latest", cur.Manifest, "committed", c.manifestKey(id))
				return cur, false, nil
			}
			c.log.Warn("LATEST names a checkpoint that is not in the store; repairing it", "run", c.run, "latest", cur.Manifest, "committed", c.manifestKey(id))
		}
		cur.Manifest, cur.Seq = c.manifestKey(id), id.Seq
		return cur, true, nil
	})
	if errors.Is(err, ErrFenced) {
		return nil, fmt.Errorf("commit checkpoint %s: manifest written but fenced off, so never committed: %w", id, err)
	}
	if err != nil {
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

// ErrNoCheckpoint means the run has no checkpoint that verifies.
var ErrNoCheckpoint = errors.New("no valid checkpoint")

// LoadLatest loads the newest checkpoint whose manifest and blobs all
// verify, logging each newer one it skips and why. It returns
// ErrNoCheckpoint when none verifies (or none exists).
func (c *Checkpoints) LoadLatest(ctx context.Context) (*Loaded, error) {
	entries, latest, err := c.scan(ctx)
	if err != nil {
		return nil, err
	}
	var reasons []string
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if err := c.fill(ctx, &e, latest); err != nil {
			return nil, err
		}
		if e.Manifest == nil {
			level := slog.LevelWarn
			if errors.Is(e.Err, ErrNotFound) || errors.Is(e.Err, ErrFenced) {
				// Blobs without a manifest (a write in progress or
				// abandoned), or a deposed holder's manifest: expected.
				level = slog.LevelInfo
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

// Load loads checkpoint id, which must be committed (not fenced off) and
// verify; unlike LoadLatest it never falls back to another one.
func (c *Checkpoints) Load(ctx context.Context, id ID) (*Loaded, error) {
	latest, _, err := c.readLatest(ctx)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		latest, err = latestPointer{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s of run %s: %w", id, c.run, err)
	}
	e := Entry{ID: id, ManifestKey: c.manifestKey(id)}
	if err := c.fill(ctx, &e, latest); err != nil {
		return nil, err
	}
	if e.Manifest == nil {
		return nil, fmt.Errorf("load checkpoint %s of run %s: %w", id, c.run, e.Err)
	}
	l := &Loaded{Manifest: e.Manifest, Blobs: map[string][]byte{}}
	for _, b := range e.Manifest.Blobs {
		data, err := c.readBlob(ctx, b, true)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint %s of run %s: %w", id, c.run, err)
		}
		l.Blobs[b.Name] = data
	}
	return l, nil
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
	if c.fence.Load() > 0 {
		// A deposed holder must not remove what its successor keeps.
		if err := c.checkFence(ctx, "gc"); err != nil {
			return GCResult{}, err
		}
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
		// A deposed holder's manifest is an abandoned write, whatever its
		// seq: it can never become committed.
		fenced := errors.Is(e.Err, ErrFenced)
		unreadable := e.Manifest == nil && !errors.Is(e.Err, ErrNotFound) && !fenced
		if unreadable {
			c.log.Warn("gc: keeping a checkpoint it cannot read", "run", c.run, "checkpoint", e.ID.String(), "reason", e.Err)
		}
		if keepSet[e.ID] || unreadable || (e.Manifest == nil && !fenced && e.ID.Seq > newestCommitted) {
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
	id := ID{Seq: m.Seq, Phase: m.Phase, Step: m.Step}
	return c.updateLatest(ctx, false, func(cur latestPointer) (latestPointer, bool, error) {
		if cur.Manifest != "" {
			_, serr := c.store.Stat(ctx, cur.Manifest)
			if serr == nil {
				return cur, false, nil
			}
			if !errors.Is(serr, ErrNotFound) {
				return cur, false, fmt.Errorf("check LATEST of run %s: %w", c.run, serr)
			}
			c.log.Warn("LATEST names a checkpoint that is not in the store; repairing it", "run", c.run, "latest", cur.Manifest, "now", c.manifestKey(id))
		}
		cur.Manifest, cur.Seq = c.manifestKey(id), id.Seq
		return cur, true, nil
	})
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
