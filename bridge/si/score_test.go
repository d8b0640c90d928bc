package si

import (
	"context"
	"strings"
	"testing"
)

// The score network trained by its own quadratic objective, and the pair
// (v, s) with b = v - g g' s, match the closed forms after a CI-sized run.
func TestTrainScoreAndVelocityPairCIBudget(t *testing.T) {
	opts := ciGaussianOptions(t, 600)
	opts.Field, opts.Velocity = FieldScore, VelocityV
	res, err := Train(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	exact, err := NewGaussianVelocity(res.Path, opts.Rho0.(*Gaussian), opts.Rho1.(*Gaussian))
	if err != nil {
		t.Fatal(err)
	}
	b, score, err := ModelFields(res.Path, res.Velocity, res.Denoiser, opts.Field, opts.Velocity)
	if err != nil {
		t.Fatal(err)
	}
	sErr, perT, err := ScoreError(score, exact, VelocityErrorTimes(), 1000, 9)
	if err != nil {
		t.Fatal(err)
	}
	bErr, _, err := VelocityError(b, exact, VelocityErrorTimes(), 1000, 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("score relative L2 error %.4f (per t %.3f); b = v - g g' s: %.4f", sErr, perT, bErr)
	if sErr > 0.2 || bErr > 0.2 {
		t.Errorf("score error %.3f, velocity from the pair %.3f: want both <= 0.2", sErr, bErr)
	}
}

// The mirror interpolant x + g z learns the score of rho1 smoothed by g.
func TestTrainMirrorScoreCIBudget(t *testing.T) {
	opts := ciGaussianOptions(t, 600)
	opts.Path, opts.Field = PathMirror, FieldScore
	g1 := opts.Rho1.(*Gaussian)
	opts.Rho0 = nil
	res, err := Train(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	exact, err := NewGaussianVelocity(res.Path, g1, g1)
	if err != nil {
		t.Fatal(err)
	}
	sErr, _, err := ScoreError(res.Denoiser, exact, VelocityErrorTimes(), 1000, 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mirror score relative L2 error %.4f", sErr)
	if sErr > 0.2 {
		t.Errorf("mirror score error %.3f, want <= 0.2", sErr)
	}
	opts.Rho0 = g1
	if _, err := NewTrainer(opts); err == nil || !strings.Contains(err.Error(), "mirror") {
		t.Errorf("mirror with rho0 set: %v, want an error", err)
	}
}

func TestTrainerRejectsBadFieldChoices(t *testing.T) {
	for _, c := range []struct {
		field, velocity string
		eta             bool
		want            string
	}{
		{"grad", "", true, `field "grad"`},
		{"", "w", true, `velocity "w"`},
		{FieldEta, VelocityV, true, "score network"},
		{FieldScore, VelocityV, false, "score network"},
	} {
		opts := smallOptions(t)
		opts.Field, opts.Velocity, opts.TrainEta = c.field, c.velocity, c.eta
		if _, err := NewTrainer(opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("field %q velocity %q: %v, want an error naming %q", c.field, c.velocity, err, c.want)
		}
	}
}

// The new losses keep the worker-count invariance: one worker and three
// workers summing their slices train the same model up to float order.
func TestNewLossesAreWorkerCountInvariant(t *testing.T) {
	for _, c := range []struct {
		name            string
		path            string
		field, velocity string
	}{
		{"score", PathLinear, FieldScore, VelocityB},
		{"pair v, s", PathLinear, FieldScore, VelocityV},
		{"mirror score", PathMirror, FieldScore, VelocityB},
	} {
		opts := smallOptions(t)
		opts.Path, opts.Field, opts.Velocity, opts.Steps = c.path, c.field, c.velocity, 5
		if c.path == PathMirror {
			opts.Rho0 = nil
		}
		var ref *Result
		for _, workers := range []int{1, 3} {
			res, err := TrainSplit(context.Background(), opts, workers, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ref == nil {
				ref = res
				continue
			}
			d := MaxParamDiff(ref, res)
			if d > 1e-4 || d < 0 {
				t.Errorf("%s: 1 and %d workers differ by %g in some parameter, want <= 1e-4", c.name, workers, d)
			}
		}
	}
}

// Wrappers fork only when what they wrap forks, so a field that cannot be
// copied never runs on two goroutines.
func TestWrappersForkOnlyWithForkableParts(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathLinear, GammaSqrt, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	net, den := parallelFields(t, 3)
	cases := []struct {
		name string
		f    Field
		want int
	}{
		{"pair of forkers", &PairVelocity{Path: p, V: net, S: den}, 3},
		{"pair with a plain field", &PairVelocity{Path: p, V: &gaussianV{v: v}, S: v.Score()}, 1},
		{"eta score of a network", &EtaScore{Path: p, Eta: den}, 3},
		{"eta score of a plain field", &EtaScore{Path: p, Eta: &gaussianV{v: v}}, 1},
	}
	for _, c := range cases {
		if got := len(forkFields(c.f, 3)); got != c.want {
			t.Errorf("%s: %d fields for 3 goroutines, want %d", c.name, got, c.want)
		}
	}
}
