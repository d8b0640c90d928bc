package nn

import (
	"fmt"
	"strings"
)

// Activation names the nonlinearity applied between layers.
type Activation string

// The supported activations. LeakyReLU uses slope 0.01, torch.nn.LeakyReLU's
// default, which is what the reference DSB ScoreNetwork instantiates.
const (
	LeakyReLU Activation = "leakyrelu"
	SiLU      Activation = "silu"
	ReLU      Activation = "relu"
	Tanh      Activation = "tanh"
)

// leakySlope is the negative slope of LeakyReLU (torch default).
const leakySlope = 0.01

// The supported architectures.
const (
	ArchDSB2D = "dsb2d"
	ArchMLP   = "mlp"
	ArchUNet  = "unet"
)

// Defaults filled in by WithDefaults.
const (
	DefaultDSBTimeEmbed  = 16
	DefaultUNetTimeEmbed = 32
	DefaultUNetGroups    = 8
)

// Bounds on sizes; they only stop absurd configurations from allocating
// gigabytes before anything fails.
const (
	maxDim       = 1 << 20
	maxWidth     = 1 << 16
	maxLayers    = 64
	maxTimeEmbed = 1 << 12
	dsbEncWidth  = 16  // first layer of each dsb2d encoder
	dsbEncOut    = 32  // output of each dsb2d encoder
	dsbDecWidth  = 128 // both dsb2d decoder hidden layers
)

// Spec describes a network mapping (t, x) in R x R^Dim to R^Dim.
type Spec struct {
	Arch       string     // "dsb2d" or "mlp"
	Dim        int        // data dimension (input x and output)
	Hidden     []int      // mlp: hidden widths, e.g. [256,256]; dsb2d: ignored (fixed architecture)
	TimeEmbed  int        // dsb2d: sinusoidal embedding size (default 16). mlp: 0 = raw t concatenated to x; >0 = sinusoidal embedding of that size concatenated
	Activation Activation // default: leakyrelu for dsb2d, silu for mlp and unet (the only one unet takes)

	// unet only.
	Channels []int  // channels per resolution level, e.g. [32,64,64]
	Image    [3]int // image shape C, H, W; x is NCHW flat, Dim = C*H*W (Dim 0 is filled in)
	Groups   int    // GroupNorm groups (default 8)
}

// WithDefaults returns a copy of s with zero fields filled in: TimeEmbed 16
// for dsb2d and 32 for unet, activation leakyrelu for dsb2d or silu for mlp
// and unet, and for unet Groups 8 and Dim C*H*W. Hidden and Channels are
// copied so the result shares no memory with s.
func (s Spec) WithDefaults() Spec {
	out := s
	out.Hidden = append([]int(nil), s.Hidden...)
	out.Channels = append([]int(nil), s.Channels...)
	switch s.Arch {
	case ArchUNet:
		if out.TimeEmbed == 0 {
			out.TimeEmbed = DefaultUNetTimeEmbed
		}
		if out.Activation == "" {
			out.Activation = SiLU
		}
		if out.Groups == 0 {
			out.Groups = DefaultUNetGroups
		}
		if out.Dim == 0 {
			out.Dim = s.Image[0] * s.Image[1] * s.Image[2]
		}
	case ArchDSB2D:
		if out.TimeEmbed == 0 {
			out.TimeEmbed = DefaultDSBTimeEmbed
		}
		if out.Activation == "" {
			out.Activation = LeakyReLU
		}
	case ArchMLP:
		if out.Activation == "" {
			out.Activation = SiLU
		}
	}
	return out
}

// Validate reports the first invalid field of s.WithDefaults(), naming it;
// zero values that WithDefaults fills are therefore accepted.
func (s Spec) Validate() error {
	d := s.WithDefaults()
	switch d.Arch {
	case ArchDSB2D, ArchMLP:
	case ArchUNet:
		return d.validateUNet()
	default:
		return fmt.Errorf("nn spec: Arch %q: want %q, %q or %q", s.Arch, ArchDSB2D, ArchMLP, ArchUNet)
	}
	if d.Dim < 1 || d.Dim > maxDim {
		return fmt.Errorf("nn spec: Dim %d: want 1..%d", d.Dim, maxDim)
	}
	if d.Arch == ArchMLP {
		if len(d.Hidden) > maxLayers {
			return fmt.Errorf("nn spec: Hidden has %d layers: want at most %d", len(d.Hidden), maxLayers)
		}
		for i, w := range d.Hidden {
			if w < 1 || w > maxWidth {
				return fmt.Errorf("nn spec: Hidden[%d] = %d: want 1..%d", i, w, maxWidth)
			}
		}
	}
	// A one-wide sinusoidal embedding has no frequency, only the zero pad,
	// and would ignore time.
	rawAllowed := d.Arch == ArchMLP && d.TimeEmbed == 0
	if !rawAllowed && (d.TimeEmbed < 2 || d.TimeEmbed > maxTimeEmbed) {
		if d.Arch == ArchMLP {
			return fmt.Errorf("nn spec: TimeEmbed %d: want 0 (raw t) or 2..%d", d.TimeEmbed, maxTimeEmbed)
		}
		return fmt.Errorf("nn spec: TimeEmbed %d: want 2..%d", d.TimeEmbed, maxTimeEmbed)
	}
	switch d.Activation {
	case LeakyReLU, SiLU, ReLU, Tanh:
	default:
		return fmt.Errorf("nn spec: Activation %q: want one of %s", s.Activation,
			strings.Join([]string{string(LeakyReLU), string(SiLU), string(ReLU), string(Tanh)}, ", "))
	}
	return nil
}

// validateUNet checks the unet fields of a defaulted spec.
func (d Spec) validateUNet() error {
	for i, v := range d.Image {
		if v < 1 || v > maxWidth {
			return fmt.Errorf("nn spec: Image[%d] = %d: want 1..%d (C, H, W)", i, v, maxWidth)
		}
	}
	if len(d.Channels) == 0 || len(d.Channels) > maxLayers {
		return fmt.Errorf("nn spec: Channels has %d levels: want 1..%d", len(d.Channels), maxLayers)
	}
	if d.Groups < 1 {
		return fmt.Errorf("nn spec: Groups %d: want >= 1", d.Groups)
	}
	for i, c := range d.Channels {
		if c < 1 || c > maxWidth {
			return fmt.Errorf("nn spec: Channels[%d] = %d: want 1..%d", i, c, maxWidth)
		}
		if c%d.Groups != 0 {
			return fmt.Errorf("nn spec: Channels[%d] = %d: not divisible by Groups %d", i, c, d.Groups)
		}
	}
	if f := 1 << (len(d.Channels) - 1); d.Image[1]%f != 0 || d.Image[2]%f != 0 {
		return fmt.Errorf("nn spec: Image H, W = %d, %d: want both divisible by 2^(levels-1) = %d for %d Channels levels",
			d.Image[1], d.Image[2], f, len(d.Channels))
	}
	if want := d.Image[0] * d.Image[1] * d.Image[2]; d.Dim != want {
		return fmt.Errorf("nn spec: Dim %d: want C*H*W = %d for Image %v", d.Dim, want, d.Image)
	}
	if d.Dim > maxDim {
		return fmt.Errorf("nn spec: Dim %d: want at most %d", d.Dim, maxDim)
	}
	if d.TimeEmbed < 2 || d.TimeEmbed > maxTimeEmbed {
		return fmt.Errorf("nn spec: TimeEmbed %d: want 2..%d", d.TimeEmbed, maxTimeEmbed)
	}
	if d.Activation != SiLU {
		return fmt.Errorf("nn spec: Activation %q: the unet uses %q", d.Activation, SiLU)
	}
	return nil
}

// ParamCount is the length of the parameter arena New allocates for s,
// worked out without allocating it, so that a spec read from outside can
// be held against the bytes that are meant to carry its weights first.
func (s Spec) ParamCount() (int64, error) {
	if err := s.Validate(); err != nil {
		return 0, err
	}
	d := s.WithDefaults()
	if d.Arch == ArchUNet {
		_, _, _, n := newUNet(d, true)
		return int64(n), nil
	}
	var n int64
	for _, l := range buildLayers(d) {
		n += int64(l.in)*int64(l.out) + int64(l.out)
	}
	return n, nil
}
