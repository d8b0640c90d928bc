package si

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

func sameFloat32s(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// parallelFields are an untrained velocity and denoiser: real networks, so
// the pool runs them on forked evaluators.
func parallelFields(t *testing.T, d int) (b, eta *NetField) {
	t.Helper()
	vel, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: d, Hidden: []int{32, 32}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	den, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: d, Hidden: []int{32, 32}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	return NewNetField(vel), NewNetField(den)
}

// TestSampleIsWorkerCountInvariant: the ODE samplers and the SDE give the
// same bytes, trajectories included, on 1, 2 and 5 goroutines.
func TestSampleIsWorkerCountInvariant(t *testing.T) {
	const d = 2
	b, eta := parallelFields(t, d)
	p, err := NewPath(PathLinear, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	x0 := dataset.Draw(StandardNormal(d), 4, rng.PurposeBench, nil, 0, 203)
	cases := []SampleOptions{
		{Method: MethodHeun, Steps: 8},
		{Method: MethodRK4, Steps: 5, Trajectory: true},
		{Method: MethodSDE, Steps: 12, Eps: 0.5, Seed: 9, First: 7, Trajectory: true},
		{Method: MethodSDEHeun, Steps: 12, Eps: 1, EpsSchedule: EpsGamma, Direction: DirectionReverse, Seed: 9, Trajectory: true},
		{Method: MethodDopri5, Steps: 3, Trajectory: true},
	}
	for _, opts := range cases {
		opts.Chunk = 32
		var ref *Samples
		for _, workers := range []int{1, 2, 5} {
			opts.Workers = workers
			got, err := Sample(context.Background(), p, b, eta, x0, opts)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = got
				continue
			}
			what := fmt.Sprintf("%s, %d workers", opts.Method, workers)
			sameFloat32s(t, what, got.X, ref.X)
			for k := range got.States {
				sameFloat32s(t, fmt.Sprintf("%s, state %d", what, k), got.States[k], ref.States[k])
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Sample(ctx, p, b, eta, x0, SampleOptions{Method: MethodHeun, Steps: 4, Chunk: 32, Workers: 3}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v, want context.Canceled", err)
	}
	if _, err := Sample(context.Background(), p, b, eta, x0, SampleOptions{Method: MethodHeun, Steps: 4, Workers: -2}); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Errorf("workers -2: error %v, want one naming workers", err)
	}
}

// TestLikelihoodIsWorkerCountInvariant: exact and Hutchinson divergences
// give the same float64 bits on 1, 2 and 5 goroutines.
func TestLikelihoodIsWorkerCountInvariant(t *testing.T) {
	const d = 3
	b, _ := parallelFields(t, d)
	rho0 := StandardNormal(d)
	x1 := dataset.Draw(rho0, 6, rng.PurposeBench, nil, 0, 150)
	for _, div := range []string{DivExact, DivHutchinson} {
		opts := LikelihoodOptions{Method: MethodRK4, Steps: 6, Divergence: div, Probes: 2, Seed: 3, First: 11, Chunk: 40}
		var ref []float64
		for _, workers := range []int{1, 2, 5} {
			opts.Workers = workers
			got, err := LogLikelihood(context.Background(), b, rho0, x1, opts)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = got
				continue
			}
			for i := range got {
				if math.Float64bits(got[i]) != math.Float64bits(ref[i]) {
					t.Fatalf("%s, %d workers: point %d is %v, want %v", div, workers, i, got[i], ref[i])
				}
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LogLikelihood(ctx, b, rho0, x1, LikelihoodOptions{Method: MethodEuler, Steps: 3, Chunk: 40, Workers: 2}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v, want context.Canceled", err)
	}
}

// TestGaussianFieldsFork: the closed forms fork into copies with the same
// bytes, used concurrently by VelocityError on every core.
func TestGaussianFieldsFork(t *testing.T) {
	p, err := NewPath(PathLinear, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	g1, err := NewDiagGaussian([]float64{1, -1}, []float64{0.5, 2})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewGaussianVelocity(p, StandardNormal(2), g1)
	if err != nil {
		t.Fatal(err)
	}
	ts := []float32{0.1, 0.1, 0.7}
	x := []float32{0.3, -0.2, 1, 2, -1, 0.5}
	for _, f := range []Field{v, v.Denoiser()} {
		want, got := make([]float32, len(x)), make([]float32, len(x))
		if err := f.Eval(ts, x, want); err != nil {
			t.Fatal(err)
		}
		if err := f.(Forker).Fork().Eval(ts, x, got); err != nil {
			t.Fatal(err)
		}
		sameFloat32s(t, fmt.Sprintf("fork of %T", f), got, want)
	}
	// The exact field against itself on every core: zero error everywhere.
	avg, perT, err := VelocityError(v, v, VelocityErrorTimes(), 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if avg != 0 || len(perT) != len(VelocityErrorTimes()) {
		t.Fatalf("exact against exact: average %v over %d times, want 0 over %d", avg, len(perT), len(VelocityErrorTimes()))
	}
}
