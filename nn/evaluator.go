package nn

// Evaluator returns a network that reads n's parameter arena but owns its
// workspace and gradient arena, so Forward and VJP on n and on each of its
// evaluators can run on different goroutines at once, as long as nothing
// writes the parameters meanwhile (an optimiser step on n changes what every
// evaluator computes). It is cheaper than Clone for networks that are only
// evaluated: the parameters are not copied. Outputs are bitwise those of n.
func (n *Net) Evaluator() *Net {
	e, err := newUninit(n.spec)
	if err != nil {
		// n.spec was validated when n was built, so it validates again.
		panic("nn evaluator: " + err.Error())
	}
	e.params = n.params
	return e
}
