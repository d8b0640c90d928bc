package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is a flat key/value object store. Keys are slash-separated relative
// paths (see ValidateKey). Every call takes a context; large objects stream.
// A Put is atomic: readers see the old object, or none, or the whole new one.
type Store interface {
	// Put stores size bytes from r under key (size -1: unknown, read to EOF).
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// PutIfAbsent is Put that fails with ErrExists, writing nothing, when
	// key already exists; two racing callers cannot both succeed.
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error
	// PutIfMatch is Put that succeeds only while key's current version
	// (ObjectInfo.Version) is version, or while key is absent if version
	// is ""; otherwise it fails with ErrChanged and writes nothing. Of two
	// callers swapping from one version, at most one succeeds. It is how
	// the small objects that are overwritten in place (LATEST, LEASE)
	// change: a compare-and-swap, so a writer that has lost its claim
	// cannot overwrite its successor's write.
	PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, version string) error
	// Get opens key for reading; the caller closes it. ErrNotFound if absent.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// Stat describes key. ErrNotFound if absent.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store as a URL, without credentials.
	String() string
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	// Version is opaque and changes whenever the object is written (S3:
	// the ETag; on disk: inode, size and modification time); PutIfMatch
	// compares it. Get and Stat fill it; List may leave it empty.
	Version string
}

// Errors callers test for with errors.Is.
var (
	ErrNotFound = errors.New("object not found")
	ErrExists   = errors.New("object already exists")
	// ErrChanged: PutIfMatch found another version than the one given.
	ErrChanged     = errors.New("object changed since it was read")
	ErrCredentials = errors.New("credentials rejected")
	ErrNoBucket    = errors.New("bucket does not exist")
	ErrUnreachable = errors.New("store unreachable")
	ErrBadURL      = errors.New("bad store URL")
)

// errReplaced means an object was overwritten between Get and reading its
// body; reading it again gets the new version.
var errReplaced = errors.New("object replaced while being read")

// maxKeyLen keeps keys well inside S3's 1024-byte limit once a prefix is
// added.
const maxKeyLen = 800

// tmpPrefix marks the file backend's in-progress files; keys may not use it.
const tmpPrefix = ".tmp-"

// ValidateKey checks that key is a clean relative path: non-empty, valid
// UTF-8, no empty, "." or ".." segments, no backslash or control bytes, and
// no segment starting with ".tmp-" (reserved for in-progress writes).
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("empty object key")
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("object key %.40q...: %d bytes, at most %d", key, len(key), maxKeyLen)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("object key %q is not valid UTF-8", key)
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("object key %q contains %q", key, c)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return fmt.Errorf("object key %q: segment %q is not allowed", key, seg)
		case strings.HasPrefix(seg, tmpPrefix):
			return fmt.Errorf("object key %q: segments starting with %q are reserved", key, tmpPrefix)
		}
	}
	return nil
}

// validatePrefix accepts "" or a key prefix (which may end with "/").
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		return fmt.Errorf("list prefix %q: must not start with /", prefix)
	}
	if err := ValidateKey(p); err != nil {
		return fmt.Errorf("list prefix: %w", err)
	}
	return nil
}

// Options configure Open. Zero values take the standard AWS_* environment
// variables, then defaults.
type Options struct {
	// Endpoint is host:port or http(s)://host:port; env AWS_ENDPOINT_URL_S3,
	// then AWS_ENDPOINT_URL; default s3.amazonaws.com. An http:// or
	// https:// scheme sets TLS unless TLS is set.
	Endpoint string
	// Region: env AWS_REGION, then AWS_DEFAULT_REGION; default us-east-1.
	Region string
	// TLS: nil means from the endpoint's scheme, else on.
	TLS *bool
	// PathStyle forces path-style bucket addressing (MinIO and most
	// self-hosted servers); otherwise minio-go picks.
	PathStyle bool
	// AccessKey, SecretKey, SessionToken: env AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
	AccessKey, SecretKey, SessionToken string
	// CreateBucket creates the bucket if it does not exist; otherwise a
	// missing bucket is an error.
	CreateBucket bool
	// MustExist refuses a file:// directory that does not exist (ErrNotFound)
	// instead of creating it: readers such as `sbtrain ckpt` must not
	// leave a mistyped path behind. S3 buckets must exist anyway unless
	// CreateBucket.
	MustExist bool
	// Retry bounds retries of transient S3 errors; zero value: DefaultRetry.
	Retry RetryPolicy
	// Logger receives retry and fallback messages; nil: slog.Default().
	Logger *slog.Logger
	// Getenv replaces os.Getenv (tests); nil: os.Getenv.
	Getenv func(string) string
}

// Open connects to the store a URL names: s3://bucket[/prefix] or
// file:///absolute/dir. An s3:// URL may carry the options as query
// parameters (endpoint, region, tls, path_style, create_bucket), which win
// over opts. Open checks that an S3 endpoint answers, accepts the
// credentials and has the bucket, so those errors come at once.
func Open(ctx context.Context, rawURL string, opts Options) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w %q: file URLs take no host (want file:///absolute/dir)", ErrBadURL, rawURL)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w %q: file URLs take no query or fragment", ErrBadURL, rawURL)
		}
		if !strings.HasPrefix(u.Path, "/") || u.Path == "/" {
			return nil, fmt.Errorf("%w %q: want file:///absolute/dir", ErrBadURL, rawURL)
		}
		return openFile(u.Path, opts.MustExist)
	case "s3":
		return openS3(ctx, u, opts)
	case "":
		return nil, fmt.Errorf("%w %q has no scheme: want s3://bucket/prefix or file:///dir", ErrBadURL, rawURL)
	default:
		return nil, fmt.Errorf("%w %q: unknown scheme %q: want s3:// or file://", ErrBadURL, rawURL, u.Scheme)
	}
}
