package nn

import (
	"fmt"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Graph is a network written as gorgonia expression graphs, differentiated
// symbolically by gorgonia.Grad and run by gorgonia's tape machine: the
// definition the fused passes of Net are proven against, and the baseline
// they are timed against.
//
// It has the architecture of the Net it was built from, for one fixed batch
// size, and its weight and bias nodes hold tensors backed by sub-slices of
// that Net's Params(), so it always evaluates the net's current parameters
// without copying them. Not safe for concurrent use, nor for use
// concurrently with its Net.
type Graph struct {
	net   *Net
	batch int
	dim   int

	fwd  graphPass // out = net(t, x)
	loss graphPass // loss and its gradient with respect to every tensor
	vjp  graphPass // out and d sum(out*v)/dx
}

// graphPass is one expression graph with its own tape machine. Inputs are
// nodes whose values are backed by the buffers here; a call copies its
// arguments into them and runs the machine.
type graphPass struct {
	g *gorgonia.ExprGraph
	m gorgonia.VM

	tBuf, xBuf, auxBuf []float32 // inputs t, x and target or v
	out                *gorgonia.Node
	cost               *gorgonia.Node   // loss pass: the loss
	grads              []*gorgonia.Node // loss pass: per ParamNames entry; vjp pass: d/dx
}

// NewGraph builds the expression graphs of n for batches of exactly batch
// samples.
func NewGraph(n *Net, batch int) (*Graph, error) {
	if n == nil {
		return nil, fmt.Errorf("nn graph: nil net")
	}
	if batch < 1 {
		return nil, fmt.Errorf("nn graph: batch %d: want >= 1", batch)
	}
	if n.unet != nil {
		// The unet's layers are proven one by one against gorgonia's ops
		// and as a whole against finite differences instead.
		return nil, fmt.Errorf("nn graph: architecture %q has no graph form", ArchUNet)
	}
	gr := &Graph{net: n, batch: batch, dim: n.Spec().Dim}
	var err error
	if err = gr.buildPass(&gr.fwd, passForward); err != nil {
		return nil, err
	}
	if err = gr.buildPass(&gr.loss, passLoss); err != nil {
		return nil, err
	}
	if err = gr.buildPass(&gr.vjp, passVJP); err != nil {
		return nil, err
	}
	return gr, nil
}

// Batch is the batch size the graph was built for.
func (gr *Graph) Batch() int { return gr.batch }

type passKind int

const (
	passForward passKind = iota
	passLoss
	passVJP
)

// buildPass builds one graph of the net plus what the pass adds on top.
func (gr *Graph) buildPass(p *graphPass, kind passKind) error {
	n, B, d := gr.net, gr.batch, gr.dim
	spec := n.Spec()
	g := gorgonia.NewGraph()
	p.g = g
	p.tBuf = make([]float32, B)
	p.xBuf = make([]float32, B*d)
	tNode := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(B, 1), gorgonia.WithName("t"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(B, 1), tensor.WithBacking(p.tBuf))))
	xNode := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(B, d), gorgonia.WithName("x"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(B, d), tensor.WithBacking(p.xBuf))))

	b := &graphBuilder{g: g, net: n, spec: spec, batch: B, byName: map[string]int{}}
	b.info = n.ParamNames()
	for i, pi := range b.info {
		b.byName[pi.Name] = i
	}
	b.nodes = make([]*gorgonia.Node, len(b.info))
	out, err := b.build(tNode, xNode)
	if err != nil {
		return fmt.Errorf("nn graph: build %s: %w", spec.Arch, err)
	}
	for i, nd := range b.nodes {
		if nd == nil {
			return fmt.Errorf("nn graph: tensor %s is not used by the graph", b.info[i].Name)
		}
	}
	p.out = out

	switch kind {
	case passLoss:
		p.auxBuf = make([]float32, B*d)
		target := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(B, d), gorgonia.WithName("target"),
			gorgonia.WithValue(tensor.New(tensor.WithShape(B, d), tensor.WithBacking(p.auxBuf))))
		diff, err := gorgonia.Sub(out, target)
		if err != nil {
			return fmt.Errorf("nn graph: loss: %w", err)
		}
		sq, err := gorgonia.Square(diff)
		if err != nil {
			return fmt.Errorf("nn graph: loss: %w", err)
		}
		sum, err := gorgonia.Sum(sq)
		if err != nil {
			return fmt.Errorf("nn graph: loss: %w", err)
		}
		// The mean over the batch of the squared norm.
		p.cost, err = gorgonia.HadamardDiv(sum, gorgonia.NewConstant(float32(B), gorgonia.WithName("batch")))
		if err != nil {
			return fmt.Errorf("nn graph: loss: %w", err)
		}
		p.grads, err = gorgonia.Grad(p.cost, b.nodes...)
		if err != nil {
			return fmt.Errorf("nn graph: grad of loss: %w", err)
		}
	case passVJP:
		p.auxBuf = make([]float32, B*d)
		v := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(B, d), gorgonia.WithName("v"),
			gorgonia.WithValue(tensor.New(tensor.WithShape(B, d), tensor.WithBacking(p.auxBuf))))
		prod, err := gorgonia.HadamardProd(out, v)
		if err != nil {
			return fmt.Errorf("nn graph: vjp: %w", err)
		}
		s, err := gorgonia.Sum(prod)
		if err != nil {
			return fmt.Errorf("nn graph: vjp: %w", err)
		}
		p.grads, err = gorgonia.Grad(s, xNode)
		if err != nil {
			return fmt.Errorf("nn graph: grad of vjp: %w", err)
		}
	}
	p.m = gorgonia.NewTapeMachine(g)
	return nil
}

// graphBuilder writes the architecture of a Spec as gorgonia nodes, finding
// each tensor in the net's arena by its name.
type graphBuilder struct {
	g      *gorgonia.ExprGraph
	net    *Net
	spec   Spec
	batch  int
	info   []ParamInfo
	byName map[string]int
	nodes  []*gorgonia.Node // per info entry
}

// param returns the node of the named tensor, checking its shape; its value
// is backed by the net's parameter arena.
func (b *graphBuilder) param(name string, shape ...int) (*gorgonia.Node, error) {
	i, ok := b.byName[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", name)
	}
	pi := b.info[i]
	if fmt.Sprint(pi.Shape) != fmt.Sprint(shape) {
		return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, pi.Shape, shape)
	}
	if b.nodes[i] != nil {
		return nil, fmt.Errorf("tensor %s used twice", name)
	}
	back := b.net.Params()[pi.Offset : pi.Offset+pi.Len]
	// A bias of n entries is a [1, n] row, broadcast down the batch.
	if len(shape) == 1 {
		shape = []int{1, shape[0]}
	}
	nd := gorgonia.NewMatrix(b.g, tensor.Float32, gorgonia.WithShape(shape...), gorgonia.WithName(name),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(back))))
	b.nodes[i] = nd
	return nd, nil
}

// dense is act(concat(ins) W + b) for the layer called name.
func (b *graphBuilder) dense(name string, out int, act bool, ins ...*gorgonia.Node) (*gorgonia.Node, error) {
	in := ins[0]
	if len(ins) > 1 {
		var err error
		if in, err = gorgonia.Concat(1, ins...); err != nil {
			return nil, fmt.Errorf("%s: concat: %w", name, err)
		}
	}
	w, err := b.param(name+".weight", in.Shape()[1], out)
	if err != nil {
		return nil, err
	}
	bias, err := b.param(name+".bias", out)
	if err != nil {
		return nil, err
	}
	z, err := gorgonia.Mul(in, w)
	if err != nil {
		return nil, fmt.Errorf("%s: matmul: %w", name, err)
	}
	if z, err = gorgonia.BroadcastAdd(z, bias, nil, []byte{0}); err != nil {
		return nil, fmt.Errorf("%s: bias: %w", name, err)
	}
	if !act {
		return z, nil
	}
	var a *gorgonia.Node
	switch b.spec.Activation {
	case LeakyReLU:
		a, err = gorgonia.LeakyRelu(z, leakySlope)
	case ReLU:
		a, err = gorgonia.Rectify(z)
	case Tanh:
		a, err = gorgonia.Tanh(z)
	case SiLU:
		var s *gorgonia.Node
		if s, err = gorgonia.Sigmoid(z); err == nil {
			a, err = gorgonia.HadamardProd(z, s)
		}
	default:
		err = fmt.Errorf("unknown activation %q", b.spec.Activation)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: activation: %w", name, err)
	}
	return a, nil
}

// timeFeatures is the time input of the first layers: t itself, or its
// sinusoidal embedding [sin(t f), cos(t f), zero pad if odd] with the
// frequencies f a fixed [1, embed/2] node.
func (b *graphBuilder) timeFeatures(t *gorgonia.Node) (*gorgonia.Node, error) {
	embed := b.spec.TimeEmbed
	if embed == 0 {
		return t, nil
	}
	half := embed / 2
	f := make([]float32, half)
	for i, v := range sinusoidFreqs(half) {
		f[i] = float32(v)
	}
	freqs := gorgonia.NewMatrix(b.g, tensor.Float32, gorgonia.WithShape(1, half), gorgonia.WithName("freqs"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(1, half), tensor.WithBacking(f))))
	arg, err := gorgonia.Mul(t, freqs)
	if err != nil {
		return nil, fmt.Errorf("time embedding: %w", err)
	}
	sin, err := gorgonia.Sin(arg)
	if err != nil {
		return nil, fmt.Errorf("time embedding: %w", err)
	}
	cos, err := gorgonia.Cos(arg)
	if err != nil {
		return nil, fmt.Errorf("time embedding: %w", err)
	}
	parts := []*gorgonia.Node{sin, cos}
	if embed%2 == 1 {
		pad := gorgonia.NewMatrix(b.g, tensor.Float32, gorgonia.WithShape(b.batch, 1), gorgonia.WithName("pad"),
			gorgonia.WithValue(tensor.New(tensor.WithShape(b.batch, 1), tensor.WithBacking(make([]float32, b.batch)))))
		parts = append(parts, pad)
	}
	tf, err := gorgonia.Concat(1, parts...)
	if err != nil {
		return nil, fmt.Errorf("time embedding: %w", err)
	}
	return tf, nil
}

// build returns the output node [batch, Dim] of the architecture.
func (b *graphBuilder) build(t, x *gorgonia.Node) (*gorgonia.Node, error) {
	tf, err := b.timeFeatures(t)
	if err != nil {
		return nil, err
	}
	s := b.spec
	switch s.Arch {
	case ArchDSB2D:
		// The reference ScoreNetwork: x and time encoders, concatenation,
		// then a 128-128 decoder.
		xh, err := b.dense("x_encoder.0", dsbEncWidth, true, x)
		if err != nil {
			return nil, err
		}
		if xh, err = b.dense("x_encoder.1", dsbEncOut, false, xh); err != nil {
			return nil, err
		}
		th, err := b.dense("t_encoder.0", dsbEncWidth, true, tf)
		if err != nil {
			return nil, err
		}
		if th, err = b.dense("t_encoder.1", dsbEncOut, false, th); err != nil {
			return nil, err
		}
		h, err := b.dense("net.0", dsbDecWidth, true, xh, th)
		if err != nil {
			return nil, err
		}
		if h, err = b.dense("net.1", dsbDecWidth, true, h); err != nil {
			return nil, err
		}
		return b.dense("net.2", s.Dim, false, h)
	case ArchMLP:
		ins := []*gorgonia.Node{x, tf}
		for i, w := range s.Hidden {
			h, err := b.dense(fmt.Sprintf("net.%d", i), w, true, ins...)
			if err != nil {
				return nil, err
			}
			ins = []*gorgonia.Node{h}
		}
		return b.dense(fmt.Sprintf("net.%d", len(s.Hidden)), s.Dim, false, ins...)
	default:
		return nil, fmt.Errorf("unknown arch %q", s.Arch)
	}
}

// check validates a call's slice lengths against the graph's batch.
func (gr *Graph) check(op string, t, x []float32, names []string, bufs ...[]float32) error {
	if len(t) != gr.batch {
		return fmt.Errorf("nn graph %s: batch len(t) = %d, graph built for batch %d", op, len(t), gr.batch)
	}
	want := gr.batch * gr.dim
	if len(x) != want {
		return fmt.Errorf("nn graph %s: len(x) = %d, want batch*Dim = %d*%d", op, len(x), gr.batch, gr.dim)
	}
	for i, b := range bufs {
		if len(b) != want {
			return fmt.Errorf("nn graph %s: len(%s) = %d, want batch*Dim = %d*%d", op, names[i], len(b), gr.batch, gr.dim)
		}
	}
	return nil
}

// run copies the inputs in and runs the pass's machine from the start.
func (p *graphPass) run(t, x, aux []float32) error {
	copy(p.tBuf, t)
	copy(p.xBuf, x)
	copy(p.auxBuf, aux)
	p.m.Reset()
	return p.m.RunAll()
}

// nodeData returns the float32 data of a node's value after a run.
func nodeData(n *gorgonia.Node) ([]float32, error) {
	v := n.Value()
	if v == nil {
		return nil, fmt.Errorf("node %s has no value", n.Name())
	}
	switch d := v.Data().(type) {
	case []float32:
		return d, nil
	case float32:
		return []float32{d}, nil
	default:
		return nil, fmt.Errorf("node %s holds %T, want float32 data", n.Name(), d)
	}
}

// Forward computes out = net(t, x) through the graph; len(t) must be the
// graph's batch, len(x) == len(out) == batch*Dim.
func (gr *Graph) Forward(t, x, out []float32) error {
	if err := gr.check("forward", t, x, []string{"out"}, out); err != nil {
		return err
	}
	if err := gr.fwd.run(t, x, nil); err != nil {
		return fmt.Errorf("nn graph forward: %w", err)
	}
	y, err := nodeData(gr.fwd.out)
	if err != nil {
		return fmt.Errorf("nn graph forward: %w", err)
	}
	copy(out, y)
	return nil
}

// LossGrad computes the loss of Net.LossGrad, (1/B) sum_b |net(t_b, x_b) -
// target_b|^2, and writes its gradient, from gorgonia.Grad, into grads laid
// out like the net's Grads() (len(grads) == NumParams()). It does not touch
// the net's own gradient arena; pass n.Grads() to fill it.
func (gr *Graph) LossGrad(t, x, target []float32, grads []float32) (float64, error) {
	if err := gr.check("loss", t, x, []string{"target"}, target); err != nil {
		return 0, err
	}
	if len(grads) != gr.net.NumParams() {
		return 0, fmt.Errorf("nn graph loss: len(grads) = %d, want NumParams = %d", len(grads), gr.net.NumParams())
	}
	p := &gr.loss
	if err := p.run(t, x, target); err != nil {
		return 0, fmt.Errorf("nn graph loss: %w", err)
	}
	info := gr.net.info
	for i, gn := range p.grads {
		d, err := nodeData(gn)
		if err != nil {
			return 0, fmt.Errorf("nn graph loss: gradient of %s: %w", info[i].Name, err)
		}
		if len(d) != info[i].Len {
			return 0, fmt.Errorf("nn graph loss: gradient of %s has %d entries, want %d", info[i].Name, len(d), info[i].Len)
		}
		copy(grads[info[i].Offset:info[i].Offset+info[i].Len], d)
	}
	l, err := nodeData(p.cost)
	if err != nil {
		return 0, fmt.Errorf("nn graph loss: %w", err)
	}
	return float64(l[0]), nil
}

// VJP computes out = net(t, x) and vjp = d sum(out*v)/dx, from
// gorgonia.Grad; shapes as in Forward, len(v) == len(vjp) == batch*Dim.
func (gr *Graph) VJP(t, x, v, out, vjp []float32) error {
	if err := gr.check("vjp", t, x, []string{"v", "out", "vjp"}, v, out, vjp); err != nil {
		return err
	}
	p := &gr.vjp
	if err := p.run(t, x, v); err != nil {
		return fmt.Errorf("nn graph vjp: %w", err)
	}
	y, err := nodeData(p.out)
	if err != nil {
		return fmt.Errorf("nn graph vjp: %w", err)
	}
	dx, err := nodeData(p.grads[0])
	if err != nil {
		return fmt.Errorf("nn graph vjp: %w", err)
	}
	copy(out, y)
	copy(vjp, dx)
	return nil
}
