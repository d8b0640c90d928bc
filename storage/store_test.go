package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, s Store, key string) []byte {
	t.Helper()
	rc, _, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, s Store, key string, b []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

func keys(objs []ObjectInfo) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func TestStoreOperations(t *testing.T) {
	eachBackend(t, func(t *testing.T, _ string, s Store) {
		ctx := context.Background()
		put(t, s, "a/b/one", []byte("first"))
		put(t, s, "a/b/one", []byte("second")) // overwrite
		put(t, s, "a/c", []byte("c"))
		put(t, s, "ab", []byte("ab"))
		if got := string(get(t, s, "a/b/one")); got != "second" {
			t.Errorf("get after overwrite = %q", got)
		}
		info, err := s.Stat(ctx, "a/b/one")
		if err != nil || info.Size != 6 || info.Key != "a/b/one" {
			t.Errorf("stat = %+v, %v", info, err)
		}
		for _, c := range []struct {
			prefix string
			want   string
		}{
			{"", "a/b/one a/c ab"},
			{"a/", "a/b/one a/c"},
			{"a", "a/b/one a/c ab"},
			{"a/b", "a/b/one"},
			{"zz/", ""},
		} {
			objs, err := s.List(ctx, c.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(keys(objs), " "); got != c.want {
				t.Errorf("list %q = %q, want %q", c.prefix, got, c.want)
			}
		}
		if _, err := s.Stat(ctx, "a/missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("stat missing: %v, want ErrNotFound", err)
		}
		if _, _, err := s.Get(ctx, "a/missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "a/missing") {
			t.Errorf("get missing: %v, want ErrNotFound naming the key", err)
		}
		if err := s.PutIfAbsent(ctx, "a/c", strings.NewReader("new"), 3); !errors.Is(err, ErrExists) {
			t.Errorf("PutIfAbsent over an existing key: %v, want ErrExists", err)
		}
		if got := string(get(t, s, "a/c")); got != "c" {
			t.Errorf("PutIfAbsent changed an existing object to %q", got)
		}
		if err := s.PutIfAbsent(ctx, "a/d", strings.NewReader("d"), 1); err != nil {
			t.Errorf("PutIfAbsent of a new key: %v", err)
		}
		if err := s.Delete(ctx, "a/c"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "a/c"); err != nil {
			t.Errorf("deleting a missing key: %v", err)
		}
		if _, err := s.Stat(ctx, "a/c"); !errors.Is(err, ErrNotFound) {
			t.Errorf("stat after delete: %v", err)
		}
		// A large object of unknown length streams through (several S3
		// parts on the s3 backend is not needed to show streaming; one
		// 20 MiB stream is).
		big := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16)
		if err := s.Put(ctx, "big", io.MultiReader(bytes.NewReader(big)), -1); err != nil {
			t.Fatal(err)
		}
		if got := get(t, s, "big"); !bytes.Equal(got, big) {
			t.Errorf("big object: got %d bytes back, want %d identical", len(got), len(big))
		}
		// A short body with a declared size stores nothing.
		if err := s.Put(ctx, "short", strings.NewReader("abc"), 10); err == nil {
			t.Error("Put with fewer bytes than declared succeeded")
		}
		if _, err := s.Stat(ctx, "short"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed Put left an object: %v", err)
		}
		for _, bad := range []string{"", "/abs", "a//b", "a/../b", "./a", "a/", "a\\b", ".tmp-x", "a/.tmp-y", "a\x00b"} {
			if err := s.Put(ctx, bad, strings.NewReader("x"), 1); err == nil {
				t.Errorf("Put(%q) accepted a bad key", bad)
			}
		}
	})
}

func TestOpenRejectsBadURLs(t *testing.T) {
	ctx := context.Background()
	env := func(string) string { return "" }
	cases := []struct{ url, want string }{
		{"", "no scheme"},
		{"/tmp/x", "no scheme"},
		{"gs://bucket/x", `unknown scheme "gs"`},
		{"s3://bu cket/x", "bu cket"},
		{"file://host/dir", "take no host"},
		{"file://", "want file:///absolute/dir"},
		{"file:///", "want file:///absolute/dir"},
		{"file:///tmp/x?y=1", "no query"},
		{"s3://Bad_Bucket/p", "Bad_Bucket"},
		{"s3://bucket/p?color=red", `unknown query parameter "color"`},
		{"s3://bucket/p?tls=maybe", "tls="},
		{"s3://user:secret@bucket/p", "credentials do not belong"},
		{"s3://bucket/a//b", "prefix"},
		{"s3://bucket/p?endpoint=ftp://h:1", `scheme "ftp"`},
		{"s3://bucket/p?endpoint=127.0.0.1:1", "no credentials"},
		{"%zz", "invalid URL escape"},
	}
	for _, c := range cases {
		_, err := Open(ctx, c.url, Options{Getenv: env})
		if c.want != "no credentials" && !errors.Is(err, ErrBadURL) {
			t.Errorf("Open(%q): err = %v, want ErrBadURL", c.url, err)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q): err = %v, want one containing %q", c.url, err, c.want)
		}
	}
}

func TestOpenUnreachableEndpointFailsAtOnce(t *testing.T) {
	// A port with nothing listening: refused at once, reported at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log, logs := newTestLogger(t)
	_, err = Open(context.Background(), "s3://bucket/p?endpoint=http://"+addr,
		Options{AccessKey: "k", SecretKey: "secretsecret", Logger: log})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want ErrUnreachable naming %s", err, addr)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("Open retried an unreachable endpoint instead of failing at once:\n%s", logs)
	}
}

func TestS3WrongCredentialsAndMissingBucket(t *testing.T) {
	ep := s3Env(t)
	ctx := context.Background()
	log, logs := newTestLogger(t)
	_, err := Open(ctx, "s3://"+testBucket+"/creds?create_bucket=true&endpoint="+ep,
		Options{SecretKey: "wrong-" + randHex(8), Logger: log})
	if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), "rejected the credentials") {
		t.Errorf("wrong secret: err = %v, want ErrCredentials saying the credentials were rejected", err)
	}
	_, err = Open(ctx, "s3://"+testBucket+"/creds?endpoint="+ep, Options{AccessKey: "nobody" + randHex(4), Logger: log})
	if !errors.Is(err, ErrCredentials) {
		t.Errorf("unknown access key: err = %v, want ErrCredentials", err)
	}
	missing := "sbtrain-missing-" + randHex(4)
	_, err = Open(ctx, "s3://"+missing+"/p?endpoint="+ep, Options{Logger: log})
	if !errors.Is(err, ErrNoBucket) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing bucket: err = %v, want ErrNoBucket naming %s", err, missing)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("credential/bucket errors were retried:\n%s", logs)
	}
}

// TestS3ServerStopsAndReturns stops a MinIO of the test's own mid-test: an
// operation fails after the bounded retries with an error saying the
// endpoint does not answer, and once the server is back the same Store
// works again and nothing committed was lost.
func TestS3ServerStopsAndReturns(t *testing.T) {
	m := startOwnMinio(t)
	ctx := context.Background()
	// Each retry is logged at debug level (a caller reports the outage
	// once, see Outage).
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	retry := RetryPolicy{Attempts: 3, Base: 100 * time.Millisecond, Max: 200 * time.Millisecond}
	s, err := Open(ctx, "s3://restart/run?create_bucket=true&endpoint=http://"+m.addr,
		Options{AccessKey: m.user, SecretKey: m.pass, Retry: retry, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCheckpoints(s, "r", log)
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Save(ctx, testMeta(0, 10, false), []Blob{{Name: "a.bin", Data: []byte("one")}})
	if err != nil {
		t.Fatal(err)
	}

	m.stop()
	before := len(logs.String())
	_, err = c.Save(ctx, testMeta(0, 20, false), []Blob{{Name: "a.bin", Data: []byte("two")}})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("save with the server down: err = %v, want ErrUnreachable after 3 attempts", err)
	}
	if n := strings.Count(logs.String()[before:], "retrying"); n != 2 {
		t.Errorf("logged %d retries, want 2 (3 attempts)", n)
	}
	if n := strings.Count(logs.String()[before:], "level=WARN"); n != 0 {
		t.Errorf("%d warnings for the retries of one call, want none (they are debug lines)", n)
	}

	if _, err := c.LoadLatest(ctx); !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("load with the server down: %v, want ErrUnreachable (not a fallback)", err)
	}

	m.start()
	l, err := c.LoadLatest(ctx)
	if err != nil {
		t.Fatalf("load after the server is back: %v", err)
	}
	if l.Manifest.Seq != first.Seq || string(l.Blobs["a.bin"]) != "one" {
		t.Errorf("loaded seq %d %q, want the committed seq %d", l.Manifest.Seq, l.Blobs["a.bin"], first.Seq)
	}
	if _, err := c.Save(ctx, testMeta(0, 30, false), []Blob{{Name: "a.bin", Data: []byte("three")}}); err != nil {
		t.Fatalf("save after the server is back: %v", err)
	}
}

func TestFileStoreLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	failing := io.MultiReader(strings.NewReader("partial"), errReader{})
	if err := s.Put(context.Background(), "x/y", failing, -1); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	ents, _ := os.ReadDir(dir + "/x")
	for _, e := range ents {
		t.Errorf("failed Put left %s behind", e.Name())
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
