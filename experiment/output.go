package experiment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// Files of a run directory.
const (
	ConfigFile       = "config.yaml"
	MetricsFile      = "metrics.json"
	SamplesPlot      = "samples.png"
	TrajectoriesPlot = "trajectories.png"
	LossPlot         = "loss.png"
	IterationsPlot   = "ipf.png"
	MarginalsPlot    = "marginals.png"
	// Image data: samples.png is a grid and trajectories.png a strip of
	// chains; these are added.
	ChainGIF  = "trajectories.gif"
	PairsPlot = "pairs.png"
)

// Picture sizes for image data.
const (
	gridImages  = 64 // samples.png
	stripChains = 8  // trajectories.png rows
	stripTimes  = 8  // trajectories.png columns
	gifChains   = 16
	gifFrames   = 40
	pairsShown  = 32
)

// Safetensors metadata keys of a saved network.
const (
	metaFormat = "format"
	metaRole   = "sbtrain.role"
	metaSpec   = "sbtrain.spec"
	metaHash   = "sbtrain.config_hash"
	formatPT   = "pt" // what PyTorch's safetensors loader expects to see
)

// Write saves the outcome into dir: the completed config, metrics, plots and
// one safetensors file per network. Each file is replaced whole; Files
// lists what was written, in order.
func (o *Outcome) Write(dir string) error {
	o.Files = o.Files[:0]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	cfg := o.Setup.Config
	if err := o.save(dir, ConfigFile, cfg.YAML()); err != nil {
		return err
	}
	mj, err := json.MarshalIndent(o.Metrics, "", "  ")
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	if err := o.save(dir, MetricsFile, append(mj, '\n')); err != nil {
		return err
	}
	for _, rn := range o.Model.Nets() {
		b, err := EncodeNet(rn, cfg.Hash())
		if err != nil {
			return err
		}
		if err := o.save(dir, rn.Role+".safetensors", b); err != nil {
			return err
		}
	}
	return o.writePlots(dir)
}

func (o *Outcome) save(dir, name string, b []byte) error {
	if err := writeFileAtomic(filepath.Join(dir, name), b); err != nil {
		return err
	}
	o.Files = append(o.Files, name)
	return nil
}

// plot saves one PNG drawn by draw.
func (o *Outcome) plot(dir, name string, draw func(w io.Writer) error) error {
	if err := eval.SavePNG(filepath.Join(dir, name), draw); err != nil {
		return err
	}
	o.Files = append(o.Files, name)
	return nil
}

// WrittenSummary is "dir/{a,b,...}" of the files the last Write wrote.
func (o *Outcome) WrittenSummary(dir string) string {
	return fmt.Sprintf("%s/{%s}", dir, strings.Join(o.Files, ","))
}

func (o *Outcome) writePlots(dir string) error {
	cfg := o.Setup.Config
	title := fmt.Sprintf("%s: %s, generated over held-out data", cfg.Name, cfg.Method)
	if shape, ok := o.Setup.ImageShape(); ok {
		if err := o.writePictures(dir, shape); err != nil {
			return err
		}
	} else if o.Setup.Dim >= 2 {
		if err := o.plot(dir, SamplesPlot, func(w io.Writer) error {
			return eval.PlotSamples(w, o.HeldOut, o.Samples, title)
		}); err != nil {
			return fmt.Errorf("plot samples: %w", err)
		}
		if len(o.Trajectories) > 0 {
			if err := o.plot(dir, TrajectoriesPlot, func(w io.Writer) error {
				return eval.PlotTrajectories(w, o.Trajectories, cfg.Eval.Trajectories, cfg.Name+": trajectories from prior to data")
			}); err != nil {
				return fmt.Errorf("plot trajectories: %w", err)
			}
		}
	}
	if len(o.Marginals) > 1 {
		labels := make([]string, len(o.Marginals))
		for k, at := range o.MarginalSteps {
			labels[k] = fmt.Sprintf("step %d of %d", at, o.MarginalOf)
		}
		labels[0] += " (prior)"
		labels[len(labels)-1] += " (data side)"
		if err := o.plot(dir, MarginalsPlot, func(w io.Writer) error {
			return eval.PlotMarginals(w, o.Marginals, labels, &o.HeldOut, cfg.Name)
		}); err != nil {
			return fmt.Errorf("plot marginals: %w", err)
		}
	}
	if panels := iterationPanels(o.Metrics.Iterations); len(panels) > 0 {
		if err := o.plot(dir, IterationsPlot, func(w io.Writer) error {
			return eval.PlotIterations(w, panels, cfg.Name)
		}); err != nil {
			return fmt.Errorf("plot iterations: %w", err)
		}
	}
	panels := lossPanels(o.Metrics.Phases)
	if len(panels) == 0 {
		return nil
	}
	if err := o.plot(dir, LossPlot, func(w io.Writer) error {
		return eval.PlotLossPanels(w, panels, cfg.Name+": training loss")
	}); err != nil {
		return fmt.Errorf("plot loss: %w", err)
	}
	return nil
}

// lossPanels groups the phases by direction, in training order, each phase
// named by what is left of its name ("ipf 3 backward" is "ipf 3").
func lossPanels(phases []PhaseSummary) []eval.LossPanel {
	var panels []eval.LossPanel
	at := map[string]int{}
	for _, p := range phases {
		if len(p.Loss) == 0 {
			continue
		}
		dir := eval.DirectionOf(p.Name)
		i, ok := at[dir]
		if !ok {
			i = len(panels)
			at[dir] = i
			panels = append(panels, eval.LossPanel{Name: dir})
		}
		name := strings.TrimSpace(strings.TrimSuffix(p.Name, dir))
		panels[i].Phases = append(panels[i].Phases, eval.Curve{Name: name, X: p.LossSteps, Y: p.Loss})
	}
	if len(panels) > eval.MaxPanels {
		panels = panels[:eval.MaxPanels]
	}
	return panels
}

// iterationPanels are the figures of each IPF iteration: the sliced W2 to
// held-out data beside its two-data-draws floor, and on Gaussians the
// errors against the closed-form bridge.
func iterationPanels(its []*Figures) []eval.IterationPanel {
	if len(its) == 0 {
		return nil
	}
	x := make([]float64, len(its))
	w2 := eval.Curve{Name: "generated vs held-out", X: x, Y: make([]float64, len(its))}
	floor := eval.Curve{Name: "two data draws", X: x, Y: make([]float64, len(its))}
	var coupling, mean, variance []float64
	for i, f := range its {
		x[i] = float64(i + 1)
		if f.Iteration > 0 {
			x[i] = float64(f.Iteration)
		}
		w2.Y[i], floor.Y[i] = f.Distances.SlicedW2, f.Baseline.SlicedW2
		if g := f.Gaussian; g != nil {
			mean, variance = append(mean, g.MeanMaxErr), append(variance, g.VarMaxErr)
			if g.CovMaxErr != nil {
				coupling = append(coupling, *g.CovMaxErr)
			}
		}
	}
	panels := []eval.IterationPanel{{Title: "sliced W2 to held-out data", YLabel: "sliced W2", Curves: []eval.Curve{w2}, Floor: &floor}}
	if len(mean) == len(its) {
		errs := []eval.Curve{{Name: "mean", X: x, Y: mean}, {Name: "variance", X: x, Y: variance}}
		if len(coupling) == len(its) {
			errs = append(errs, eval.Curve{Name: "coupling Cov(X0, X1) vs closed form", X: x, Y: coupling})
		}
		panels = append(panels, eval.IterationPanel{Title: "max abs error against the closed-form bridge", YLabel: "max abs error", Curves: errs})
	}
	return panels
}

// writePictures draws image data: a grid of samples, a strip and a GIF of
// chains, and for transfer (an image prior) source beside result.
func (o *Outcome) writePictures(dir string, shape eval.ImageShape) error {
	d := o.Setup.Dim
	n := min(gridImages, o.Samples.Len())
	if err := o.plot(dir, SamplesPlot, func(w io.Writer) error {
		return eval.ImageGrid(w, o.Samples.Data[:n*d], shape, 0)
	}); err != nil {
		return fmt.Errorf("samples grid: %w", err)
	}
	if len(o.Trajectories) > 0 {
		steps := make([][]float32, len(o.Trajectories))
		for k, c := range o.Trajectories {
			steps[k] = c.Data
		}
		if err := o.plot(dir, TrajectoriesPlot, func(w io.Writer) error {
			return eval.TrajectoryStrip(w, steps, shape, stripChains, stripTimes)
		}); err != nil {
			return fmt.Errorf("trajectory strip: %w", err)
		}
		if err := o.plot(dir, ChainGIF, func(w io.Writer) error {
			return eval.ChainGIF(w, steps, shape, gifChains, gifFrames)
		}); err != nil {
			return fmt.Errorf("chain gif: %w", err)
		}
	}
	if _, ok := o.Setup.Prior.(interface{ Shape() [3]int }); ok && o.Start.Len() > 0 {
		n := min(pairsShown, o.Start.Len(), o.Samples.Len())
		if err := o.plot(dir, PairsPlot, func(w io.Writer) error {
			return eval.PairsGrid(w, o.Start.Data[:n*d], o.Samples.Data[:n*d], shape)
		}); err != nil {
			return fmt.Errorf("pairs grid: %w", err)
		}
	}
	return nil
}

// EncodeNet is a network as a safetensors file: one F32 tensor per weight,
// named as in nn.ParamNames, with the architecture in the metadata.
func EncodeNet(rn RoleNet, configHash string) ([]byte, error) {
	spec, err := json.Marshal(rn.Net.Spec())
	if err != nil {
		return nil, fmt.Errorf("encode %s spec: %w", rn.Role, err)
	}
	params := rn.Net.Params()
	var tensors []storage.Tensor
	for _, p := range rn.Net.ParamNames() {
		tensors = append(tensors, storage.F32Tensor(p.Name, p.Shape, params[p.Offset:p.Offset+p.Len]))
	}
	meta := map[string]string{metaFormat: formatPT, metaRole: rn.Role, metaSpec: string(spec), metaHash: configHash}
	b, err := storage.EncodeSafetensors(tensors, meta)
	if err != nil {
		return nil, fmt.Errorf("encode %s net: %w", rn.Role, err)
	}
	return b, nil
}

// DecodeNet rebuilds a network from EncodeNet's bytes; name labels errors.
// Every weight of the architecture must be present with its exact shape.
func DecodeNet(b []byte, name string) (*RoleNet, error) {
	tensors, meta, err := storage.DecodeSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var spec nn.Spec
	if err := json.Unmarshal([]byte(meta[metaSpec]), &spec); err != nil {
		return nil, fmt.Errorf("%s: metadata %q: want the network's JSON spec: %w", name, metaSpec, err)
	}
	// The spec comes from the file: one that declares more weights than
	// the file holds is refused before the network is allocated (64
	// layers of the widest MLP would be a terabyte).
	if n, err := spec.ParamCount(); err == nil && 4*n > int64(len(b)) {
		return nil, fmt.Errorf("%s: network spec declares at least %d weights, the file has %d bytes", name, n, len(b))
	}
	net, err := nn.New(spec, 1)
	if err != nil {
		return nil, fmt.Errorf("%s: network spec: %w", name, err)
	}
	params := net.Params()
	for _, p := range net.ParamNames() {
		t, err := storage.TensorByName(tensors, p.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, the %s architecture needs %v", name, p.Name, t.Shape, spec.Arch, p.Shape)
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", name, p.Name, err)
		}
		copy(params[p.Offset:p.Offset+p.Len], v)
	}
	if len(tensors) != len(net.ParamNames()) {
		return nil, fmt.Errorf("%s: %d tensors, the %s architecture has %d", name, len(tensors), spec.Arch, len(net.ParamNames()))
	}
	return &RoleNet{Role: meta[metaRole], Net: net}, nil
}

// Load reopens a run directory written by Write: its config and networks.
func Load(dir string) (*Setup, Model, error) {
	cfg, err := config.Load(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, nil, err
	}
	s, err := Prepare(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	load := func(role string, required bool) (*nn.Net, error) {
		path := filepath.Join(dir, role+".safetensors")
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) && !required {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read network: %w", err)
		}
		rn, err := DecodeNet(b, path)
		if err != nil {
			return nil, err
		}
		if rn.Net.Spec().Dim != s.Dim {
			return nil, fmt.Errorf("%s: network dimension %d, the config's data has %d", path, rn.Net.Spec().Dim, s.Dim)
		}
		return rn.Net, nil
	}
	switch cfg.Method {
	case config.MethodDSB:
		sched, err := s.schedule()
		if err != nil {
			return nil, nil, err
		}
		m := &DSBModel{Sched: sched, Dim: s.Dim, Denoise: cfg.DSB.Denoise}
		if m.Backward, err = load("backward", true); err != nil {
			return nil, nil, err
		}
		if m.Forward, err = load("forward", false); err != nil {
			return nil, nil, err
		}
		return s, m, nil
	case config.MethodDSBM:
		chain, err := s.dsbmChain()
		if err != nil {
			return nil, nil, err
		}
		m := &DSBMModel{Chain: chain, Denoise: cfg.DSBM.Denoise, SampleSteps: cfg.DSBM.SampleSteps}
		if m.Backward, err = load("backward", true); err != nil {
			return nil, nil, err
		}
		if m.Forward, err = load("forward", false); err != nil {
			return nil, nil, err
		}
		return s, m, nil
	default:
		path, err := s.path()
		if err != nil {
			return nil, nil, err
		}
		m := s.newSIModel(path)
		if m.Velocity, err = load("velocity", true); err != nil {
			return nil, nil, err
		}
		if m.Denoiser, err = load("denoiser", false); err != nil {
			return nil, nil, err
		}
		return s, m, nil
	}
}

// writeFileAtomic replaces path only once the new bytes are on disk.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, bytes.NewReader(b)); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
