package nn

import "math"

// groupNormEps is torch.nn.GroupNorm's default epsilon.
const groupNormEps = 1e-5

// groupNorm is torch.nn.GroupNorm(groups, c) with a per-channel affine
// weight and bias, over channel-last activations: each image's hw x c
// block is normalised per group of c/groups consecutive channels, with the
// biased variance over the group's hw*c/groups values. Sums are taken in
// float64, so the statistics do not drift with the image size; the
// elementwise passes use per-channel float32 coefficients.
type groupNorm struct {
	name      string
	c, groups int
	w, b      int // arena offsets of weight and bias
}

// gnScratch is the per-channel scratch of the group norms of one net.
type gnScratch struct {
	s1, s2         []float64
	k1, k2, k3, k4 []float32
}

func newGNScratch(c int) *gnScratch {
	return &gnScratch{
		s1: make([]float64, c), s2: make([]float64, c),
		k1: make([]float32, c), k2: make([]float32, c), k3: make([]float32, c), k4: make([]float32, c),
	}
}

// forward writes the normalised, scaled and shifted x into z for nb images
// of hw pixels and keeps each (image, group)'s mean and 1/std in stats
// (2*nb*groups values) for backward.
func (g *groupNorm) forward(params, x, z []float32, stats []float64, nb, hw int, s *gnScratch) {
	c, cg := g.c, g.c/g.groups
	gamma, beta := params[g.w:g.w+c], params[g.b:g.b+c]
	n := float64(hw * cg)
	s1, s2, sc, mu := s.s1[:c], s.s2[:c], s.k1[:c], s.k3[:c]
	for b := range nb {
		img := x[b*hw*c : (b+1)*hw*c]
		clear(s1)
		clear(s2)
		for p := range hw {
			row := img[p*c : (p+1)*c]
			for j, v := range row {
				f := float64(v)
				s1[j] += f
				s2[j] += f * f
			}
		}
		st := stats[2*b*g.groups : 2*(b+1)*g.groups]
		for gi := range g.groups {
			var m, q float64
			for j := gi * cg; j < (gi+1)*cg; j++ {
				m += s1[j]
				q += s2[j]
			}
			m /= n
			v := max(q/n-m*m, 0)
			st[2*gi] = m
			st[2*gi+1] = 1 / math.Sqrt(v+groupNormEps)
		}
		for j := range c {
			m, r := st[2*(j/cg)], st[2*(j/cg)+1]
			sc[j] = float32(r * float64(gamma[j]))
			mu[j] = float32(m)
		}
		zi := z[b*hw*c : (b+1)*hw*c]
		for p := range hw {
			row := img[p*c : (p+1)*c]
			out := zi[p*c : (p+1)*c]
			for j, v := range row {
				out[j] = (v-mu[j])*sc[j] + beta[j]
			}
		}
	}
}

// backward takes dz, the gradient with respect to forward's output on x,
// and writes the gradient with respect to x into dx, or with addDX adds it;
// dx may alias dz when addDX is false. With params set it adds the weight
// and bias gradients to grads.
func (g *groupNorm) backward(params, grads, x, dz, dx []float32, stats []float64, nb, hw int, wantParams, addDX bool, s *gnScratch) {
	c, cg := g.c, g.c/g.groups
	gamma := params[g.w : g.w+c]
	n := float64(hw * cg)
	sA, sB, k1, k2, mu, k4 := s.s1[:c], s.s2[:c], s.k1[:c], s.k2[:c], s.k3[:c], s.k4[:c]
	for b := range nb {
		img := x[b*hw*c : (b+1)*hw*c]
		dimg := dz[b*hw*c : (b+1)*hw*c]
		clear(sA)
		clear(sB)
		for p := range hw {
			row := img[p*c : (p+1)*c]
			drow := dimg[p*c : (p+1)*c]
			for j, d := range drow {
				f := float64(d)
				sA[j] += f
				sB[j] += f * float64(row[j])
			}
		}
		st := stats[2*b*g.groups : 2*(b+1)*g.groups]
		for gi := range g.groups {
			m, r := st[2*gi], st[2*gi+1]
			var s1, s2 float64
			for j := gi * cg; j < (gi+1)*cg; j++ {
				dg := r * (sB[j] - m*sA[j]) // d loss / d gamma_j
				if wantParams {
					grads[g.w+j] += float32(dg)
					grads[g.b+j] += float32(sA[j])
				}
				s1 += float64(gamma[j]) * sA[j]
				s2 += float64(gamma[j]) * dg
			}
			// dx = r (gamma dz - s1/n - xhat s2/n), xhat = (x - m) r;
			// x - m is formed per element so a large mean loses no bits.
			c2, c4 := float32(-r*r*s2/n), float32(-r*s1/n)
			for j := gi * cg; j < (gi+1)*cg; j++ {
				k1[j] = float32(r * float64(gamma[j]))
				k2[j] = c2
				mu[j] = float32(m)
				k4[j] = c4
			}
		}
		dxi := dx[b*hw*c : (b+1)*hw*c]
		for p := range hw {
			row := img[p*c : (p+1)*c]
			drow := dimg[p*c : (p+1)*c]
			out := dxi[p*c : (p+1)*c]
			if addDX {
				for j, v := range row {
					out[j] += k1[j]*drow[j] + k2[j]*(v-mu[j]) + k4[j]
				}
			} else {
				for j, v := range row {
					out[j] = k1[j]*drow[j] + k2[j]*(v-mu[j]) + k4[j]
				}
			}
		}
	}
}
