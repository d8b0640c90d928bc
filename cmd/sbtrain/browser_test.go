package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The dashboard in a real browser: a local run of 3 trainers, its page in
// headless Chromium, one trainer SIGKILLed. The page must show the loss
// curve and the three live members, then that member gone, without a
// script error and without fetching anything from another origin.
func TestBrowserDashboard(t *testing.T) {
	skipUnderRace(t)
	chromium := findChromium(t)
	artifacts := os.Getenv("SBTRAIN_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	p := startProc(t, "local --workers 3 (dashboard)", dir, "local", "--config", writeBrowserConfig(t),
		"--workers", "3", "--store", "file://"+filepath.Join(dir, "store"), "--out", out,
		"--checkpoint-every", "100", "--quiet")
	p.logDirs = []string{filepath.Join(out, "logs")}
	_, ln := p.waitLine(0, time.Minute, "the dashboard's address", func(ln logLine) bool {
		return strings.HasPrefix(ln.text, "dashboard: ")
	})
	url := strings.TrimSpace(strings.TrimPrefix(ln.text, "dashboard: "))
	t.Logf("dashboard at %s", url)

	// Everything the browser does is bounded by this deadline; chromedp
	// ties the browser's life to the context of its first action, so no
	// shorter timeout may sit on that one.
	life, endLife := context.WithTimeout(context.Background(), 3*time.Minute)
	defer endLife()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1200, 800),
	)...)
	defer cancelAlloc()
	ctx, closeBrowser := chromedp.NewContext(allocCtx)
	defer closeBrowser()

	// Subscribed before the page loads, so nothing it does is missed.
	pageLog := watchPage(ctx, url)
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open the dashboard in %s: %v", chromium, err)
	}
	t.Logf("browser started and page loaded in %s", time.Since(start).Round(time.Millisecond))

	waitPage(t, ctx, p, time.Minute, "a loss curve, 3 live members and the first samples plot", `(() => {
		const live = document.querySelectorAll('tr[data-member-row][data-state="live"]').length;
		const points = +document.getElementById('loss-canvas').dataset.lossPoints;
		return live === 3 && points > 0 && !document.getElementById('samples-img').hidden;
	})()`)
	t.Logf("page state: %s", pageState(ctx))
	screenshot(t, ctx, filepath.Join(artifacts, "dashboard-3-live.png"))

	pid := childPID(t, p.cmd.Process.Pid, "--id", "trainer-1")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill trainer-1 (pid %d): %v", pid, err)
	}
	killed := time.Now()
	t.Logf("SIGKILLed trainer-1 (pid %d)", pid)
	waitPage(t, ctx, p, 30*time.Second, "trainer-1's row gone and 2 live rows", `(() => {
		const row = document.querySelector('tr[data-member-row][data-member-id="trainer-1"]');
		const live = document.querySelectorAll('tr[data-member-row][data-state="live"]').length;
		return row !== null && row.dataset.state === 'gone' && live === 2;
	})()`)
	t.Logf("trainer-1 shown gone %s after the kill; page state: %s", time.Since(killed).Round(time.Millisecond), pageState(ctx))
	screenshot(t, ctx, filepath.Join(artifacts, "dashboard-trainer-1-gone.png"))

	// Checked before the run ends: once the server stops, the page's
	// reconnection attempts are expected to fail.
	jsErrors, foreign := pageLog.result()
	for _, e := range jsErrors {
		t.Errorf("script error on the dashboard: %s", e)
	}
	for _, u := range foreign {
		t.Errorf("the dashboard fetched %s, outside its own origin", u)
	}
	closeBrowser()

	p.waitOK(procTimeout())
	mustExist(t, filepath.Join(out, "metrics.json"), filepath.Join(out, "samples.png"))
	t.Logf("run finished %s after the page opened", time.Since(start).Round(time.Millisecond))
}

// findChromium returns Debian's chromium, skipping the test without it
// (failing it on CI, which installs it).
func findChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	msg := "no chromium on PATH for the dashboard browser test (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// writeBrowserConfig writes the cluster run with longer phases: about 15 s
// for 3 trainers on two cores, time enough to watch it and kill one.
func writeBrowserConfig(t *testing.T) string {
	t.Helper()
	body := fmt.Sprintf(`name: %s
method: dsb
seed: 5
data: {name: moons}
prior: {name: gaussian, dim: 2}
model: {arch: mlp, hidden: [32, 32]}
train: {batch: 60, lr: 0.001, steps: 1000, ema_decay: 0.99}
dsb:
  steps: 10
  iterations: 2
  cache_size: 240
  cache_shards: %d
  cache_refresh: 20
eval: {samples: 200, trajectories: 8}
`, clusterRun, clusterShards)
	path := filepath.Join(t.TempDir(), "browser.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pageWatch records what the page does that the test forbids: uncaught
// script errors and requests to another origin.
type pageWatch struct {
	mu       sync.Mutex
	jsErrors []string
	foreign  []string
}

func watchPage(ctx context.Context, origin string) *pageWatch {
	w := &pageWatch{}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			w.add(&w.jsErrors, exceptionText(ev.ExceptionDetails))
		}
	}()
	go func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			u := ev.Request.URL
			if !strings.HasPrefix(u, origin) && !strings.HasPrefix(u, "data:") && !strings.HasPrefix(u, "blob:") {
				w.add(&w.foreign, u)
			}
		}
	}()
	return w
}

func (w *pageWatch) add(list *[]string, s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	*list = append(*list, s)
}

func (w *pageWatch) result() (jsErrors, foreign []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.jsErrors), slices.Clone(w.foreign)
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "(no details)"
	}
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s:%d:%d)", s, d.URL, d.LineNumber+1, d.ColumnNumber+1)
}

// waitPage waits until the JavaScript predicate holds on the page; the
// test fails after timeout or as soon as the local run exits.
func waitPage(t *testing.T, ctx context.Context, p *proc, timeout time.Duration, what, predicate string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-wctx.Done():
		}
	}()
	start := time.Now()
	_, err := chromedp.Run(wctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err == nil {
		t.Logf("dashboard shows %s after %s", what, time.Since(start).Round(time.Millisecond))
		return
	}
	if p.exited() {
		err = fmt.Errorf("%s exited (%v) first", p.name, p.err)
	}
	t.Fatalf("dashboard did not show %s within %s: %v\npage state: %s", what, timeout, err, pageState(ctx))
}

// pageState is what the page's DOM hooks say, for the test log.
func pageState(ctx context.Context) string {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Evaluate[string](`JSON.stringify({
		state: document.getElementById('app').dataset.runState,
		generation: document.getElementById('app').dataset.generation,
		updates: document.getElementById('app').dataset.updates,
		lossPoints: document.getElementById('loss-canvas').dataset.lossPoints,
		samples: !document.getElementById('samples-img').hidden,
		members: [...document.querySelectorAll('tr[data-member-row]')].map(r => r.dataset.memberId + '=' + r.dataset.state),
		conn: document.getElementById('conn').textContent,
	})`))
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return s
}

// screenshot saves the whole page as PNG.
func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d KB)", path, len(png)/1024)
}

// containsRun reports whether want occurs in args as consecutive elements.
func containsRun(args, want []string) bool {
	for i := 0; i+len(want) <= len(args); i++ {
		if slices.Equal(args[i:i+len(want)], want) {
			return true
		}
	}
	return false
}
