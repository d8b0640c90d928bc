package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sbtrain/sbtrain/bridge/dsb"
	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/dataset"
	"github.com/sbtrain/sbtrain/eval"
	"github.com/sbtrain/sbtrain/experiment"
	"github.com/sbtrain/sbtrain/rng"
)

func init() {
	register(&command{name: "sample", summary: "generate samples from a trained run directory (CSV or .npy, optional PNG)", run: runSample})
}

func runSample(ctx context.Context, args []string) error {
	fs := newFlagSet("sample", "--run DIR [--n N] [--seed S] [--from FILE] [--direction D] [--sampler M] [--eps-schedule S] [--out FILE.csv|FILE.npy] [--png FILE.png]")
	dir := fs.String("run", "", "run directory written by 'sbtrain train' (required)")
	n := fs.Int("n", 1000, "number of samples")
	seed := fs.Uint64("seed", 1, "seed of the prior draws and the sampling noise")
	out := fs.String("out", "-", "file for the samples: .npy (float32; images as N×C×H×W) or CSV, one per line; - is CSV on standard output")
	png := fs.String("png", "", "also draw the samples to this PNG file: a grid of images, or points over data")
	sampler := fs.String("sampler", "", "SI: euler, heun, rk4, dopri5, sde or sde-heun (default: the run's si.sampler)")
	epsSchedule := fs.String("eps-schedule", "", "SI SDE: constant, gamma or gamma2 (default: the run's si.eps_schedule)")
	eps := fs.Float64("eps", math.NaN(), "SI SDE: the diffusion scale (default: the run's si.epsilon)")
	direction := fs.String("direction", "", "which way to run: SI forward (prior to data, the default) or reverse; DSB and DSBM backward (prior to data, the default) or forward (data to prior)")
	fromFile := fs.String("from", "", "start from the points of this file (.npy, N×dim or N×C×H×W float32/float64, or CSV) instead of draws of the start side")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if *dir == "" {
		return usagef("--run is required")
	}
	if *n <= 0 || *n > config.MaxSamples {
		return usagef("--n %d, want 1..%d", *n, config.MaxSamples)
	}
	setup, model, err := experiment.Load(*dir)
	if err != nil {
		return usageError{err}
	}
	// The samples, their starts and the CSV text all scale with n×dim.
	if values := int64(*n) * int64(setup.Dim); values > maxSampleValues {
		return usagef("--n %d: %d samples of dimension %d are %d numbers, at most %d; draw fewer", *n, *n, setup.Dim, values, int64(maxSampleValues))
	}
	from := setup.Prior
	siFlags := *sampler != "" || *epsSchedule != "" || !math.IsNaN(*eps)
	// generate runs the model the asked way from start.
	generate := func(start []float32) ([]float32, error) {
		g, err := model.Generate(ctx, start, *seed, false)
		if err != nil {
			return nil, err
		}
		return g.End, nil
	}
	switch m := model.(type) {
	case *experiment.SIModel:
		if *direction == "" {
			*direction = "forward"
		}
		if *direction != "forward" && *direction != "reverse" {
			return usagef("--direction %q: an si run goes forward (prior to data) or reverse", *direction)
		}
		if *sampler != "" {
			m.Sampler.Method = *sampler
		}
		if *epsSchedule != "" {
			m.Sampler.EpsSchedule = *epsSchedule
		}
		if !math.IsNaN(*eps) {
			m.Sampler.Eps = *eps
		}
		m.Sampler.Direction = *direction
		sde := m.Sampler.Method == "sde" || m.Sampler.Method == "sde-heun"
		if sde && m.Sampler.Eps > 0 && m.Denoiser == nil {
			return usagef("--sampler %s: run %s has no score network (si.train_denoiser was false); use an ODE sampler or --eps 0", m.Sampler.Method, *dir)
		}
		if *direction == "reverse" || m.Path.Mirror() {
			from = setup.Data
		}
	default:
		if siFlags {
			return usagef("--sampler, --eps and --eps-schedule apply to si runs; run %s is %s", *dir, setup.Config.Method)
		}
		switch *direction {
		case "", "backward":
		case "forward":
			forward, err := forwardSampler(ctx, model, *seed)
			if err != nil {
				return usagef("--direction forward: run %s: %v", *dir, err)
			}
			from, generate = setup.Data, forward
		default:
			return usagef("--direction %q: a %s run goes backward (prior to data, the default) or forward (data to prior)", *direction, setup.Config.Method)
		}
	}
	var start []float32
	if *fromFile != "" {
		rows, dim, err := dataset.ReadRows(*fromFile)
		if err != nil {
			return usagef("--from: %v", err)
		}
		if dim != setup.Dim {
			return usagef("--from %s: points of dimension %d, but run %s has dimension %d", *fromFile, dim, *dir, setup.Dim)
		}
		count := len(rows) / dim
		if flagSet(fs, "n") {
			if *n > count {
				return usagef("--n %d: --from %s holds %d points", *n, *fromFile, count)
			}
			count = *n
		}
		*n, start = count, rows[:count*dim]
	} else {
		// Sampling streams are keyed by the user's seed, never by training's.
		start = dataset.Draw(from, *seed, rng.PurposeSample, []uint64{0}, 0, *n)
	}
	end, err := generate(start)
	if err != nil {
		if siFlags {
			return usageError{err}
		}
		return err
	}
	gen := &experiment.Generated{End: end}
	shape, isImage := setup.ImageShape()
	toNPY := strings.HasSuffix(strings.ToLower(*out), ".npy")
	switch {
	case toNPY && isImage:
		err = writeNPY(*out, gen.End, []int{*n, shape[0], shape[1], shape[2]})
	case toNPY:
		err = writeNPY(*out, gen.End, []int{*n, setup.Dim})
	case isImage:
		return usagef("--out %s: the samples are %dx%dx%d images; write them as .npy (--out FILE.npy)", *out, shape[0], shape[1], shape[2])
	default:
		err = writeCSV(*out, gen.End, setup.Dim)
	}
	if err != nil {
		return err
	}
	if *png != "" && isImage {
		if err := eval.SavePNG(*png, func(w io.Writer) error {
			return eval.ImageGrid(w, gen.End[:min(*n, maxGridImages)*setup.Dim], shape, 0)
		}); err != nil {
			return fmt.Errorf("samples grid: %w", err)
		}
	} else if *png != "" {
		data := eval.Cloud{Data: dataset.Draw(setup.Data, *seed, rng.PurposeHeldOut, []uint64{0}, 0, *n), Dim: setup.Dim}
		if err := eval.SavePNG(*png, func(w io.Writer) error {
			return eval.PlotSamples(w, data, eval.Cloud{Data: gen.End, Dim: setup.Dim}, filepath.Base(*dir)+": samples over data")
		}); err != nil {
			return fmt.Errorf("plot samples: %w", err)
		}
	}
	return nil
}

// forwardSampler runs a two-network bridge from the data side to the
// prior: DSB's forward chain, DSBM's forward SDE.
func forwardSampler(ctx context.Context, model experiment.Model, seed uint64) (func([]float32) ([]float32, error), error) {
	switch m := model.(type) {
	case *experiment.DSBModel:
		if m.Forward == nil {
			return nil, fmt.Errorf("it has no forward network")
		}
		mean := &dsb.NetMean{Net: m.Forward, Dir: dsb.Forward, Sched: m.Sched, Dim: m.Dim}
		return func(start []float32) ([]float32, error) {
			out, err := dsb.SampleContext(ctx, mean, m.Sched, m.Dim, start, dsb.SampleOptions{Seed: seed, Denoise: m.Denoise})
			if err != nil {
				return nil, fmt.Errorf("dsb forward sample: %w", err)
			}
			return out.End, nil
		}, nil
	case *experiment.DSBMModel:
		if m.Forward == nil {
			return nil, fmt.Errorf("it has no forward drift")
		}
		return func(start []float32) ([]float32, error) { return m.GenerateForward(ctx, start, seed) }, nil
	}
	return nil, fmt.Errorf("%T has no forward direction", model)
}

// flagSet says whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// maxGridImages bounds the PNG grid of image samples, which would
// otherwise grow with --n.
const maxGridImages = 256

// writeNPY writes float32 values as a C-order .npy array of shape.
func writeNPY(path string, v []float32, shape []int) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s,), }", strings.Join(dims, ", "))
	// Version 1.0: magic, version, header length, header padded with
	// spaces and a newline so that the data start on a 64-byte boundary.
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	b := make([]byte, 0, 10+len(header)+4*len(v))
	b = append(b, "\x93NUMPY\x01\x00"...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	b = append(b, header...)
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}

// maxSampleValues bounds n×dim for sample: 256 Mi float32 are 1 GiB, and
// the CSV text several times that.
const maxSampleValues = 1 << 28

func writeCSV(path string, rows []float32, dim int) error {
	var b strings.Builder
	for i := 0; i < len(rows); i += dim {
		for j := 0; j < dim; j++ {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(float64(rows[i+j]), 'g', -1, 32))
		}
		b.WriteByte('\n')
	}
	if path == "-" {
		_, err := io.WriteString(os.Stdout, b.String())
		return err
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	return nil
}
