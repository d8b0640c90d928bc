package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/sbtrain/sbtrain/bridge/si"
	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/rng"
)

// closedCheck is a figure measured against closed forms on an example's
// Gaussian endpoints, without training a run (or with a short in-process
// one): measure returns every figure of its group at once.
type closedCheck struct {
	file    string
	results []string
	targets []string
	pass    []func(float64) bool
	measure func(ctx context.Context, s *experiment.Setup) ([]float64, error)
}

var closedFormChecks = []closedCheck{
	{
		file: "gaussian-si.yaml",
		results: []string{
			"SI Gaussian oracle b, s: forward SDE X1 moments, worst |error|/SE over eps {0,0.5,1,2} x {constant,gamma,gamma2} x {EM,Heun}",
			"SI Gaussian oracle b, s: reverse SDE X0 moments, worst |error|/SE, same grid",
		},
		targets: []string{"<= 5", "<= 5"},
		pass:    []func(float64) bool{atMost(5), atMost(5)},
		measure: oracleSDEMoments,
	},
	{
		file: "gaussian-si.yaml",
		results: []string{
			"SI Gaussian oracle: SDE log-likelihood, worst |estimate - exact|/SE over eps {0.2 const, 0.5 const, 1 gamma, 2 gamma2}",
			"SI Gaussian oracle: SDE log-likelihood, largest standard error (nats)",
		},
		targets: []string{"<= 3", "(shown)"},
		pass:    []func(float64) bool{atMost(3), always},
		measure: oracleSDELikelihood,
	},
	{
		file: "gaussian-si.yaml",
		results: []string{
			"SI Gaussian oracle: rk4 100 steps, worst |log-likelihood error|",
			"SI Gaussian oracle: rk4 100 steps, evaluations",
			"SI Gaussian oracle: dopri5 (rtol 1e-6), worst |log-likelihood error| (float32 floor 1e-5)",
			"SI Gaussian oracle: dopri5 evaluations, fewer than rk4's 400",
		},
		targets: []string{"(shown)", "(shown)", "<= max(rk4, 1e-5)", "< 400"},
		pass:    []func(float64) bool{always, always, always, below(400)},
		measure: adaptiveSolver,
	},
	{
		file: "gaussian-si-ot.yaml",
		results: []string{
			"SI optimised interpolant N(0,I) -> N(m,S), d=2: closed-form W2^2",
			"SI optimised interpolant: linear interpolant's transport cost",
			"SI optimised interpolant: learned interpolant's transport cost (closed form)",
			"SI optimised interpolant: transport cost as the learned b sees it",
			"SI optimised interpolant: |cost - W2^2| / W2^2",
			"SI optimised interpolant: cost - linear cost",
		},
		targets: []string{"(shown)", "(shown)", "(shown)", "(shown)", "<= 0.05", "< 0"},
		pass:    []func(float64) bool{always, always, always, always, atMost(0.05), below(0)},
		measure: optimisedInterpolant,
	},
	{
		file: "gaussian-si-score.yaml",
		results: []string{
			"SI 1 vs 3 workers, 50 steps: max |parameter difference|, score loss",
			"SI 1 vs 3 workers, 50 steps: max |parameter difference|, pair (v, s)",
			"SI 1 vs 3 workers, 50 steps: max |parameter difference|, mirror score",
		},
		targets: []string{"<= 1e-4", "<= 1e-4", "<= 1e-4"},
		pass:    []func(float64) bool{atMost(1e-4), atMost(1e-4), atMost(1e-4)},
		measure: workerInvariance,
	},
}

// runClosedForm measures every closed-form group and returns its rows.
func runClosedForm(ctx context.Context, examples, only string) ([]check, []float64, error) {
	var checks []check
	var values []float64
	for _, c := range closedFormChecks {
		if only != "" && c.file != only {
			continue
		}
		path := filepath.Join(examples, c.file)
		setup, err := loadSetup(path)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(os.Stderr, "results: closed forms on %s: %s\n", path, c.results[0])
		v, err := c.measure(ctx, setup)
		if err != nil {
			return nil, nil, fmt.Errorf("example %s: %w", path, err)
		}
		for i := range c.results {
			val := v[i]
			checks = append(checks, check{result: c.results[i], target: c.targets[i], pass: c.pass[i],
				measure: func(*experiment.Metrics) (float64, bool) { return val, !math.IsNaN(val) }})
			values = append(values, val)
		}
	}
	return checks, values, nil
}

func gaussianEnds(s *experiment.Setup) (*si.Gaussian, *si.Gaussian, error) {
	g0, err := si.GaussianOf(s.Prior)
	if err != nil {
		return nil, nil, fmt.Errorf("prior: %w", err)
	}
	g1, err := si.GaussianOf(s.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	return g0, g1, nil
}

func oraclePath(s *experiment.Setup) (si.Path, *si.GaussianVelocity, *si.Gaussian, *si.Gaussian, error) {
	g0, g1, err := gaussianEnds(s)
	if err != nil {
		return si.Path{}, nil, nil, nil, err
	}
	p, err := si.NewPath(s.Config.SI.Path, s.Config.SI.Gamma, s.Config.SI.GammaScale)
	if err != nil {
		return si.Path{}, nil, nil, nil, err
	}
	v, err := si.NewGaussianVelocity(p, g0, g1)
	return p, v, g0, g1, err
}

// momentZ is the worst standardised error of the sample's mean and
// covariance against g: |error| over sqrt(S_jj/n) and sqrt((S_jj S_kk + S_jk^2)/n).
func momentZ(x []float32, g *si.Gaussian) float64 {
	d := g.Dim()
	n := len(x) / d
	mean, cov := g.Mean(), g.Cov()
	m := make([]float64, d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			m[j] += float64(x[i*d+j]) / float64(n)
		}
	}
	var worst float64
	for j := 0; j < d; j++ {
		worst = math.Max(worst, math.Abs(m[j]-mean[j])/math.Sqrt(cov.At(j, j)/float64(n)))
		for k := j; k < d; k++ {
			var c float64
			for i := 0; i < n; i++ {
				c += (float64(x[i*d+j]) - m[j]) * (float64(x[i*d+k]) - m[k]) / float64(n-1)
			}
			se := math.Sqrt((cov.At(j, j)*cov.At(k, k) + cov.At(j, k)*cov.At(j, k)) / float64(n))
			worst = math.Max(worst, math.Abs(c-cov.At(j, k))/se)
		}
	}
	return worst
}

func oracleSDEMoments(ctx context.Context, s *experiment.Setup) ([]float64, error) {
	p, v, g0, g1, err := oraclePath(s)
	if err != nil {
		return nil, err
	}
	const n = 4000
	out := make([]float64, 2)
	for di, dir := range []string{si.DirectionForward, si.DirectionReverse} {
		from, to := g0, g1
		if dir == si.DirectionReverse {
			from, to = g1, g0
		}
		start := dataset.Draw(from, s.Config.Seed, rng.PurposeHeldOut, []uint64{7, uint64(di)}, 0, n)
		for _, sched := range []string{si.EpsConstant, si.EpsGamma, si.EpsGamma2} {
			for _, eps := range []float64{0, 0.5, 1, 2} {
				for _, m := range []struct {
					method string
					steps  int
				}{{si.MethodSDE, 400}, {si.MethodSDEHeun, 100}} {
					res, err := si.Sample(ctx, p, v, nil, start, si.SampleOptions{
						Method: m.method, Steps: m.steps, Eps: eps, EpsSchedule: sched, Direction: dir, Score: v.Score(), Seed: s.Config.Seed,
					})
					if err != nil {
						return nil, err
					}
					out[di] = math.Max(out[di], momentZ(res.X, to))
				}
			}
		}
	}
	return out, nil
}

func oracleSDELikelihood(ctx context.Context, s *experiment.Setup) ([]float64, error) {
	p, v, g0, g1, err := oraclePath(s)
	if err != nil {
		return nil, err
	}
	d := g1.Dim()
	x1 := dataset.Draw(g1, s.Config.Seed, rng.PurposeHeldOut, []uint64{8}, 0, 8)
	x := make([]float64, d)
	var worst, worstSE float64
	for _, c := range []struct {
		sched string
		eps   float64
	}{{si.EpsConstant, 0.2}, {si.EpsConstant, 0.5}, {si.EpsGamma, 1}, {si.EpsGamma2, 2}} {
		res, err := si.SDELogLikelihood(ctx, p, v, v.Score(), g0, x1, si.SDELikelihoodOptions{
			Method: si.MethodSDEHeun, Steps: 2000, Eps: c.eps, EpsSchedule: c.sched, Paths: 300, Divergence: si.DivExact, Seed: s.Config.Seed,
		})
		if err != nil {
			return nil, err
		}
		for i, ll := range res.LogP {
			for j := range x {
				x[j] = float64(x1[i*d+j])
			}
			worst = math.Max(worst, math.Abs(ll-g1.LogProb(x))/res.StdErr[i])
			worstSE = math.Max(worstSE, res.StdErr[i])
		}
	}
	return []float64{worst, worstSE}, nil
}

func adaptiveSolver(ctx context.Context, s *experiment.Setup) ([]float64, error) {
	_, v, g0, g1, err := oraclePath(s)
	if err != nil {
		return nil, err
	}
	d := g1.Dim()
	x1 := dataset.Draw(g1, s.Config.Seed, rng.PurposeHeldOut, []uint64{9}, 0, 500)
	worst := func(ll []float64) float64 {
		var w float64
		x := make([]float64, d)
		for i := range ll {
			for j := range x {
				x[j] = float64(x1[i*d+j])
			}
			w = math.Max(w, math.Abs(ll[i]-g1.LogProb(x)))
		}
		return w
	}
	rk, err := si.LogLikelihoodODE(ctx, v, g0, x1, si.LikelihoodOptions{Method: si.MethodRK4, Steps: 100, Divergence: si.DivExact})
	if err != nil {
		return nil, err
	}
	dp, err := si.LogLikelihoodODE(ctx, v, g0, x1, si.LikelihoodOptions{Method: si.MethodDopri5, RTol: 1e-6, ATol: 1e-7, Divergence: si.DivExact})
	if err != nil {
		return nil, err
	}
	eRK, eDP := worst(rk.LogP), worst(dp.LogP)
	evals := float64(dp.Evals)
	if eDP > math.Max(eRK, 1e-5) {
		evals = math.NaN() // did not reach rk4's accuracy: the count means nothing
	}
	return []float64{eRK, float64(rk.Evals), eDP, evals}, nil
}

func optimisedInterpolant(ctx context.Context, s *experiment.Setup) ([]float64, error) {
	g0, g1, err := gaussianEnds(s)
	if err != nil {
		return nil, err
	}
	c := s.Config
	res, err := si.OptimizeInterpolant(ctx, si.OptimizeOptions{
		Rho0: g0, Rho1: g1, Net: s.Net, Batch: c.Train.Batch, Steps: c.Train.Steps, LR: c.Train.LR,
		LRTheta: 10 * c.Train.LR / 3, InnerSteps: 3, Seed: c.Seed, ReportEvery: 500,
	}, func(step int, cost float64) {
		fmt.Fprintf(os.Stderr, "[optimise interpolant] step %d/%d  learned cost %.4f\n", step, c.Train.Steps, cost)
	})
	if err != nil {
		return nil, err
	}
	w2, err := si.W2Squared(g0, g1)
	if err != nil {
		return nil, err
	}
	lin, err := si.NewLearnedInterpolant(g0.Dim(), 0).Cost(g0, g1, 4000)
	if err != nil {
		return nil, err
	}
	cost, err := res.Interpolant.Cost(g0, g1, 4000)
	if err != nil {
		return nil, err
	}
	return []float64{w2, lin, cost, res.LearnedCost, math.Abs(cost-w2) / w2, cost - lin}, nil
}

func workerInvariance(ctx context.Context, s *experiment.Setup) ([]float64, error) {
	base, err := s.SIOptions()
	if err != nil {
		return nil, err
	}
	base.Steps, base.LRSchedule = 50, si.LRConstant
	var out []float64
	for _, c := range []struct{ path, field, velocity string }{
		{base.Path, si.FieldScore, si.VelocityB},
		{base.Path, si.FieldScore, si.VelocityV},
		{si.PathMirror, si.FieldScore, si.VelocityB},
	} {
		o := base
		o.TrainEta, o.Path, o.Field, o.Velocity = true, c.path, c.field, c.velocity
		if c.path == si.PathMirror {
			o.Rho0 = nil
		}
		one, err := si.TrainSplit(ctx, o, 1, nil)
		if err != nil {
			return nil, err
		}
		three, err := si.TrainSplit(ctx, o, 3, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, si.MaxParamDiff(one, three))
	}
	return out, nil
}
