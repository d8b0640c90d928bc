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
	p1, p2         []float32 // float32 partial sums over a block of pixels
	k1, k2, k3, k4 []float32
}

func newGNScratch(c int) *gnScratch {
	return &gnScratch{
		s1: make([]float64, c), s2: make([]float64, c), p1: make([]float32, c), p2: make([]float32, c),
		k1: make([]float32, c), k2: make([]float32, c), k3: make([]float32, c), k4: make([]float32, c),
	}
}

// gnBlock is how many pixels are summed in float32 before the partial sums
// go into the float64 totals: float64 arithmetic on every element cost as
// much as the rest of the layer, and 32-term float32 sums lose nothing that
// matters next to the float32 data.
const gnBlock = 32

// channelSums adds, per channel j, sum_p a[p,j] to s1[j] and
// sum_p a[p,j]*b[p,j] to s2[j] (b = a when b is nil) over hw pixels.
func (s *gnScratch) channelSums(a, b []float32, hw, c int) {
	if b == nil {
		b = a
	}
	s1, s2, p1, p2 := s.s1[:c], s.s2[:c], s.p1[:c], s.p2[:c]
	clear(s1)
	clear(s2)
	for lo := 0; lo < hw; lo += gnBlock {
		clear(p1)
		clear(p2)
		gnSums(p1, p2, a[lo*c:], b[lo*c:], c, min(gnBlock, hw-lo))
		for j := range p1 {
			s1[j] += float64(p1[j])
			s2[j] += float64(p2[j])
		}
	}
}

// forward writes the normalised, scaled and shifted x into z for nb images
// of hw pixels and keeps each (image, group)'s mean and 1/std in stats
// (2*nb*groups values) for backward.
func (g *groupNorm) forward(params, x, z []float32, stats []float64, nb, hw int, e *exec) {
	g.forwardSiLU(params, x, z, nil, nil, stats, nb, hw, e)
}

// forwardSiLU is forward followed, with a non-nil, by SiLU: a = silu(z)
// and sig = sigmoid(z), each image's while its z is still in cache.
func (g *groupNorm) forwardSiLU(params, x, z, sig, a []float32, stats []float64, nb, hw int, e *exec) {
	e.run(nb, func(wi, lo, hi int) {
		g.forwardImages(params, x, z, sig, a, stats, lo, hi, hw, e.gnScratch(wi, g.c))
	})
}

func (g *groupNorm) forwardImages(params, x, z, sig, a []float32, stats []float64, lo, hi, hw int, s *gnScratch) {
	c, cg := g.c, g.c/g.groups
	gamma, beta := params[g.w:g.w+c], params[g.b:g.b+c]
	n := float64(hw * cg)
	s1, s2, sc, mu := s.s1[:c], s.s2[:c], s.k1[:c], s.k3[:c]
	for b := lo; b < hi; b++ {
		img := x[b*hw*c : (b+1)*hw*c]
		s.channelSums(img, nil, hw, c)
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
		gnAffine(zi, img, mu, sc, beta, c, hw)
		if a != nil {
			siluVec(a[b*hw*c:(b+1)*hw*c], sig[b*hw*c:(b+1)*hw*c], zi)
		}
	}
}

// backward takes dz, the gradient with respect to forward's output on x,
// and writes the gradient with respect to x into dx, or with addDX adds it;
// dx may alias dz when addDX is false. With params set it adds the weight
// and bias gradients to grads.
func (g *groupNorm) backward(params, grads, x, dz, dx []float32, stats []float64, nb, hw int, wantParams, addDX bool, e *exec) {
	g.backwardSiLU(params, grads, x, dz, dx, nil, nil, stats, nb, hw, wantParams, addDX, e)
}

// backwardSiLU is backward of forwardSiLU: with z non-nil, dz is the
// gradient with respect to the SiLU output and is turned in place, an
// image at a time, into the gradient with respect to z (sig from forward).
func (g *groupNorm) backwardSiLU(params, grads, x, dz, dx, z, sig []float32, stats []float64, nb, hw int, wantParams, addDX bool, e *exec) {
	c := g.c
	var pg []float64 // per image: d gamma then d beta, summed below in image order
	if wantParams {
		if e == nil || len(e.pg) < nb*2*c {
			pg = make([]float64, nb*2*c)
		} else {
			pg = e.pg[:nb*2*c]
		}
	}
	e.run(nb, func(wi, lo, hi int) {
		g.backwardImages(params, pg, x, dz, dx, z, sig, stats, lo, hi, hw, addDX, e.gnScratch(wi, c))
	})
	if wantParams {
		for b := range nb {
			p := pg[b*2*c : (b+1)*2*c]
			for j := range c {
				grads[g.w+j] += float32(p[j])
				grads[g.b+j] += float32(p[c+j])
			}
		}
	}
}

func (g *groupNorm) backwardImages(params []float32, pg []float64, x, dz, dx, z, sig []float32, stats []float64, lo, hi, hw int, addDX bool, s *gnScratch) {
	c, cg := g.c, g.c/g.groups
	gamma := params[g.w : g.w+c]
	n := float64(hw * cg)
	sA, sB, k1, k2, mu, k4 := s.s1[:c], s.s2[:c], s.k1[:c], s.k2[:c], s.k3[:c], s.k4[:c]
	for b := lo; b < hi; b++ {
		img := x[b*hw*c : (b+1)*hw*c]
		dimg := dz[b*hw*c : (b+1)*hw*c]
		if z != nil {
			siluGradVec(dimg, z[b*hw*c:(b+1)*hw*c], sig[b*hw*c:(b+1)*hw*c])
		}
		s.channelSums(dimg, img, hw, c)
		st := stats[2*b*g.groups : 2*(b+1)*g.groups]
		for gi := range g.groups {
			m, r := st[2*gi], st[2*gi+1]
			var s1, s2 float64
			for j := gi * cg; j < (gi+1)*cg; j++ {
				dg := r * (sB[j] - m*sA[j]) // d loss / d gamma_j
				if pg != nil {
					pg[b*2*c+j] = dg
					pg[b*2*c+c+j] = sA[j]
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
		gnBack(dx[b*hw*c:(b+1)*hw*c], img, dimg, k1, k2, mu, k4, c, hw, addDX)
	}
}
