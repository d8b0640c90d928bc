package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// RetryPolicy bounds retries of transient errors (network errors, 5xx,
// throttling): Attempts tries in all, sleeping Base, 2·Base, ... capped at
// Max between them. Errors that retrying cannot fix (credentials, missing
// bucket or object, bad request) return at once.
type RetryPolicy struct {
	Attempts  int
	Base, Max time.Duration
}

// DefaultRetry gives up after about 3 seconds of failures: long enough to
// ride out a server restart's first moments or a dropped connection, short
// enough that a dead endpoint is reported promptly.
var DefaultRetry = RetryPolicy{Attempts: 5, Base: 200 * time.Millisecond, Max: 1500 * time.Millisecond}

// dialTimeout bounds connecting, so an endpoint that does not answer at all
// (a blackholed address) fails in seconds rather than minio-go's 30.
const dialTimeout = 5 * time.Second

// openProbeTimeout bounds Open's check of endpoint, credentials and bucket.
const openProbeTimeout = 10 * time.Second

const unknownSizePartSize = 16 << 20

type s3Store struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or ends with "/"
	endpoint string
	secure   bool
	retry    RetryPolicy
	log      *slog.Logger
}

func parseBoolParam(q url.Values, name string) (*bool, error) {
	v := q.Get(name)
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, fmt.Errorf("query parameter %s=%q: want true or false", name, v)
	}
	return &b, nil
}

func openS3(ctx context.Context, u *url.URL, opts Options) (*s3Store, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	bucket := u.Host
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return nil, fmt.Errorf("%w %s: bucket %q: %w", ErrBadURL, u.Redacted(), bucket, err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w %s: credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", ErrBadURL, u.Redacted())
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := ValidateKey(prefix); err != nil {
			return nil, fmt.Errorf("%w %s: prefix: %w", ErrBadURL, u.Redacted(), err)
		}
		prefix += "/"
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "tls", "path_style", "create_bucket":
		default:
			return nil, fmt.Errorf("%w %s: unknown query parameter %q (known: endpoint, region, tls, path_style, create_bucket)", ErrBadURL, u.Redacted(), k)
		}
	}
	if v := q.Get("endpoint"); v != "" {
		opts.Endpoint = v
	}
	if v := q.Get("region"); v != "" {
		opts.Region = v
	}
	tlsParam, err := parseBoolParam(q, "tls")
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrBadURL, u.Redacted(), err)
	}
	if tlsParam != nil {
		opts.TLS = tlsParam
	}
	for name, dst := range map[string]*bool{"path_style": &opts.PathStyle, "create_bucket": &opts.CreateBucket} {
		b, err := parseBoolParam(q, name)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrBadURL, u.Redacted(), err)
		}
		if b != nil {
			*dst = *b
		}
	}

	endpoint := firstNonEmpty(opts.Endpoint, getenv("AWS_ENDPOINT_URL_S3"), getenv("AWS_ENDPOINT_URL"), "s3.amazonaws.com")
	secure := true
	if strings.Contains(endpoint, "://") {
		eu, err := url.Parse(endpoint)
		if err != nil || eu.Host == "" || (eu.Path != "" && eu.Path != "/") || eu.RawQuery != "" {
			return nil, fmt.Errorf("%w: S3 endpoint %q: want host:port or http(s)://host:port", ErrBadURL, endpoint)
		}
		switch eu.Scheme {
		case "http":
			secure = false
		case "https":
		default:
			return nil, fmt.Errorf("%w: S3 endpoint %q: scheme %q, want http or https", ErrBadURL, endpoint, eu.Scheme)
		}
		endpoint = eu.Host
	}
	if _, _, err := net.SplitHostPort(endpoint); err != nil && strings.Contains(endpoint, ":") {
		return nil, fmt.Errorf("%w: S3 endpoint %q: %w", ErrBadURL, endpoint, err)
	}
	if opts.TLS != nil {
		secure = *opts.TLS
	}
	region := firstNonEmpty(opts.Region, getenv("AWS_REGION"), getenv("AWS_DEFAULT_REGION"), "us-east-1")
	access := firstNonEmpty(opts.AccessKey, getenv("AWS_ACCESS_KEY_ID"))
	secret := firstNonEmpty(opts.SecretKey, getenv("AWS_SECRET_ACCESS_KEY"))
	token := firstNonEmpty(opts.SessionToken, getenv("AWS_SESSION_TOKEN"))
	if access == "" || secret == "" {
		return nil, fmt.Errorf("S3 store %s: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or pass them as flags): %w", u.Redacted(), ErrCredentials)
	}

	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("S3 transport: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.ResponseHeaderTimeout = 30 * time.Second
	lookup := minio.BucketLookupAuto
	if opts.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(access, secret, token),
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
		Transport:    tr,
		MaxRetries:   1, // we retry ourselves, bounded and logged
	})
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %q: %w", endpoint, err)
	}
	retry := opts.Retry
	if retry.Attempts <= 0 {
		retry = DefaultRetry
	}
	s := &s3Store{client: client, bucket: bucket, prefix: prefix, endpoint: endpoint, secure: secure, retry: retry, log: opts.Logger}

	// A wrong endpoint, wrong credentials or a missing bucket are reported
	// at once, not after backoff; only a server that answers "busy" or
	// "still starting" (5xx) is asked again.
	pctx, cancel := context.WithTimeout(ctx, openProbeTimeout)
	defer cancel()
	var exists bool
	err = s.do(pctx, "open", "", nil, func(ctx context.Context) error {
		var err error
		exists, err = client.BucketExists(ctx, bucket)
		var er minio.ErrorResponse
		if err != nil && !errors.As(err, &er) {
			return noRetry{err}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if !exists {
		if !opts.CreateBucket {
			return nil, fmt.Errorf("S3 store %s: bucket %q does not exist (create it, or pass create_bucket=true / --create-bucket): %w", s, bucket, ErrNoBucket)
		}
		if err := client.MakeBucket(pctx, bucket, minio.MakeBucketOptions{Region: region}); err != nil {
			code := minio.ToErrorResponse(err).Code
			if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
				return nil, s.classify("create bucket", "", err, 1)
			}
		}
	}
	return s, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func (s *s3Store) String() string {
	scheme := "https"
	if !s.secure {
		scheme = "http"
	}
	return "s3://" + s.bucket + "/" + s.prefix + " (" + scheme + "://" + s.endpoint + ")"
}

func (s *s3Store) object(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// noRetry marks an error do must return without retrying.
type noRetry struct{ err error }

func (e noRetry) Error() string { return e.err.Error() }
func (e noRetry) Unwrap() error { return e.err }

// errKind sorts S3 failures into those worth retrying and those not.
type errKind int

const (
	errFatal errKind = iota
	errTransient
)

// classify turns a minio-go error into one of ours that names the endpoint,
// the object and what to do, and says whether a retry could help.
func (s *s3Store) classifyKind(op, key string, err error) (errKind, error) {
	what := op
	if key != "" {
		what += " " + key
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errFatal, fmt.Errorf("S3 %s in %s: %w", what, s, err)
	}
	var nr noRetry
	if errors.As(err, &nr) {
		_, e := s.classifyKind(op, key, nr.err)
		return errFatal, e
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) && (er.Code != "" || er.StatusCode != 0) {
		switch er.Code {
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed":
			return errFatal, fmt.Errorf("S3 %s in %s: the server rejected the credentials (%s: %s); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: %w", what, s, er.Code, er.Message, ErrCredentials)
		case "NoSuchBucket":
			return errFatal, fmt.Errorf("S3 %s in %s: bucket %q does not exist: %w", what, s, s.bucket, ErrNoBucket)
		case "NoSuchKey", "NoSuchObject":
			return errFatal, fmt.Errorf("S3 %s in %s: %w", what, s, ErrNotFound)
		case "PreconditionFailed", "ConditionalRequestConflict":
			// Conflict: a concurrent conditional write to the key won.
			return errFatal, fmt.Errorf("S3 %s in %s: %w", what, s, ErrExists)
		case "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "XMinioServerNotInitialized", "XMinioReadQuorum", "XMinioWriteQuorum":
			return errTransient, fmt.Errorf("S3 %s in %s: %s: %s", what, s, er.Code, er.Message)
		}
		if er.StatusCode == http.StatusNotFound {
			return errFatal, fmt.Errorf("S3 %s in %s: %w", what, s, ErrNotFound)
		}
		if er.StatusCode == http.StatusForbidden {
			return errFatal, fmt.Errorf("S3 %s in %s: forbidden (%s); check the credentials: %w", what, s, er.Code, ErrCredentials)
		}
		if er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests {
			return errTransient, fmt.Errorf("S3 %s in %s: HTTP %d %s: %s", what, s, er.StatusCode, er.Code, er.Message)
		}
		if er.Code != "" {
			return errFatal, fmt.Errorf("S3 %s in %s: %s: %s", what, s, er.Code, er.Message)
		}
	}
	// No S3 response at all: connection refused or reset, dial timeout,
	// truncated body. The server may be restarting.
	return errTransient, fmt.Errorf("S3 %s in %s: endpoint did not answer: %v: %w", what, s, err, ErrUnreachable)
}

func (s *s3Store) classify(op, key string, err error, attempts int) error {
	kind, e := s.classifyKind(op, key, err)
	if kind == errTransient && attempts > 1 {
		return fmt.Errorf("gave up after %d attempts: %w", attempts, e)
	}
	return e
}

// do runs fn with bounded, logged retries of transient errors. rewind, if
// not nil, restores a request body before a retry; if it fails, the error
// is returned without retrying.
func (s *s3Store) do(ctx context.Context, op, key string, rewind func() error, fn func(ctx context.Context) error) error {
	delay := s.retry.Base
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		kind, cerr := s.classifyKind(op, key, err)
		if kind != errTransient || attempt >= s.retry.Attempts || ctx.Err() != nil {
			return s.classify(op, key, err, attempt)
		}
		if rewind != nil {
			if rerr := rewind(); rerr != nil {
				return fmt.Errorf("%w (body cannot be replayed for a retry: %v)", cerr, rerr)
			}
		}
		// Per try at debug level: a caller that retries a whole outage
		// reports it once (see Outage).
		s.log.Debug("S3 transient error, retrying", "op", op, "key", key, "attempt", attempt, "of", s.retry.Attempts, "wait", delay, "err", cerr)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("S3 %s %s in %s: %w (after %d attempts; last error: %v)", op, key, s, ctx.Err(), attempt, cerr)
		case <-t.C:
		}
		delay = min(2*delay, s.retry.Max)
	}
}

// rewinder returns a function that seeks r back to where it is now, or nil
// if r cannot seek (then a failed upload is not retried).
func rewinder(r io.Reader) func() error {
	sk, ok := r.(io.Seeker)
	if !ok {
		return func() error { return errors.New("reader is not seekable") }
	}
	pos, err := sk.Seek(0, io.SeekCurrent)
	if err != nil {
		return func() error { return err }
	}
	return func() error { _, err := sk.Seek(pos, io.SeekStart); return err }
}

// put writes key; ifAbsent refuses an existing key, and a non-empty
// ifMatch refuses any other ETag than it.
func (s *s3Store) put(ctx context.Context, key string, r io.Reader, size int64, ifAbsent bool, ifMatch string) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	return s.do(ctx, "put", key, rewinder(r), func(ctx context.Context) error {
		opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
		if size < 0 {
			// minio-go sizes parts for a 5 TiB object when the length is
			// unknown (over 500 MiB buffered per part); 16 MiB parts still
			// allow 160 GB.
			opts.PartSize = unknownSizePartSize
		}
		if ifAbsent {
			opts.SetMatchETagExcept("*")
		}
		if ifMatch != "" {
			opts.SetMatchETag(ifMatch)
		}
		info, err := s.client.PutObject(ctx, s.bucket, obj, r, size, opts)
		if err == nil && size >= 0 && info.Size != size {
			return fmt.Errorf("S3 put %s stored %d bytes, expected %d", key, info.Size, size)
		}
		return err
	})
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size, false, "")
}

func (s *s3Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.put(ctx, key, r, size, true, "")
}

func (s *s3Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, version string) error {
	err := s.put(ctx, key, r, size, version == "", version)
	// A precondition that fails is ErrExists to put; for a swap it means
	// the object is not the version given, and If-Match on a missing
	// object is answered NoSuchKey.
	if errors.Is(err, ErrExists) || (version != "" && errors.Is(err, ErrNotFound)) {
		return fmt.Errorf("S3 put %s in %s: not at version %q: %w", key, s, version, ErrChanged)
	}
	return err
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("get: %w", err)
	}
	var o *minio.Object
	var st minio.ObjectInfo
	err = s.do(ctx, "get", key, nil, func(ctx context.Context) error {
		var err error
		o, err = s.client.GetObject(ctx, s.bucket, obj, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		// GetObject is lazy; Stat sends the request so errors surface here.
		if st, err = o.Stat(); err != nil {
			o.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	return s3Reader{o, key}, ObjectInfo{Key: key, Size: st.Size, ModTime: st.LastModified, Version: st.ETag}, nil
}

// s3Reader reads an object Get opened. minio-go reads the body with
// If-Match on the ETag that Get's Stat saw, so an object replaced or
// deleted in between fails the read; s3Reader says so in our terms
// (errReplaced, ErrNotFound) instead of as a raw S3 error.
type s3Reader struct {
	*minio.Object
	key string
}

func (r s3Reader) Read(p []byte) (int, error) {
	n, err := r.Object.Read(p)
	if err != nil && err != io.EOF {
		switch minio.ToErrorResponse(err).Code {
		case "PreconditionFailed":
			err = fmt.Errorf("S3 get %s: %w", r.key, errReplaced)
		case "NoSuchKey", "NoSuchObject":
			err = fmt.Errorf("S3 get %s: deleted while being read: %w", r.key, ErrNotFound)
		}
	}
	return n, err
}

func (s *s3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	obj, err := s.object(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	var st minio.ObjectInfo
	err = s.do(ctx, "stat", key, nil, func(ctx context.Context) error {
		var err error
		st, err = s.client.StatObject(ctx, s.bucket, obj, minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return ObjectInfo{}, err
	}
	return ObjectInfo{Key: key, Size: st.Size, ModTime: st.LastModified, Version: st.ETag}, nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	var out []ObjectInfo
	err := s.do(ctx, "list", prefix, nil, func(ctx context.Context) error {
		out = out[:0]
		lctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops minio-go's listing goroutine on early return
		for o := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
			if o.Err != nil {
				return o.Err
			}
			key := strings.TrimPrefix(o.Key, s.prefix)
			if ValidateKey(key) != nil {
				continue // not written by us (e.g. "a//b"); invisible
			}
			out = append(out, ObjectInfo{Key: key, Size: o.Size, ModTime: o.LastModified})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil // S3 lists in key order
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return s.do(ctx, "delete", key, nil, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.bucket, obj, minio.RemoveObjectOptions{})
	})
}
