package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// fileStore keeps each object as a file under root. A write goes to a
// temporary file in the destination directory, is fsynced, then renamed (or
// hard-linked, for PutIfAbsent) into place and the directory fsynced, so a
// crash leaves the old object or the new one, never a torn one.
type fileStore struct {
	root string
}

func openFile(dir string, mustExist bool) (*fileStore, error) {
	root := filepath.Clean(filepath.FromSlash(dir))
	if mustExist {
		fi, err := os.Stat(root)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("file store %s: no such directory: %w", root, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("file store %s: %w", root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("file store %s: not a directory", root)
		}
		return &fileStore{root: root}, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("file store %s: %w", root, err)
	}
	return &fileStore{root: root}, nil
}

func (s *fileStore) String() string { return "file://" + filepath.ToSlash(s.root) }

func (s *fileStore) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// writeTemp writes r to a fresh temporary file beside dst and fsyncs it.
func (s *fileStore) writeTemp(ctx context.Context, dst string, r io.Reader, size int64) (string, error) {
	dir := filepath.Dir(dst)
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	tmp := filepath.Join(dir, tmpPrefix+filepath.Base(dst)+"-"+hex.EncodeToString(rnd[:]))
	var f *os.File
	// A concurrent Delete may prune the directory between MkdirAll and
	// OpenFile; a few tries outlast any such race.
	for try := 0; ; try++ {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		var err error
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || try == 3 {
			return "", err
		}
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return fail(err)
	}
	if size >= 0 && n != size {
		return fail(fmt.Errorf("read %d bytes, expected %d", n, size))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *fileStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	dst, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	tmp, err := s.writeTemp(ctx, dst, r, size)
	if err != nil {
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("put %s in %s: sync directory: %w", key, s, err)
	}
	return nil
}

func (s *fileStore) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) error {
	dst, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("put %s in %s: %w", key, s, ErrExists)
	}
	tmp, err := s.writeTemp(ctx, dst, r, size)
	if err != nil {
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	defer os.Remove(tmp)
	// link(2) fails if dst exists, atomically: the O_EXCL of a complete file.
	if err := os.Link(tmp, dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s in %s: %w", key, s, ErrExists)
		}
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("put %s in %s: sync directory: %w", key, s, err)
	}
	return nil
}

// lockPath is the lock file of dst's PutIfMatch; its name is reserved
// (tmpPrefix), so List never shows it.
func lockPath(dst string) string {
	return filepath.Join(filepath.Dir(dst), tmpPrefix+"lock-"+filepath.Base(dst))
}

func (s *fileStore) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, version string) error {
	dst, err := s.path(key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	unlock, err := lockKey(dst)
	if err != nil {
		return fmt.Errorf("put %s in %s: lock: %w", key, s, err)
	}
	defer unlock()
	cur := ""
	if fi, err := os.Stat(dst); err == nil {
		cur = fileVersion(fi)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("put %s in %s: %w", key, s, err)
	}
	if cur != version {
		return fmt.Errorf("put %s in %s: version %q, expected %q: %w", key, s, cur, version, ErrChanged)
	}
	if version == "" {
		// Absent: link, as PutIfAbsent does, so a PutIfAbsent racing
		// with us outside the lock cannot be overwritten either.
		err := s.PutIfAbsent(ctx, key, r, size)
		if errors.Is(err, ErrExists) {
			return fmt.Errorf("put %s in %s: created meanwhile: %w", key, s, ErrChanged)
		}
		return err
	}
	return s.Put(ctx, key, r, size)
}

func (s *fileStore) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("get: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ObjectInfo{}, fmt.Errorf("get %s in %s: %w", key, s, ErrNotFound)
		}
		return nil, ObjectInfo{}, fmt.Errorf("get %s in %s: %w", key, s, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, ObjectInfo{}, fmt.Errorf("get %s in %s: %w", key, s, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, ObjectInfo{}, fmt.Errorf("get %s in %s: %w", key, s, ErrNotFound)
	}
	return f, ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime(), Version: fileVersion(st)}, nil
}

func (s *fileStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil || st.IsDir() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return ObjectInfo{}, fmt.Errorf("stat %s in %s: %w", key, s, ErrNotFound)
		}
		return ObjectInfo{}, fmt.Errorf("stat %s in %s: %w", key, s, err)
	}
	return ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime(), Version: fileVersion(st)}, nil
}

func (s *fileStore) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	// Walk only the deepest directory that every match lies under.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var out []ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // vanished while walking, or no such prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out = append(out, ObjectInfo{Key: key, Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %q in %s: %w", prefix, s, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *fileStore) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s in %s: %w", key, s, err)
	}
	// Prune directories the delete emptied, so listings stay cheap; a
	// directory that is not empty (or is being written) stays.
	for dir := path.Dir(key); dir != "."; dir = path.Dir(dir) {
		if os.Remove(filepath.Join(s.root, filepath.FromSlash(dir))) != nil {
			break
		}
	}
	return nil
}

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readFullCtx is io.ReadFull that stops when ctx ends.
func readFullCtx(ctx context.Context, r io.Reader, buf []byte) (int, error) {
	return io.ReadFull(ctxReader{ctx, r}, buf)
}
