package experiment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

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
// one safetensors file per network. Each file is replaced whole.
func (o *Outcome) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	cfg := o.Setup.Config
	if err := writeFileAtomic(filepath.Join(dir, ConfigFile), cfg.YAML()); err != nil {
		return err
	}
	mj, err := json.MarshalIndent(o.Metrics, "", "  ")
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, MetricsFile), append(mj, '\n')); err != nil {
		return err
	}
	for _, rn := range o.Model.Nets() {
		b, err := EncodeNet(rn, cfg.Hash())
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, rn.Role+".safetensors"), b); err != nil {
			return err
		}
	}
	return o.writePlots(dir)
}

func (o *Outcome) writePlots(dir string) error {
	cfg := o.Setup.Config
	title := fmt.Sprintf("%s: %s, generated over held-out data", cfg.Name, cfg.Method)
	if o.Setup.Dim >= 2 {
		if err := eval.SavePNG(filepath.Join(dir, SamplesPlot), func(w io.Writer) error {
			return eval.PlotSamples(w, o.HeldOut, o.Samples, title)
		}); err != nil {
			return fmt.Errorf("plot samples: %w", err)
		}
		if len(o.Trajectories) > 0 {
			if err := eval.SavePNG(filepath.Join(dir, TrajectoriesPlot), func(w io.Writer) error {
				return eval.PlotTrajectories(w, o.Trajectories, cfg.Eval.Trajectories, cfg.Name+": trajectories from prior to data")
			}); err != nil {
				return fmt.Errorf("plot trajectories: %w", err)
			}
		}
	}
	var curves []eval.Curve
	for _, p := range o.Metrics.Phases {
		if len(p.Loss) > 0 {
			curves = append(curves, eval.Curve{Name: p.Name, X: p.LossSteps, Y: p.Loss})
		}
	}
	if len(curves) == 0 {
		return nil
	}
	if err := eval.SavePNG(filepath.Join(dir, LossPlot), func(w io.Writer) error {
		return eval.PlotLoss(w, curves, cfg.Name+": training loss per phase")
	}); err != nil {
		return fmt.Errorf("plot loss: %w", err)
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
		m := &DSBModel{Sched: sched, Dim: s.Dim}
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
