package nn

// activate writes act(z) into a; for SiLU it also keeps sigmoid(z) in sig
// for the backward pass, unless sig is nil (a pass that runs no backward):
// a gets the same bits either way. a may be z itself. The vectorised
// kernels in kernels.go do the work.
func activate(act Activation, a, sig, z []float32) {
	switch act {
	case LeakyReLU:
		signScaleVec(a, z, z, leakySlope)
	case ReLU:
		signScaleVec(a, z, z, 0)
	case Tanh:
		tanhVec(a, z)
	case SiLU:
		if sig == nil {
			siluFwdVec(a, z)
		} else {
			siluVec(a, sig, z)
		}
	default:
		panic("nn: unknown activation " + string(act))
	}
}

// activateGrad turns the gradient with respect to a layer's output (in g)
// into the gradient with respect to its pre-activation z, in place. At the
// kink of ReLU and LeakyReLU the sign bit decides: slope 1 at z = +0, the
// negative side's slope at z = -0 (torch uses the negative side's at both).
func activateGrad(act Activation, g, z, a, sig []float32) {
	switch act {
	case LeakyReLU:
		signScaleVec(g, g, z, leakySlope)
	case ReLU:
		signScaleVec(g, g, z, 0)
	case Tanh:
		tanhGradVec(g, a)
	case SiLU:
		siluGradVec(g, z, sig)
	default:
		panic("nn: unknown activation " + string(act))
	}
}
