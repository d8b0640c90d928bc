package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/storage"
)

// writeMetrics stores records as run's metrics.jsonl, split over two
// chunks as a coordinator restart leaves it.
func writeMetrics(t *testing.T, store storage.Store, run string, recs []coordinator.MetricsRecord) {
	t.Helper()
	half := len(recs) / 2
	for i, part := range [][]coordinator.MetricsRecord{recs[:half], recs[half:]} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for _, r := range part {
			if err := enc.Encode(r); err != nil {
				t.Fatal(err)
			}
		}
		buf.WriteString(`{"truncated` + "\n") // a cut-off last line is skipped
		key := coordinator.MetricsPrefix(run) + []string{"00000001.jsonl", "00000002.jsonl"}[i]
		if err := store.Put(context.Background(), key, &buf, int64(buf.Len())); err != nil {
			t.Fatal(err)
		}
	}
}

func metricsFixture() []coordinator.MetricsRecord {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	recs := []coordinator.MetricsRecord{{Time: t0, Kind: coordinator.RecordRun, Run: "r", Method: "dsb",
		PhaseNames: []string{"ipf 1 backward", "ipf 1 forward"}, StepsPerPhase: 100}}
	for s := int64(5); s <= 200; s += 5 {
		phase, step := 0, s
		if s > 100 {
			phase, step = 1, s-100
		}
		for _, id := range []string{"t0", "t1"} {
			loss := 1 / float64(s)
			recs = append(recs, coordinator.MetricsRecord{Time: t0.Add(time.Duration(s) * 100 * time.Millisecond),
				Kind: coordinator.RecordProgress, Trainer: id, Phase: phase, Step: step, Loss: &loss,
				SamplesPerSec: 900 + float64(s), Steps: 5, StepSeconds: 0.05})
		}
		if s%50 == 0 {
			recs = append(recs, coordinator.MetricsRecord{Time: t0.Add(time.Duration(s) * 100 * time.Millisecond),
				Kind: coordinator.RecordCheckpoint, Checkpoint: "x", Phase: phase, Step: step, Bytes: 100})
		}
	}
	return recs
}

func TestLossAndThroughputCurves(t *testing.T) {
	recs := metricsFixture()
	losses, phases := lossCurves(recs)
	if phases != 2 || len(losses) != 2 {
		t.Fatalf("%d loss curves over %d phases, want 2", len(losses), phases)
	}
	for i, want := range []string{"ipf 1 backward", "ipf 1 forward"} {
		c := losses[i]
		// Both trainers report each step: one point per step.
		if c.Name != want || len(c.X) != 20 || c.X[0] != 5 || c.X[19] != 100 {
			t.Errorf("curve %d: %s with %d points from %v", i, c.Name, len(c.X), c.X)
		}
	}
	rates := throughputCurves(recs)
	if len(rates) != 2 || rates[0].Name != "t0" || rates[1].Name != "t1" || len(rates[0].X) != 40 || rates[0].X[0] != 0.5 {
		t.Fatalf("throughput curves %+v", rates)
	}
}

// `sbtrain plot` reads a run's metrics.jsonl from a file store and writes
// loss.png and throughput.png.
func TestPlotCommand(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file://" + filepath.Join(dir, "store")
	store, err := storage.Open(context.Background(), storeURL, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeMetrics(t, store, "r", metricsFixture())
	out := filepath.Join(dir, "plots")
	var stderr bytes.Buffer
	if code := runMain([]string{"plot", "--store", storeURL, "--run", "r", "--out", out}, &stderr); code != 0 {
		t.Fatalf("plot exits %d: %s", code, stderr.String())
	}
	for _, name := range []string{"loss.png", throughputPlot} {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 200 {
			t.Errorf("%s is %v", name, b)
		}
	}
	// A run without metrics is a usage error naming where they would be.
	stderr.Reset()
	if code := runMain([]string{"plot", "--store", storeURL, "--run", "other", "--out", out}, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "runs/other/metrics/") {
		t.Fatalf("plot of a run without metrics: exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	if code := runMain([]string{"plot", "--store", storeURL}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--run is required") {
		t.Fatalf("plot without --run: exit %d: %s", code, stderr.String())
	}
}
