package nn

import "time"

// The layer kinds a unet pass's time is split into.
const (
	kindConvGEMM  = iota // convolution matrix products
	kindIm2col           // im2col, row taps and col2im
	kindGroupNorm        // group normalisation, with the SiLU fused into it
	kindSiLU             // the time embedding's SiLU and its derivative
	kindOther            // biases, time embedding, upsampling, concatenation, residuals, layout
	numKinds
)

var kindNames = [numKinds]string{"conv_gemm", "im2col", "groupnorm", "silu", "other"}

// layerTimer charges the wall time between consecutive marks to the kind
// named at the second mark. Off, a mark is one branch, so the passes carry
// their marks always; a nil timer is off.
type layerTimer struct {
	on   bool
	last time.Time
	d    [numKinds]time.Duration
}

// start begins a timed stretch; time before it is charged to nothing.
func (p *layerTimer) start() {
	if p == nil || !p.on {
		return
	}
	p.last = time.Now()
}

func (p *layerTimer) mark(kind int) {
	if p == nil || !p.on {
		return
	}
	now := time.Now()
	p.d[kind] += now.Sub(p.last)
	p.last = now
}

// SetLayerTiming turns per-layer-kind timing of the passes on or off and
// clears what was collected. Only the unet architecture is timed; timing
// costs two clock reads per layer, so leave it off outside benchmarks.
func (n *Net) SetLayerTiming(on bool) {
	if n.unet == nil {
		return
	}
	n.unet.ex.prof = layerTimer{on: on}
}

// LayerTimes returns the wall time spent in each layer kind since timing
// was turned on: "conv_gemm", "im2col", "groupnorm", "silu" and "other".
// It is nil when timing is off or the architecture is not timed.
func (n *Net) LayerTimes() map[string]time.Duration {
	if n.unet == nil || !n.unet.ex.prof.on {
		return nil
	}
	out := make(map[string]time.Duration, numKinds)
	for k, d := range n.unet.ex.prof.d {
		out[kindNames[k]] = d
	}
	return out
}
