package method

import (
	"fmt"

	"github.com/sbtrain/sbtrain/nn"
)

// pairLayout is the snapshot of a method that trains one network per
// direction, a phase at a time (DSB, DSBM):
//
//	PREFIX/backward/params, PREFIX/backward/ema, PREFIX/forward/params,
//	PREFIX/forward/ema
//	    the last finished network of each direction (absent before one is)
//	train/params, train/ema, train/adam_m, train/adam_v
//	    the phase in progress (absent at step 0 of a phase: it is then
//	    opened from the finished networks)
//
// and the metadata adam_t, the phase's Adam step count. Backward phases
// come first, so before phase p a backward network has finished when
// p >= 1 and a forward one when p >= 2.
type pairLayout struct {
	prefix string // "dsb", "dsbm"
	kind   string // what the networks are called in errors: "network", "drift"
	net    nn.Spec
	ema    bool // the run keeps an EMA shadow
}

const metaAdamT = "adam_t"

// finishedPair is the last finished network of each direction with its EMA
// shadow (nil without EMA); nil before one has finished.
type finishedPair struct {
	B, F       *nn.Net
	BEMA, FEMA []float32
}

// training is the phase in progress as a snapshot holds it.
type training struct {
	params []float32
	adam   *nn.Adam
	ema    *nn.EMA // nil without EMA
}

// encode writes the finished networks and, past a phase's first step, the
// phase in progress (live nil: none is open, an error then).
func (l pairLayout) encode(w *Writer, fin finishedPair, p int, step int64, live *training) error {
	for _, d := range []struct {
		dir string
		net *nn.Net
		ema []float32
	}{{"backward", fin.B, fin.BEMA}, {"forward", fin.F, fin.FEMA}} {
		if d.net == nil {
			continue
		}
		w.Vec(l.prefix+"/"+d.dir+"/params", d.net.Params())
		if d.ema != nil {
			w.Vec(l.prefix+"/"+d.dir+"/ema", d.ema)
		}
	}
	if step == 0 {
		return nil
	}
	if live == nil {
		return fmt.Errorf("encode at phase %d step %d: no phase in progress", p, step)
	}
	w.Vec("train/params", live.params)
	w.Vec("train/adam_m", live.adam.M)
	w.Vec("train/adam_v", live.adam.V)
	if live.ema != nil {
		w.Vec("train/ema", live.ema.Shadow)
	}
	w.Int(metaAdamT, live.adam.T)
	return nil
}

// decodeFinished restores the networks finished before phase p.
func (l pairLayout) decodeFinished(sn *Snapshot, p int) (finishedPair, error) {
	var fin finishedPair
	var err error
	if fin.B, fin.BEMA, err = l.finished(sn, "backward", p >= 1, p); err != nil {
		return fin, err
	}
	if fin.F, fin.FEMA, err = l.finished(sn, "forward", p >= 2, p); err != nil {
		return fin, err
	}
	return fin, nil
}

// finished restores the last finished network of one direction, if the
// snapshot has it; want says a phase of that direction finished before p.
func (l pairLayout) finished(sn *Snapshot, dir string, want bool, p int) (*nn.Net, []float32, error) {
	name := l.prefix + "/" + dir + "/params"
	if !sn.Has(name) {
		if want {
			return nil, nil, fmt.Errorf("%s: tensor %s is missing: the %s %s finished before phase %d", sn.Name, name, dir, l.kind, p)
		}
		return nil, nil, nil
	}
	return l.netAndEMA(sn, name, l.prefix+"/"+dir+"/ema")
}

// decodeTraining restores the phase in progress: its network and shadow,
// handed to open, which opens the phase around them and returns the
// phase's Adam, whose moments and step count are then restored.
func (l pairLayout) decodeTraining(sn *Snapshot, open func(net *nn.Net, ema []float32) (*nn.Adam, error)) error {
	net, ema, err := l.netAndEMA(sn, "train/params", "train/ema")
	if err != nil {
		return err
	}
	adam, err := open(net, ema)
	if err != nil {
		return err
	}
	n := len(net.Params())
	if err := sn.Vec("train/adam_m", n, adam.M); err != nil {
		return err
	}
	if err := sn.Vec("train/adam_v", n, adam.V); err != nil {
		return err
	}
	adam.T, err = sn.Int(metaAdamT)
	return err
}

// netAndEMA reads a network's weights and, when the run keeps an EMA, its
// shadow.
func (l pairLayout) netAndEMA(sn *Snapshot, params, shadow string) (*nn.Net, []float32, error) {
	net, err := nn.New(l.net, 0)
	if err != nil {
		return nil, nil, err
	}
	n := len(net.Params())
	if err := sn.Vec(params, n, net.Params()); err != nil {
		return nil, nil, err
	}
	var ema []float32
	if l.ema {
		ema = make([]float32, n)
		if err := sn.Vec(shadow, n, ema); err != nil {
			return nil, nil, err
		}
	}
	return net, ema, nil
}
