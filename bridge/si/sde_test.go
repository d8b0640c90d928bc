package si

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/rng"
)

func TestEpsScheduleShapes(t *testing.T) {
	p := MustPath(PathLinear, GammaSqrt, 1) // max g = 1/2 at t = 1/2
	cases := []struct {
		kind string
		t    float64
		want float64
	}{
		{EpsConstant, 0.5, 2},
		{EpsConstant, 0.1, 2},
		{EpsGamma, 0.5, 2},
		{EpsGamma, 0.1, 2 * math.Sqrt(0.09) / 0.5},
		{EpsGamma2, 0.1, 2 * 0.09 / 0.25},
		{EpsGamma, 0.01, 0}, // outside [tmin, 1-tmin]: the ODE
		{EpsConstant, 0.995, 0},
	}
	for _, c := range cases {
		e, err := NewEpsSchedule(c.kind, 2, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.At(c.t); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s eps(%v) = %v, want %v", c.kind, c.t, got, c.want)
		}
	}
}

func TestEpsScheduleRejectsBadInput(t *testing.T) {
	p := MustPath(PathLinear, GammaSqrt, 1)
	cases := []struct {
		kind string
		eps  float64
		path Path
		want string
	}{
		{EpsConstant, -0.5, p, "eps -0.5"},
		{EpsGamma, math.NaN(), p, "eps NaN"},
		{EpsGamma, math.Inf(1), p, "eps +Inf"},
		{"cubic", 1, p, `eps schedule "cubic"`},
		{EpsConstant, 1, MustPath(PathOneSidedLinear, "", 0), "gamma > 0"},
	}
	for _, c := range cases {
		if _, err := NewEpsSchedule(c.kind, c.eps, c.path, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s eps %v: error %v, want one naming %q", c.kind, c.eps, err, c.want)
		}
	}
	g0, g1 := testEndpoints(t)
	v, _ := NewGaussianVelocity(p, g0, g1)
	x := make([]float32, 6)
	if _, err := Sample(context.Background(), p, v, nil, x, SampleOptions{Method: MethodSDE, Steps: 4, Eps: -1, Score: v.Score()}); err == nil || !strings.Contains(err.Error(), "eps -1") {
		t.Errorf("sample with eps -1: %v, want an eps error", err)
	}
	if _, err := Sample(context.Background(), p, v, nil, x, SampleOptions{Method: MethodSDE, Steps: 4, Eps: 1}); err == nil {
		t.Errorf("sample with eps 1 and neither eta nor the score: no error")
	}
	if _, err := Sample(context.Background(), p, v, nil, x, SampleOptions{Method: MethodRK4, Steps: 4, Direction: "sideways"}); err == nil || !strings.Contains(err.Error(), "direction") {
		t.Errorf("direction sideways: %v, want a direction error", err)
	}
}

// With the exact b and s every schedule and eps carries rho0 to rho1
// forward and rho1 to rho0 in reverse, both discretisations.
func TestOracleSDEsMatchTheMarginalsForEverySchedule(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathLinear, GammaSqrt, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	const n = 3000
	start := map[string][]float32{
		DirectionForward: dataset.Draw(g0, 11, rng.PurposeBench, nil, 0, n),
		DirectionReverse: dataset.Draw(g1, 12, rng.PurposeBench, nil, 0, n),
	}
	end := map[string]*Gaussian{DirectionForward: g1, DirectionReverse: g0}
	type run struct {
		method, sched, dir string
		eps                float64
		steps              int
	}
	var runs []run
	for _, sched := range epsNames {
		for _, eps := range []float64{0, 0.5, 1, 2} {
			for _, dir := range []string{DirectionForward, DirectionReverse} {
				runs = append(runs, run{MethodSDEHeun, sched, dir, eps, 100})
			}
		}
	}
	for _, dir := range []string{DirectionForward, DirectionReverse} {
		runs = append(runs, run{MethodSDE, EpsConstant, dir, 1, 400}, run{MethodSDE, EpsGamma, dir, 2, 400})
	}
	for _, r := range runs {
		res, err := Sample(context.Background(), p, v, nil, start[r.dir], SampleOptions{
			Method: r.method, Steps: r.steps, Eps: r.eps, EpsSchedule: r.sched, Direction: r.dir, Score: v.Score(), Seed: 5,
		})
		if err != nil {
			t.Fatal(err)
		}
		assertMoments(t, fmt.Sprintf("%s %s eps=%v %s", r.method, r.sched, r.eps, r.dir), res.X, end[r.dir])
	}
}

// The score read from the exact denoiser and the exact score drive the same
// SDE, and the pair (v, s) rebuilds b.
func TestScoreFromEtaAndPairVelocityAgreeWithTheClosedForms(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathTrig, GammaQuad, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	x := dataset.Draw(g1, 3, rng.PurposeBench, nil, 0, 20)
	tt := make([]float32, 20)
	for i := range tt {
		tt[i] = 0.05 + 0.045*float32(i)
	}
	a, b := make([]float32, len(x)), make([]float32, len(x))
	if err := (&EtaScore{Path: p, Eta: v.Denoiser()}).Eval(tt, x, a); err != nil {
		t.Fatal(err)
	}
	if err := v.Score().Eval(tt, x, b); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-4*(1+math.Abs(float64(b[i]))) {
			t.Fatalf("value %d: -eta/g = %v, exact score %v", i, a[i], b[i])
		}
	}
	// v = b + g g' s is the conditional mean of a' x0 + b' x1.
	vel := &gaussianV{v: v}
	pair := &PairVelocity{Path: p, V: vel, S: v.Score()}
	if err := pair.Eval(tt, x, a); err != nil {
		t.Fatal(err)
	}
	if err := v.Eval(tt, x, b); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-4*(1+math.Abs(float64(b[i]))) {
			t.Fatalf("value %d: v - g g' s = %v, b = %v", i, a[i], b[i])
		}
	}
}

// gaussianV is the exact v = b + g g' s, built from the closed forms.
type gaussianV struct{ v *GaussianVelocity }

func (g *gaussianV) Dim() int { return g.v.Dim() }
func (g *gaussianV) Eval(t, x, out []float32) error {
	if err := g.v.Eval(t, x, out); err != nil {
		return err
	}
	s := make([]float32, len(out))
	if err := g.v.Score().Eval(t, x, s); err != nil {
		return err
	}
	d := g.Dim()
	for b, tb := range t {
		gdg := g.v.path.At(float64(tb)).GDG
		for j := b * d; j < (b+1)*d; j++ {
			out[j] += float32(gdg) * s[j]
		}
	}
	return nil
}

// With the oracle fields the Feynman-Kac estimate is log rho1 within 3
// standard errors for each eps, and eps = 0 is the deterministic ODE.
func TestOracleSDELikelihoodIsExactWithinItsStandardError(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathLinear, GammaSqrt, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	x1 := dataset.Draw(g1, 21, rng.PurposeHeldOut, nil, 0, 4)
	x := make([]float64, 3)
	for _, c := range []struct {
		sched string
		eps   float64
	}{{EpsConstant, 0}, {EpsConstant, 0.2}, {EpsConstant, 0.5}, {EpsGamma, 1}, {EpsGamma2, 2}} {
		res, err := SDELogLikelihood(context.Background(), p, v, v.Score(), g0, x1, SDELikelihoodOptions{
			Method: MethodSDEHeun, Steps: 1000, Eps: c.eps, EpsSchedule: c.sched, Paths: 300, Seed: 7, Divergence: DivExact,
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range res.LogP {
			for j := range x {
				x[j] = float64(x1[i*3+j])
			}
			want := g1.LogProb(x)
			se := res.StdErr[i]
			if c.eps == 0 {
				se = 0
			}
			if math.Abs(res.LogP[i]-want) > 3*se+1e-3 {
				t.Errorf("%s eps=%v point %d: log-likelihood %.4f ± %.4f, exact %.4f", c.sched, c.eps, i, res.LogP[i], se, want)
			}
			if i == 0 {
				t.Logf("%s eps=%v: log-likelihood %.4f ± %.4f, exact %.4f", c.sched, c.eps, res.LogP[i], se, want)
			}
			if c.eps > 0 && !(se > 0) {
				t.Errorf("%s eps=%v point %d: standard error %v, want > 0", c.sched, c.eps, i, se)
			}
		}
	}
}

// Dormand-Prince reaches RK4-at-100-steps accuracy with fewer evaluations,
// for sampling and for the likelihood.
func TestDopri5BeatsRK4OnEvaluations(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathLinear, GammaSqrt, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	x1 := dataset.Draw(g1, 5, rng.PurposeHeldOut, nil, 0, 100)
	worst := func(ll []float64) float64 {
		var w float64
		x := make([]float64, 3)
		for i := range ll {
			for j := range x {
				x[j] = float64(x1[i*3+j])
			}
			w = math.Max(w, math.Abs(ll[i]-g1.LogProb(x)))
		}
		return w
	}
	rk, err := LogLikelihoodODE(context.Background(), v, g0, x1, LikelihoodOptions{Method: MethodRK4, Steps: 100, Divergence: DivExact})
	if err != nil {
		t.Fatal(err)
	}
	dp, err := LogLikelihoodODE(context.Background(), v, g0, x1, LikelihoodOptions{Method: MethodDopri5, RTol: 1e-6, ATol: 1e-7, Divergence: DivExact})
	if err != nil {
		t.Fatal(err)
	}
	if rk.Evals != 400 {
		t.Errorf("rk4 at 100 steps: %d evaluations, want 400", rk.Evals)
	}
	t.Logf("likelihood: rk4 error %.2g with %d evaluations, dopri5 %.2g with %d", worst(rk.LogP), rk.Evals, worst(dp.LogP), dp.Evals)
	if worst(dp.LogP) > math.Max(worst(rk.LogP), 1e-4) || dp.Evals >= rk.Evals {
		t.Errorf("dopri5: error %.2g with %d evaluations, rk4 %.2g with %d", worst(dp.LogP), dp.Evals, worst(rk.LogP), rk.Evals)
	}
	x0 := dataset.Draw(g0, 6, rng.PurposeBench, nil, 0, 4000)
	res, err := Sample(context.Background(), p, v, nil, x0, SampleOptions{Method: MethodDopri5, Steps: 10})
	if err != nil {
		t.Fatal(err)
	}
	assertMoments(t, "dopri5 sampler", res.X, g1)
	back, err := Sample(context.Background(), p, v, nil, res.X, SampleOptions{Method: MethodDopri5, Steps: 10, Direction: DirectionReverse, Trajectory: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range x0 {
		if math.Abs(float64(back.X[i]-x0[i])) > 1e-3 {
			t.Fatalf("value %d: forward then reverse dopri5 gives %v, started at %v", i, back.X[i], x0[i])
		}
	}
	if back.Times[0] != 1 || back.Times[10] != 0 || back.Evals == 0 {
		t.Errorf("reverse trajectory times %v, evals %d", back.Times, back.Evals)
	}
}

func TestSDELikelihoodRejectsBadInput(t *testing.T) {
	g0, g1 := testEndpoints(t)
	p := MustPath(PathLinear, GammaSqrt, 1)
	v, _ := NewGaussianVelocity(p, g0, g1)
	x := make([]float32, 6)
	cases := []struct {
		opts SDELikelihoodOptions
		want string
	}{
		{SDELikelihoodOptions{Steps: 0}, "steps"},
		{SDELikelihoodOptions{Steps: 4, Eps: math.NaN()}, "eps NaN"},
		{SDELikelihoodOptions{Steps: 4, Paths: 1}, "paths"},
		{SDELikelihoodOptions{Steps: 4, Method: MethodRK4}, "method"},
	}
	for _, c := range cases {
		if _, err := SDELogLikelihood(context.Background(), p, v, v.Score(), g0, x, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.opts, err, c.want)
		}
	}
	if _, err := SDELogLikelihood(context.Background(), p, v, nil, g0, x, SDELikelihoodOptions{Steps: 4, Eps: 1}); err == nil {
		t.Errorf("eps 1 without a score: no error")
	}
}

func TestCrossEntropyAndLogMeanExp(t *testing.T) {
	m, se := logMeanExp([]float64{math.Log(1), math.Log(3)})
	if math.Abs(m-math.Log(2)) > 1e-12 {
		t.Errorf("log mean exp = %v, want log 2", m)
	}
	// sd of {1, 3} is sqrt(2); over sqrt(2) paths and mean 2: 1/2.
	if math.Abs(se-0.5) > 1e-12 {
		t.Errorf("standard error %v, want 0.5", se)
	}
	h, hse, err := CrossEntropy([]float64{-1, -3})
	if err != nil || h != 2 || math.Abs(hse-1) > 1e-12 {
		t.Errorf("cross-entropy %v ± %v (%v), want 2 ± 1", h, hse, err)
	}
}
