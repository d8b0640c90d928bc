package method_test

import (
	"context"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/method"
	"github.com/sbtrain/sbtrain/storage"
)

const dsbYAML = `
name: methodtest
method: dsb
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16]}
train: {batch: 32, lr: 0.002, steps: 4, ema_decay: 0.99}
dsb: {steps: 4, gamma_min: 0.01, iterations: 2, cache_size: 64, cache_shards: 4, cache_refresh: 2}
`

const siYAML = `
name: methodtest-si
method: si
data: {name: checkerboard}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [16]}
train: {batch: 40, lr: 0.002, steps: 3}
`

const dsbmYAML = `
name: methodtest-dsbm
method: dsbm
data: {name: moons}
prior: {name: 8gaussians}
model: {arch: mlp, hidden: [16]}
train: {batch: 32, lr: 0.002, steps: 4, ema_decay: 0.99}
dsbm: {steps: 4, iterations: 2, cache_size: 64, cache_shards: 4, cache_refresh: 2}
`

func newMethod(t *testing.T, y string) method.Method {
	t.Helper()
	cfg, err := config.Parse([]byte(y), "test config")
	if err != nil {
		t.Fatal(err)
	}
	s, err := experiment.Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Method()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPhases(t *testing.T) {
	for _, tc := range []struct {
		name   string
		yaml   string
		shards int
		want   []method.Phase
	}{
		{"dsb", dsbYAML, 4, []method.Phase{
			{Name: "ipf 1 backward", Direction: storage.DirectionBackward, Iteration: 1},
			{Name: "ipf 1 forward", Direction: storage.DirectionForward, Iteration: 1, Evaluate: true},
			{Name: "ipf 2 backward", Direction: storage.DirectionBackward, Iteration: 2},
			{Name: "ipf 2 forward", Direction: storage.DirectionForward, Iteration: 2, Evaluate: true},
		}},
		{"si", siYAML, 16, []method.Phase{{Name: "interpolant", Direction: storage.DirectionSI}}},
		{"dsbm", dsbmYAML, 4, []method.Phase{
			{Name: "imf 1 backward", Direction: storage.DirectionBackward, Iteration: 1},
			{Name: "imf 1 forward", Direction: storage.DirectionForward, Iteration: 1, Evaluate: true},
			{Name: "imf 2 backward", Direction: storage.DirectionBackward, Iteration: 2},
			{Name: "imf 2 forward", Direction: storage.DirectionForward, Iteration: 2, Evaluate: true},
		}},
		{"dsbm ending on backward", strings.Replace(dsbmYAML, "iterations: 2,", "iterations: 2, last_phase: backward,", 1), 4, []method.Phase{
			{Name: "imf 1 backward", Direction: storage.DirectionBackward, Iteration: 1},
			{Name: "imf 1 forward", Direction: storage.DirectionForward, Iteration: 1, Evaluate: true},
			{Name: "imf 2 backward", Direction: storage.DirectionBackward, Iteration: 2, Evaluate: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMethod(t, tc.yaml)
			if got := m.Phases(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("phases %+v, want %+v", got, tc.want)
			}
			if m.Shards() != tc.shards {
				t.Errorf("%d shards, want %d", m.Shards(), tc.shards)
			}
		})
	}
}

// TestSIShardsCoverTheBatch: the interpolant's virtual shards cut the
// batch into contiguous ranges that cover it once, batch not a multiple of
// the shard count included.
func TestSIShardsCoverTheBatch(t *testing.T) {
	for _, batch := range []int{40, 16, 7} {
		y := strings.Replace(siYAML, "batch: 40", "batch: "+strconv.Itoa(batch), 1)
		m := newMethod(t, y).(*method.SI)
		next := 0
		for i := range m.Shards() {
			from, to := m.ShardRange(i)
			if from != next || to < from {
				t.Fatalf("batch %d: shard %d is [%d, %d), want it to start at %d", batch, i, from, to, next)
			}
			next = to
		}
		if next != batch {
			t.Fatalf("batch %d: shards end at %d", batch, next)
		}
	}
}

// TestDriverContract drives a DSB and a DSBM state through their first
// phase by the contract of the package comment, checks the misuses they
// refuse, and that the model exists only once a network has finished.
func TestDriverContract(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{{"dsb", dsbYAML}, {"dsbm", dsbmYAML}} {
		t.Run(tc.name, func(t *testing.T) { driverContract(t, tc.yaml) })
	}
	if _, _, err := newMethod(t, siYAML).EncodeShard(nil); err == nil {
		t.Error("an interpolant encoded a cache shard")
	}
}

func driverContract(t *testing.T, y string) {
	m := newMethod(t, y)
	st, err := m.Start()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Model(0); err == nil {
		t.Error("a model before any phase finished")
	}
	if err := st.Gradient(0, nil, nil, nil); err == nil {
		t.Error("a gradient before the phase is open")
	}
	if err := st.Open(0); err != nil {
		t.Fatal(err)
	}
	if err := st.Open(0); err == nil {
		t.Error("a phase opened twice")
	}
	c := st.Cache()
	if c == nil {
		t.Fatalf("a %s phase without a cache", m.Name())
	}
	all := []int{0, 1, 2, 3}
	builders := c.Builders(2)
	buf := make([]float32, st.GradLen()+method.LossSlots)
	for s := int64(0); s < m.StepsPerPhase(); s++ {
		shards, err := method.Build(context.Background(), builders, c.Gen(s), all)
		if err != nil {
			t.Fatal(err)
		}
		clear(buf)
		if err := st.Gradient(s, all, shards, buf); err != nil {
			t.Fatal(err)
		}
		if buf[st.GradLen()] <= 0 {
			t.Fatalf("step %d: loss %v, want a positive squared error", s, buf[st.GradLen()])
		}
		if err := st.Apply(s, buf[:st.GradLen()]); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Gradient(0, all, []method.Shard{"not a shard", nil, nil, nil}, buf); err == nil {
		t.Error("a shard of another type was trained on")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err == nil {
		t.Error("a phase closed twice")
	}
	model, err := st.Model(1)
	if err != nil {
		t.Fatal(err)
	}
	if roles := len(model.Nets()); roles != 1 {
		t.Errorf("after the first backward phase the model has %d networks, want the backward one", roles)
	}
	if _, _, err := m.EncodeShard("not a shard"); err == nil {
		t.Error("a shard of another type was encoded")
	}
}

// Gradient writes every value of its buffer: a buffer full of NaNs gives
// the bytes a zeroed one does, for every shard, a pair of shards, all of
// them and none (the shard-by-shard sum reuses its buffers uncleared).
func TestGradientOverwritesBuffer(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{{"dsb", dsbYAML}, {"dsbm", dsbmYAML}, {"si", siYAML}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMethod(t, tc.yaml)
			st, err := m.Start()
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Open(0); err != nil {
				t.Fatal(err)
			}
			n := st.GradLen() + method.LossSlots
			for _, owned := range [][]int{{0}, {1}, {0, 2}, {1, 2}, {0, 1, 2, 3}, {}} {
				var shards []method.Shard
				if c := st.Cache(); c != nil && len(owned) > 0 {
					if shards, err = method.Build(context.Background(), c.Builders(1), c.Gen(0), owned); err != nil {
						t.Fatal(err)
					}
				}
				zeroed, dirty := make([]float32, n), make([]float32, n)
				for i := range dirty {
					dirty[i] = float32(math.NaN())
				}
				if err := st.Gradient(0, owned, shards, zeroed); err != nil {
					t.Fatal(err)
				}
				if err := st.Gradient(0, owned, shards, dirty); err != nil {
					t.Fatal(err)
				}
				for i := range zeroed {
					if math.Float32bits(zeroed[i]) != math.Float32bits(dirty[i]) {
						t.Fatalf("owning %v: value %d of %d is %v from a NaN buffer, %v from a zeroed one", owned, i, n, dirty[i], zeroed[i])
					}
				}
			}
		})
	}
}
