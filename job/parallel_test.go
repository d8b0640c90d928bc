package job

import (
	"context"
	"testing"
)

// TestShardSimulationIsWorkerCountInvariant runs the whole DSB job on one
// replica with cache shards simulated on 1, 2 and 5 goroutines: the final
// state has the same bytes, and every shard was built once (memShards is a
// plain sequential source, which the pool must not enter concurrently).
func TestShardSimulationIsWorkerCountInvariant(t *testing.T) {
	var want []byte
	var wantBuilds int
	for _, workers := range []int{1, 2, 5} {
		j := newJob(t, dsbYAML)
		j.Workers = workers
		s, err := j.Init()
		if err != nil {
			t.Fatal(err)
		}
		src := &memShards{}
		all := owners(j.Shards(), 1)[0]
		for !s.Done() {
			buf, err := s.Gradient(context.Background(), all, src)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Apply(append([]float32(nil), buf...)); err != nil {
				t.Fatal(err)
			}
		}
		got := encode(t, s)
		if want == nil {
			want, wantBuilds = got, src.builds
			continue
		}
		if src.builds != wantBuilds {
			t.Errorf("%d workers: %d shard builds, want %d", workers, src.builds, wantBuilds)
		}
		if len(got) != len(want) {
			t.Fatalf("%d workers: state of %d bytes, want %d", workers, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%d workers: state differs from one worker's at byte %d", workers, i)
			}
		}
	}
	if wantBuilds == 0 {
		t.Fatal("no shard was built")
	}
}
