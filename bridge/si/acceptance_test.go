package si

import (
	"context"
	"flag"
	"math"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// The acceptance runs take minutes, too long for CI on 2 cores; `make results`
// runs them after the examples, as
//
//	go test -tags openblas -run Acceptance -v -timeout 30m ./bridge/si -si.acceptance
var acceptance = flag.Bool("si.acceptance", false, "run the minutes-long SI acceptance trainings")

func requireAcceptance(t *testing.T) {
	t.Helper()
	if !*acceptance {
		t.Skip("acceptance run: pass -si.acceptance (minutes of CPU)")
	}
}

func progressLogger(t *testing.T) func(Progress) {
	return func(p Progress) {
		t.Logf("step %d/%d loss b %.4f eta %.4f |g| %.3g %.0f samples/s", p.Step, p.Total, p.Loss.Velocity, p.Loss.Denoiser, p.GradNorm.Velocity, p.SamplesPerSec)
	}
}

// TestAcceptanceGaussian: rho0 = N(0, I_3), rho1 = N(m, S) with a full S
// (testEndpoints), linear path, g = sqrt(t(1-t)). Targets: velocity relative
// L2 error (VelocityError on t = 0.05..0.95) below 0.1, and mean held-out
// log-likelihood within 0.05 nats per dimension of the exact one.
func TestAcceptanceGaussian(t *testing.T) {
	requireAcceptance(t)
	opts := ciGaussianOptions(t, 3000)
	opts.Net = nn.Spec{Arch: nn.ArchMLP, Hidden: []int{128, 128}}
	opts.Batch = 512
	opts.LR = 2e-3
	opts.EMADecay = 0.995
	opts.TrainEta = false
	opts.ProgressEvery = 500
	res, err := Train(context.Background(), opts, progressLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained %d steps in %v", res.Steps, res.Elapsed.Round(time.Millisecond))
	g0, g1 := opts.Rho0.(*Gaussian), opts.Rho1.(*Gaussian)
	exact, err := NewGaussianVelocity(res.Path, g0, g1)
	if err != nil {
		t.Fatal(err)
	}
	velErr, perT, err := VelocityError(res.Velocity, exact, VelocityErrorTimes(), 2000, 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("velocity relative L2 error %.4f (per t %.3f)", velErr, perT)
	if velErr >= 0.1 {
		t.Errorf("velocity relative error %.4f, want < 0.1", velErr)
	}
	start := time.Now()
	const n = 2000
	x1 := dataset.Draw(g1, 77, rng.PurposeHeldOut, nil, 0, n)
	ll, err := LogLikelihood(context.Background(), res.Velocity, g0, x1, LikelihoodOptions{Method: MethodRK4, Steps: 50})
	if err != nil {
		t.Fatal(err)
	}
	d := g1.Dim()
	var model, truth, absErr float64
	x := make([]float64, d)
	for i := range ll {
		for j := range x {
			x[j] = float64(x1[i*d+j])
		}
		lp := g1.LogProb(x)
		model += ll[i] / n
		truth += lp / n
		absErr += math.Abs(ll[i]-lp) / n
	}
	perDim := math.Abs(model-truth) / float64(d)
	t.Logf("held-out log-likelihood: model %.4f exact %.4f (|diff|/d = %.4f nats, mean per-point |diff| %.4f) in %v", model, truth, perDim, absErr, time.Since(start).Round(time.Millisecond))
	if perDim > 0.05 {
		t.Errorf("log-likelihood off by %.4f nats per dimension, want <= 0.05", perDim)
	}
}

// TestAcceptanceCheckerboard: rho0 = N(0, I_2) to the 8-square checkerboard
// on [-4, 4]^2 with DefaultOptions (MLP 3x128, batch 512, 20000 steps,
// cosine lr from 3e-3), for the noiseless linear interpolant and for
// g = sqrt(t(1-t)). Targets: energy distance of 2000 generated samples
// (RK4, 50 steps) to 2000 held-out points at most twice that of two
// independent data draws, and mean held-out log-likelihood (RK4, 50 steps,
// exact divergence) in [-log 32 - 0.3, -log 32 + 0.05].
func TestAcceptanceCheckerboard(t *testing.T) {
	requireAcceptance(t)
	for _, gamma := range []string{GammaNone, GammaSqrt} {
		t.Run(gamma, func(t *testing.T) { checkerboardAcceptance(t, gamma) })
	}
}

func checkerboardAcceptance(t *testing.T, gamma string) {
	rho1, err := dataset.New(dataset.Spec{Name: "checkerboard"})
	if err != nil {
		t.Fatal(err)
	}
	rho0 := StandardNormal(2)
	opts := DefaultOptions()
	opts.Rho0, opts.Rho1 = rho0, rho1
	opts.Gamma = gamma
	opts.Seed = 1
	opts.ProgressEvery = 4000
	res, err := Train(context.Background(), opts, progressLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained %s, %v, batch %d, %d steps in %v (%s BLAS)", res.Path, opts.Net.Hidden, opts.Batch, res.Steps, res.Elapsed.Round(time.Millisecond), nn.BLAS())

	const n, odeSteps = 2000, 50
	start := time.Now()
	x0 := dataset.Draw(rho0, 1, rng.PurposeSample, nil, 0, n)
	gen, err := Sample(context.Background(), res.Path, res.Velocity, nil, x0, SampleOptions{Method: MethodRK4, Steps: odeSteps})
	if err != nil {
		t.Fatal(err)
	}
	held := dataset.Draw(rho1, 1, rng.PurposeHeldOut, nil, 0, n)
	other := dataset.Draw(rho1, 2, rng.PurposeHeldOut, nil, 0, n)
	edModel := energyDistance(gen.X, held, 2)
	edData := energyDistance(other, held, 2)
	t.Logf("energy distance: generated %.5f, two data draws %.5f (ratio %.2f), sampling %v", edModel, edData, edModel/edData, time.Since(start).Round(time.Millisecond))
	if edModel > 2*edData {
		t.Errorf("energy distance %.5f > 2 x data baseline %.5f", edModel, edData)
	}

	start = time.Now()
	ll, err := LogLikelihood(context.Background(), res.Velocity, rho0, held, LikelihoodOptions{Method: MethodRK4, Steps: odeSteps})
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for _, v := range ll {
		mean += v / float64(len(ll))
	}
	want := -math.Log(32)
	t.Logf("mean held-out log-likelihood %.4f (exact %.4f) in %v", mean, want, time.Since(start).Round(time.Millisecond))
	if mean < want-0.3 || mean > want+0.05 {
		t.Errorf("mean log-likelihood %.4f outside [%.4f, %.4f]", mean, want-0.3, want+0.05)
	}
}

// energyDistance is the V-statistic 2 E|X-Y| - E|X-X'| - E|Y-Y'| between two
// point clouds (it counts the zero diagonal terms, so it is >= 0 and has a
// positive bias of order 1/n, which the data-vs-data baseline shares).
func energyDistance(a, b []float32, d int) float64 {
	mean := func(p, q []float32) float64 {
		np, nq := len(p)/d, len(q)/d
		var s float64
		for i := 0; i < np; i++ {
			for j := 0; j < nq; j++ {
				var r float64
				for k := 0; k < d; k++ {
					diff := float64(p[i*d+k] - q[j*d+k])
					r += diff * diff
				}
				s += math.Sqrt(r)
			}
		}
		return s / float64(np*nq)
	}
	return 2*mean(a, b) - mean(a, a) - mean(b, b)
}
