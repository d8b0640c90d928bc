package trainer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/storage"
)

// readOnlyStore refuses every write, as a file store made read-only does.
type readOnlyStore struct{ storage.Store }

func (readOnlyStore) Put(_ context.Context, key string, _ io.Reader, _ int64) error {
	return fmt.Errorf("put %s: read-only file system", key)
}

// A cache shard that cannot be stored is kept in memory: training goes on
// with the same gradient, and the outage is one warning, not one per
// shard.
func TestShardCacheRidesOutUnwritableStore(t *testing.T) {
	j := shardsJob(t)
	store, _ := shardStore(t)
	var logs bytes.Buffer
	owned := []int{0, 1, 2, 3}
	src := newSource(readOnlyStore{store}, j, &logs)
	got := gradientAtStart(t, j, owned, src)
	if src.builds != 4 {
		t.Fatalf("%d builds, want 4", src.builds)
	}
	var clean bytes.Buffer
	want := gradientAtStart(t, j, owned, newSource(store, j, &clean))
	if !slices.Equal(got, want) {
		t.Error("the gradient on shards that could not be stored differs")
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), "read-only") {
		t.Errorf("%d log lines for 4 failed shard writes, want 1 naming the error:\n%s", n, logs.String())
	}
}
