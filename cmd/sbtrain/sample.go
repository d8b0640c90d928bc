package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
	fs := newFlagSet("sample", "--run DIR [--n N] [--seed S] [--sampler M] [--eps-schedule S] [--direction forward|reverse] [--out FILE.csv|FILE.npy] [--png FILE.png]")
	dir := fs.String("run", "", "run directory written by 'sbtrain train' (required)")
	n := fs.Int("n", 1000, "number of samples")
	seed := fs.Uint64("seed", 1, "seed of the prior draws and the sampling noise")
	out := fs.String("out", "-", "file for the samples: .npy (float32; images as N×C×H×W) or CSV, one per line; - is CSV on standard output")
	png := fs.String("png", "", "also draw the samples to this PNG file: a grid of images, or points over data")
	sampler := fs.String("sampler", "", "SI: euler, heun, rk4, dopri5, sde or sde-heun (default: the run's si.sampler)")
	epsSchedule := fs.String("eps-schedule", "", "SI SDE: constant, gamma or gamma2 (default: the run's si.eps_schedule)")
	eps := fs.Float64("eps", math.NaN(), "SI SDE: the diffusion scale (default: the run's si.epsilon)")
	direction := fs.String("direction", "forward", "SI: forward (prior to data) or reverse (data to prior)")
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
	if *direction != "forward" && *direction != "reverse" {
		return usagef("--direction %q, want forward or reverse", *direction)
	}
	siFlags := *sampler != "" || *epsSchedule != "" || !math.IsNaN(*eps) || *direction != "forward"
	if m, ok := model.(*experiment.SIModel); ok {
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
	} else if siFlags {
		return usagef("--sampler, --eps, --eps-schedule and --direction apply to si runs; run %s is %s", *dir, setup.Config.Method)
	}
	// Sampling streams are keyed by the user's seed, never by training's.
	start := dataset.Draw(from, *seed, rng.PurposeSample, []uint64{0}, 0, *n)
	gen, err := model.Generate(ctx, start, *seed, false)
	if err != nil {
		if siFlags {
			return usageError{err}
		}
		return err
	}
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
