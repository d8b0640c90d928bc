package main

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbtrain/sbtrain/nn"
	"github.com/sbtrain/sbtrain/storage"
)

// quickImage is a quick image example as the cluster tests train it:
// under the cluster run's name, with some fields replaced to keep it short.
type quickImage struct {
	file    string
	replace map[string]string
	phases  int
	steps   int64    // per phase, after the replacements
	nets    []string // the sampling networks written to the output directory
	kill    bool     // also SIGKILL a 2-trainer run and resume it on 1
}

// quickImages are the four quick image examples. The interpolant is cut
// to 150 steps, still several checkpoints and long enough for a
// summation-order difference to show (any shows in the bytes at once);
// the DSB ones run whole.
var quickImages = []quickImage{
	{file: "mnist-si-quick.yaml", replace: map[string]string{"steps: 300,": "steps: 150,", "samples: 500": "samples: 200"},
		phases: 1, steps: 150, nets: []string{"velocity.safetensors"}, kill: true},
	{file: "mnist-dsb-quick.yaml", replace: map[string]string{"samples: 300": "samples: 200"},
		phases: 4, steps: 60, nets: []string{"backward.safetensors", "forward.safetensors"}},
	{file: "mnist-fashion-dsb-quick.yaml", replace: map[string]string{"samples: 300": "samples: 200"},
		phases: 2, steps: 60, nets: []string{"backward.safetensors", "forward.safetensors"}},
	{file: "mnist-fashion-dsbm-quick.yaml", replace: map[string]string{"samples: 300": "samples: 200"},
		phases: 3, steps: 40, nets: []string{"backward.safetensors", "forward.safetensors"}},
}

// write writes the example's config with the cluster run's name and the
// replacements.
func (q quickImage) write(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", q.file))
	if err != nil {
		t.Fatal(err)
	}
	y := string(b)
	repl := map[string]string{"name: " + strings.TrimSuffix(q.file, ".yaml"): "name: " + clusterRun}
	maps.Copy(repl, q.replace)
	for old, with := range repl {
		if !strings.Contains(y, old) {
			t.Fatalf("examples/%s has no %q to replace", q.file, old)
		}
		y = strings.Replace(y, old, with, 1)
	}
	path := filepath.Join(t.TempDir(), q.file)
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Each quick image example trains to the same bytes in one process
// (`sbtrain train`), on 1 trainer and on 2: the parameters, Adam moments
// and EMA of the final checkpoint, and the sampling networks written to
// the output directory. The interpolant's 2-trainer run, SIGKILLed after a
// few commits and resumed on 1 trainer, ends with the same bytes too.
func TestClusterQuickImageSameBytes(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("trains the quick image examples three times each")
	}
	if !strings.HasPrefix(nn.BLAS(), "OpenBLAS") {
		t.Skipf("the quick image examples are sized for OpenBLAS; this build uses %s", nn.BLAS())
	}
	for _, q := range quickImages {
		t.Run(q.file, func(t *testing.T) { quickImageSameBytes(t, q) })
	}
}

func quickImageSameBytes(t *testing.T, q quickImage) {
	cfg := q.write(t)
	dir := t.TempDir()
	trainOut := filepath.Join(dir, "train")
	var stderr bytes.Buffer
	if code := runMain([]string{"train", "--quiet", "--config", cfg, "--out", trainOut}, &stderr); code != 0 {
		if strings.Contains(stderr.String(), "install") && os.Getenv("CI") == "" {
			t.Skip(stderr.String())
		}
		t.Fatalf("train exits %d: %s", code, stderr.String())
	}
	sameNets := func(name, out string) {
		t.Helper()
		for _, n := range q.nets {
			if !bytes.Equal(readFile(t, filepath.Join(out, n)), readFile(t, filepath.Join(trainOut, n))) {
				t.Errorf("%s: %s differs from sbtrain train's", name, n)
			}
		}
	}
	final := func(storeDir string) finalState {
		t.Helper()
		return readFinalRun(t, openStore(t, "file://"+storeDir, storage.Options{}), clusterRun, q.phases, q.steps)
	}

	var one finalState
	for _, workers := range []int{1, 2} {
		name := "local --workers " + strconv.Itoa(workers)
		storeDir, out := filepath.Join(dir, "store"+strconv.Itoa(workers)), filepath.Join(dir, "out"+strconv.Itoa(workers))
		p := startProc(t, name, dir, localArgs(cfg, "file://"+storeDir, out, workers)...)
		p.logDirs = []string{filepath.Join(out, "logs")}
		p.waitOK(procTimeout())
		sameNets(name, out)
		if workers == 1 {
			one = final(storeDir)
		} else {
			requireSameBytes(t, final(storeDir), one)
		}
	}
	if !q.kill {
		return
	}

	storeDir, out := filepath.Join(dir, "store-killed"), filepath.Join(dir, "out-killed")
	p := startProc(t, "local --workers 2 (killed)", dir, localArgs(cfg, "file://"+storeDir, out, 2)...)
	p.logDirs = []string{filepath.Join(out, "logs")}
	id := waitLatest(t, p, storeDir, procTimeout(), func(id storage.ID) bool { return id.Step >= 2*int64(clusterCheckpointEvery()) })
	p.kill()
	if err := p.wait(15 * time.Second); err == nil || id.Phase == q.phases-1 && id.Step >= q.steps {
		t.Fatalf("the run finished before the kill at checkpoint %s: nothing left to resume", id)
	}
	t.Logf("SIGKILLed the 2-trainer run with checkpoint %s the latest", id)
	again := startProc(t, "local --workers 1 (resumed)", dir, localArgs(cfg, "file://"+storeDir, out, 1)...)
	again.logDirs = p.logDirs
	again.waitOK(procTimeout())
	requireSameBytes(t, final(storeDir), one)
	sameNets("resumed run", out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
