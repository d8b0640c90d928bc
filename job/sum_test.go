package job

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/nn"
)

// memRing makes an in-memory ring of n members.
func memRing(t testing.TB, n int) []*allreduce.Ring {
	t.Helper()
	mem := allreduce.NewMemNetwork()
	members := make([]allreduce.Member, n)
	eps := make([]*allreduce.Endpoint, n)
	for i := range n {
		ep, err := allreduce.Listen(mem, "", time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		eps[i], members[i] = ep, allreduce.Member{ID: fmt.Sprintf("r%d", i), Addr: ep.Addr()}
	}
	rings := make([]*allreduce.Ring, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rings[i], errs[i] = allreduce.NewRing(context.Background(), allreduce.Config{Run: "job", Rank: i,
				Members: members, Generation: 1, Deadline: 10 * time.Second, Endpoint: eps[i]})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, r := range rings {
		t.Cleanup(func() { r.Close() })
	}
	return rings
}

// runRing trains n replicas to the end, each step summed by Sum over a
// real (in-memory) ring, replica r owning own(step)[r]; the replicas run
// concurrently, as trainers do.
func runRing(t *testing.T, j *Job, n int, own func(step int64) [][]int) []*State {
	t.Helper()
	states := replicas(t, j, n)
	var colls []fixedsum.Collective
	if n == 1 {
		colls = []fixedsum.Collective{fixedsum.Alone{}}
	} else {
		for _, r := range memRing(t, n) {
			colls = append(colls, r)
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, s := range states {
		wg.Go(func() {
			src := &memShards{}
			for !s.Done() {
				sum, err := s.Sum(context.Background(), own(s.Position().Step)[r], src, colls[r])
				if err == nil {
					_, err = s.Apply(sum)
				}
				if err != nil {
					errs[r] = fmt.Errorf("replica %d at %v: %w", r, s.Position(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return states
}

// The interpolant's other losses: the score by its own objective with the
// velocity as the pair (v, s), and the mirror interpolant.
const (
	siScoreYAML = `
name: jobtest-si-score
method: si
seed: 4
data: {name: checkerboard}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 64, lr: 0.002, steps: 9, ema_decay: 0.99}
si: {train_denoiser: true, field: score, velocity: v}
`
	siMirrorYAML = `
name: jobtest-si-mirror
method: si
seed: 4
data: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
prior: {name: gaussian, dim: 2, mean: [1, -1], var: [0.5, 2]}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 64, lr: 0.002, steps: 9, ema_decay: 0.99}
si: {path: mirror, gamma: sqrt, train_denoiser: true, field: score}
`
)

// TestSumSameBytesAnyWorkerCount: the state after the whole run is the
// same bytes at 1, 2, 3 and 8 replicas, contiguous or interleaved
// ownership, ownership changing from step to step, and with the BLAS
// left multi-threaded by whoever ran before.
func TestSumSameBytesAnyWorkerCount(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
	}{{"dsb", dsbYAML}, {"si", siYAML}, {"dsbm", dsbmYAML}, {"si score and (v, s) pair", siScoreYAML}, {"si mirror", siMirrorYAML}} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJob(t, tc.yaml)
			shards := j.Shards()
			ref := encode(t, runRing(t, j, 1, func(int64) [][]int { return owners(shards, 1) })[0])
			for _, c := range []struct {
				name string
				n    int
				own  func(step int64) [][]int
			}{
				{"2 contiguous", 2, func(int64) [][]int { return owners(shards, 2) }},
				{"3 contiguous", 3, func(int64) [][]int { return owners(shards, 3) }},
				{"8, some idle", 8, func(int64) [][]int { return owners(shards, 8) }},
				{"3 interleaved, moving", 3, func(step int64) [][]int {
					out := make([][]int, 3)
					for i := range shards {
						r := (i + int(step)) % 3
						out[r] = append(out[r], i)
					}
					return out
				}},
			} {
				if c.name == "3 contiguous" {
					// A trainer started by hand may find OpenBLAS at
					// several threads; Sum holds it at one for its work.
					prev := nn.BLASThreads()
					nn.SetBLASThreads(2)
					t.Cleanup(func() { nn.SetBLASThreads(prev) })
				}
				states := runRing(t, j, c.n, c.own)
				for r, s := range states {
					if got := encode(t, s); !bytes.Equal(got, ref) {
						t.Errorf("%s: replica %d differs from 1 replica (relative L2 %.3g)", c.name, r, relDiff(t, ref, got))
					}
				}
			}
		})
	}
}

// TestSumChecksShards: a shard outside the run is refused by name.
func TestSumChecksShards(t *testing.T) {
	j := newJob(t, dsbYAML)
	s := replicas(t, j, 1)[0]
	if _, err := s.Sum(context.Background(), []int{0, 6}, &memShards{}, fixedsum.Alone{}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("shard 6")) {
		t.Errorf("owning shard 6 of 6: %v, want an error naming it", err)
	}
}
