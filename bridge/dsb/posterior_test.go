package dsb

import (
	"math"
	"testing"

	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/rng"
)

// twoBumps is an equal mixture of N(-1.5, 0.3^2) and N(1, 0.5^2) per
// coordinate: data whose backward means are not linear.
type twoBumps struct{ dim int }

func (b twoBumps) Dim() int     { return b.dim }
func (b twoBumps) Name() string { return "test-two-bumps" }
func (b twoBumps) Sample(s *rng.Stream, dst []float64) {
	for i := range dst {
		if s.Float64() < 0.5 {
			dst[i] = -1.5 + 0.3*s.Norm()
		} else {
			dst[i] = 1 + 0.5*s.Norm()
		}
	}
}

// The posterior target must be an unbiased stand-in for the mean-matching
// target of backward phase 1 (their difference has mean zero given the
// input, checked against the features 1, x, x^2, x^3), equal to it at the
// first transition, where X_0 is the input's own start, and less noisy
// after it: the plain target's second moment exceeds the posterior's by
// the variance of the transition noise it carries.
func TestPosteriorTargetKeepsTheMeanAndDropsTheNoise(t *testing.T) {
	const dim, trajectories = 2, 20000
	for _, ref := range []Reference{
		{Kind: Brownian},
		{Kind: OU, Mu: []float64{0.3, -0.2}, Var: 2},
	} {
		t.Run(string(ref.Kind), func(t *testing.T) {
			sched, err := NewSchedule(6, 0.05, 0.3)
			if err != nil {
				t.Fatal(err)
			}
			chain := func(posterior bool) *Chain {
				return &Chain{Sched: sched, Dim: dim, Ref: ref, Data: twoBumps{dim}, Prior: gaussian{dim, 0, 1},
					Seed: 5, CacheSize: trajectories, Shards: 1, Batch: 8, PosteriorTarget: posterior}
			}
			phase := PhaseID{Iteration: 1, Dir: Backward}
			plain, err := chain(false).SimulateShard(chain(false).ReferenceMean(), phase, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			post, err := chain(true).SimulateShard(chain(true).ReferenceMean(), phase, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range plain.Inputs {
				if plain.Inputs[i] != post.Inputs[i] {
					t.Fatalf("input %d differs: the chains must be the same", i)
				}
			}
			n := sched.N()
			for k := 0; k < n; k++ {
				for i := 0; i < dim; i++ {
					var feat [4]float64   // sum of (plain - post) * x^p
					var featSq [4]float64 // for its standard error
					var varPlain, varPost float64
					for j := 0; j < trajectories; j++ {
						row := (j*n+k)*dim + i
						x := float64(plain.Inputs[row])
						d := float64(plain.Targets[row]) - float64(post.Targets[row])
						p := 1.0
						for f := range feat {
							feat[f] += d * p
							featSq[f] += d * d * p * p
							p *= x
						}
						varPlain += float64(plain.Targets[row]) * float64(plain.Targets[row])
						varPost += float64(post.Targets[row]) * float64(post.Targets[row])
					}
					for f := range feat {
						m := feat[f] / trajectories
						se := math.Sqrt(featSq[f]/trajectories-m*m) / math.Sqrt(trajectories)
						if k == 0 && se > 1e-6 {
							t.Fatalf("k = 0, coordinate %d: the targets differ (se %g); X_0 is known there", i, se)
						}
						if math.Abs(m) > 4*se+1e-7 {
							t.Errorf("k = %d, coordinate %d: E[(plain - posterior) x^%d] = %.4g, %.1f standard errors from 0", k, i, f, m, math.Abs(m)/se)
						}
					}
					if k > 0 && !(varPost < 0.9*varPlain) {
						t.Errorf("k = %d, coordinate %d: posterior target second moment %.4g, want under 0.9 times the plain one's %.4g",
							k, i, varPost/trajectories, varPlain/trajectories)
					}
				}
			}
		})
	}
}

// Only backward phase 1 simulates with the reference and so knows X_0: the
// other phases' shards must not change under PosteriorTarget.
func TestPosteriorTargetLeavesTheOtherPhasesAlone(t *testing.T) {
	const dim = 2
	sched, err := NewSchedule(4, 0.1, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: dim, Hidden: []int{8}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		phase PhaseID
		dir   Direction
	}{
		{PhaseID{Iteration: 1, Dir: Forward}, Backward},
		{PhaseID{Iteration: 2, Dir: Backward}, Forward},
	} {
		var shards [2]*Shard
		for v, posterior := range []bool{false, true} {
			c := &Chain{Sched: sched, Dim: dim, Ref: Reference{Kind: OU}, Data: twoBumps{dim}, Prior: gaussian{dim, 0, 1},
				Seed: 5, CacheSize: 16, Shards: 1, Batch: 8, PosteriorTarget: posterior}
			if shards[v], err = c.SimulateShard(&NetMean{Net: net, Dir: tc.dir, Sched: sched, Dim: dim}, tc.phase, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
		for i := range shards[0].Targets {
			if shards[0].Targets[i] != shards[1].Targets[i] || shards[0].Inputs[i] != shards[1].Inputs[i] {
				t.Fatalf("%v: value %d differs under PosteriorTarget", tc.phase, i)
			}
		}
	}
}

// exactResidual is what backward phase 1's net must learn for data
// N(a, s^2 I) under the Brownian reference: x_{k+1} + residual =
// E[X_{k+1} + X_k - X_{k+1} | X_{k+1}] = E[X_k | X_{k+1}], with X_k ~
// N(a, s^2 + 2 sum_{i<k} g_i) and X_{k+1} = X_k + sqrt(2 g_k) Z.
func exactResidual(sched Schedule, a, s2 float64, k int, x float64) float64 {
	v := s2
	for i := 0; i < k; i++ {
		v += 2 * sched.Gammas[i]
	}
	n2 := 2 * sched.Gammas[k]
	return a + v/(v+n2)*(x-a) - x
}

// With the same steps, the posterior target must learn backward phase 1's
// mean better than the noisy one: the point of it.
func TestPosteriorTargetLearnsPhaseOneFaster(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two small phases")
	}
	const dim, steps, a, s = 2, 300, 0.5, 0.2
	sched, err := NewSchedule(10, 0.02, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	errs := map[bool]float64{}
	for _, posterior := range []bool{false, true} {
		c := &Chain{Sched: sched, Dim: dim, Ref: Reference{Kind: Brownian}, Data: gaussian{dim, a, s}, Prior: gaussian{dim, 0, 1},
			Seed: 9, CacheSize: 1024, Shards: 4, Batch: 128, Refresh: 50, PosteriorTarget: posterior}
		net, err := nn.New(nn.Spec{Arch: nn.ArchMLP, Dim: dim, Hidden: []int{32, 32}, Activation: nn.SiLU}, 2)
		if err != nil {
			t.Fatal(err)
		}
		id := PhaseID{Iteration: 1, Dir: Backward}
		p, err := NewPhase(c, id, c.ReferenceMean(), net, Hyper{LR: 3e-3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var shards []*Shard
		for step := 0; step < steps; step++ {
			if step%c.Refresh == 0 {
				shards = shards[:0]
				for i := 0; i < c.Shards; i++ {
					sh, err := p.SimulateShard(c.GenForStep(step), i)
					if err != nil {
						t.Fatal(err)
					}
					shards = append(shards, sh)
				}
			}
			if _, err := p.LocalGrad(step, shards); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Apply(net.Grads()); err != nil {
				t.Fatal(err)
			}
		}
		mean := &NetMean{Net: net, Dir: Backward, Sched: sched, Dim: dim}
		var sq float64
		v := s * s
		for k := 0; k < sched.N(); k++ {
			// Where the net is asked: X_{k+1}'s own law.
			v += 2 * sched.Gammas[k]
			held := dataset.Draw(gaussian{dim, a, math.Sqrt(v)}, 4, rng.PurposeHeldOut, []uint64{uint64(k)}, 0, 400)
			out := make([]float32, len(held))
			if err := mean.Eval(k, held, out); err != nil {
				t.Fatal(err)
			}
			for i, x := range held {
				d := float64(out[i]) - float64(x) - exactResidual(sched, a, s*s, k, float64(x))
				sq += d * d
			}
		}
		errs[posterior] = math.Sqrt(sq / float64(sched.N()*400*dim))
		t.Logf("posterior target %v: RMS error of the backward mean %.4f", posterior, errs[posterior])
	}
	if !(errs[true] < 0.8*errs[false]) {
		t.Errorf("RMS error of the learned mean %.4f with the posterior target, %.4f without: want under 0.8 times", errs[true], errs[false])
	}
}
