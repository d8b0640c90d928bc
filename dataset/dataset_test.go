package dataset

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/sbtrain/sbtrain/rng"
)

// draw returns n samples of d as float64 rows.
func draw(t *testing.T, d Distribution, n int) [][]float64 {
	t.Helper()
	flat := Draw(d, 11, rng.PurposeBench, []uint64{3}, 0, n)
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = make([]float64, d.Dim())
		for j := range rows[i] {
			v := float64(flat[i*d.Dim()+j])
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s sample %d coordinate %d = %v", d.Name(), i, j, v)
			}
			rows[i][j] = v
		}
	}
	return rows
}

func mustNew(t *testing.T, s Spec) Distribution {
	t.Helper()
	d, err := New(s)
	if err != nil {
		t.Fatalf("New(%+v): %v", s, err)
	}
	return d
}

// The toy tests use 20000 samples: a frequency then has standard error at
// most 0.0035, a mean of unit-scale coordinates about 0.02, so the
// tolerances below are 4 to 5 standard errors.
const toyN = 20000

func TestToysShapeAndSupport(t *testing.T) {
	cases := []struct {
		name       string
		maxAbs     float64    // every |coordinate| is below this
		mean       [2]float64 // known mean
		meanTol    float64
		minRadius  float64 // every sample is at least this far from the origin
		radiusBand [2]float64
	}{
		{name: "8gaussians", maxAbs: 4.6, meanTol: 0.08, minRadius: 1.0},
		{name: "mixture", maxAbs: 7, meanTol: 0.1},
		{name: "moons", maxAbs: 4, mean: [2]float64{0, 0.3}, meanTol: 0.04},
		{name: "circles", maxAbs: 4.5, meanTol: 0.05},
		// t ~ U[1.5 pi, 4.5 pi]: E[t cos t]/5 = 6 pi/(15 pi) = 0.4, E[t sin t]/5 = 2/(15 pi)
		{name: "swissroll", maxAbs: 4.5, mean: [2]float64{0.4, 2 / (15 * math.Pi)}, meanTol: 0.05},
		{name: "scurve", maxAbs: 5, meanTol: 0.05},
		{name: "checkerboard", maxAbs: 4, meanTol: 0.07},
		{name: "pinwheel", maxAbs: 6, meanTol: 0.05},
		{name: "spirals", maxAbs: 4.5, meanTol: 0.06},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := mustNew(t, Spec{Name: c.name})
			if d.Dim() != 2 || d.Name() != c.name {
				t.Fatalf("Dim, Name = %d, %q; want 2, %q", d.Dim(), d.Name(), c.name)
			}
			var mean [2]float64
			for i, x := range draw(t, d, toyN) {
				for j := range 2 {
					if math.Abs(x[j]) >= c.maxAbs {
						t.Fatalf("sample %d = %v, want |x| < %v", i, x, c.maxAbs)
					}
					mean[j] += x[j] / toyN
				}
				if r := math.Hypot(x[0], x[1]); r < c.minRadius {
					t.Fatalf("sample %d = %v at radius %v, want >= %v", i, x, r, c.minRadius)
				}
			}
			for j := range 2 {
				if math.Abs(mean[j]-c.mean[j]) > c.meanTol {
					t.Errorf("mean = %v, want %v ± %v", mean, c.mean, c.meanTol)
				}
			}
		})
	}
}

// clusterFractions assigns each sample to its nearest centre and returns the
// fraction per centre and the largest distance to the assigned centre.
func clusterFractions(rows [][]float64, centers [][2]float64) ([]float64, float64) {
	frac := make([]float64, len(centers))
	worst := 0.0
	for _, x := range rows {
		best, bestD := 0, math.Inf(1)
		for k, c := range centers {
			if d := math.Hypot(x[0]-c[0], x[1]-c[1]); d < bestD {
				best, bestD = k, d
			}
		}
		frac[best] += 1 / float64(len(rows))
		worst = math.Max(worst, bestD)
	}
	return frac, worst
}

func TestMixturesHaveEqualClusters(t *testing.T) {
	eight := make([][2]float64, 8)
	for k := range 8 {
		s, c := math.Sincos(float64(k) * math.Pi / 4)
		eight[k] = [2]float64{4 / 1.414 * c, 4 / 1.414 * s}
	}
	var grid [][2]float64
	for _, y := range []float64{-4, 0, 4} {
		for _, x := range []float64{-4, 0, 4} {
			grid = append(grid, [2]float64{x, y})
		}
	}
	cases := []struct {
		name    string
		centers [][2]float64
		std     float64
	}{
		{"8gaussians", eight, 0.5 / 1.414},
		{"mixture", grid, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frac, worst := clusterFractions(draw(t, mustNew(t, Spec{Name: c.name}), toyN), c.centers)
			want := 1 / float64(len(c.centers))
			for k, f := range frac {
				if math.Abs(f-want) > 0.012 {
					t.Errorf("cluster %d at %v has fraction %.4f, want %.4f", k, c.centers[k], f, want)
				}
			}
			// 2D Gaussian radius exceeds 6 std with probability e^-18.
			if worst > 6*c.std {
				t.Errorf("a sample lies %v from its centre, want < %v", worst, 6*c.std)
			}
		})
	}
}

func TestCheckerboardIsUniformOnItsSquares(t *testing.T) {
	d := mustNew(t, Spec{Name: "checkerboard"})
	ld := d.(LogDensity)
	counts := map[[2]int]int{}
	for i, x := range draw(t, d, toyN) {
		if lp := ld.LogProb(x); lp != -math.Log(32) {
			t.Fatalf("sample %d = %v has log density %v, want -log 32", i, x, lp)
		}
		counts[[2]int{int(math.Floor(x[0] / 2)), int(math.Floor(x[1] / 2))}]++
	}
	if len(counts) != 8 {
		t.Fatalf("samples fall in %d squares, want 8: %v", len(counts), counts)
	}
	for sq, n := range counts {
		if (sq[0]+sq[1])%2 != 0 {
			t.Errorf("square %v is off the board", sq)
		}
		if f := float64(n) / toyN; math.Abs(f-0.125) > 0.012 {
			t.Errorf("square %v has fraction %.4f, want 0.125", sq, f)
		}
	}
	// Uniform within a square: the mean offset inside its square is 1 per axis.
	var off [2]float64
	for _, x := range draw(t, d, toyN) {
		off[0] += (x[0] - 2*math.Floor(x[0]/2)) / toyN
		off[1] += (x[1] - 2*math.Floor(x[1]/2)) / toyN
	}
	if math.Abs(off[0]-1) > 0.03 || math.Abs(off[1]-1) > 0.03 {
		t.Errorf("mean offset within squares = %v, want (1, 1)", off)
	}
}

func TestCheckerboardLogProb(t *testing.T) {
	cases := []struct {
		x     []float64
		scale float64
		want  float64
	}{
		{[]float64{1, 1}, 1, -3.4657359027997265},
		{[]float64{-1, 1}, 1, math.Inf(-1)},
		{[]float64{-3, -3}, 1, -math.Log(32)},
		{[]float64{3, -1}, 1, -math.Log(32)},
		{[]float64{4.5, 0.5}, 1, math.Inf(-1)},
		{[]float64{2, 2}, 2, -math.Log(32 * 4)},
		{[]float64{-2, 2}, 2, math.Inf(-1)},
	}
	for _, c := range cases {
		d := mustNew(t, Spec{Name: "checkerboard", Scale: c.scale}).(LogDensity)
		if got := d.LogProb(c.x); math.Abs(got-c.want) > 1e-12 && got != c.want {
			t.Errorf("scale %v LogProb(%v) = %v, want %v", c.scale, c.x, got, c.want)
		}
	}
}

// TestToyDensitiesIntegrateToOne integrates exp(LogProb) on a grid, which
// would catch a wrong normalising constant or a missing scale Jacobian.
func TestToyDensitiesIntegrateToOne(t *testing.T) {
	for _, s := range []Spec{
		{Name: "checkerboard"}, {Name: "checkerboard", Scale: 1.5},
		{Name: "8gaussians"}, {Name: "8gaussians", Noise: 0.8, Scale: 0.5},
		{Name: "mixture"}, {Name: "mixture", Scale: 2},
	} {
		ld, ok := mustNew(t, s).(LogDensity)
		if !ok {
			t.Fatalf("%+v does not implement LogDensity", s)
		}
		const h, lim = 0.04, 12.0
		var total float64
		for x := -lim + h/2; x < lim; x += h {
			for y := -lim + h/2; y < lim; y += h {
				total += math.Exp(ld.LogProb([]float64{x, y})) * h * h
			}
		}
		if math.Abs(total-1) > 0.01 {
			t.Errorf("%+v: density integrates to %v, want 1", s, total)
		}
	}
}

func TestScaleAndNoise(t *testing.T) {
	base := draw(t, mustNew(t, Spec{Name: "moons"}), 100)
	scaled := draw(t, mustNew(t, Spec{Name: "moons", Scale: 3}), 100)
	for i := range base {
		for j := range 2 {
			if math.Abs(scaled[i][j]-3*base[i][j]) > 1e-5*math.Max(1, math.Abs(scaled[i][j])) {
				t.Fatalf("scaled sample %d = %v, want 3 * %v", i, scaled[i], base[i])
			}
		}
	}
	// The circles' radius spread is 3*noise.
	spread := func(noise float64) float64 {
		var sum float64
		for _, x := range draw(t, mustNew(t, Spec{Name: "circles", Noise: noise}), 4000) {
			r := math.Hypot(x[0], x[1])
			sum += math.Min(math.Abs(r-3), math.Abs(r-1.5))
		}
		return sum / 4000
	}
	if lo, hi := spread(0.01), spread(0.2); !(hi > 10*lo) {
		t.Errorf("mean distance to the circles is %v at noise 0.01 and %v at 0.2, want it to grow with noise", lo, hi)
	}
}

func TestGaussianMoments(t *testing.T) {
	cov := [][]float64{{2, 0.6, -0.3}, {0.6, 1, 0.2}, {-0.3, 0.2, 0.5}}
	cases := []struct {
		spec     Spec
		wantMean []float64
		wantCov  [][]float64
	}{
		{Spec{Name: "gaussian", Dim: 3}, []float64{0, 0, 0}, [][]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}},
		{Spec{Name: "gaussian", Dim: 3, Mean: []float64{1.5}, Var: []float64{0.25}},
			[]float64{1.5, 1.5, 1.5}, [][]float64{{0.25, 0, 0}, {0, 0.25, 0}, {0, 0, 0.25}}},
		{Spec{Name: "gaussian", Dim: 3, Mean: []float64{1, -2, 3}, Var: []float64{0.5, 2, 1}},
			[]float64{1, -2, 3}, [][]float64{{0.5, 0, 0}, {0, 2, 0}, {0, 0, 1}}},
		{Spec{Name: "gaussian", Dim: 3, Mean: []float64{-1, 0, 1}, Cov: cov}, []float64{-1, 0, 1}, cov},
	}
	const n = 40000
	for _, c := range cases {
		t.Run(fmt.Sprint(c.spec.Mean, c.spec.Var, c.spec.Cov), func(t *testing.T) {
			d := mustNew(t, c.spec)
			g := d.(*Gaussian)
			for i := range 3 {
				if g.Mean()[i] != c.wantMean[i] {
					t.Errorf("Mean() = %v, want %v", g.Mean(), c.wantMean)
				}
				for j := range 3 {
					if math.Abs(g.Cov()[i][j]-c.wantCov[i][j]) > 1e-12 {
						t.Errorf("Cov() = %v, want %v", g.Cov(), c.wantCov)
					}
				}
			}
			rows := draw(t, d, n)
			mean := make([]float64, 3)
			for _, x := range rows {
				for i := range 3 {
					mean[i] += x[i] / n
				}
			}
			for i := range 3 {
				// standard error sqrt(var/n) <= 0.0071 for var <= 2
				if math.Abs(mean[i]-c.wantMean[i]) > 0.03 {
					t.Errorf("sample mean = %v, want %v", mean, c.wantMean)
				}
				for j := range 3 {
					var cij float64
					for _, x := range rows {
						cij += (x[i] - mean[i]) * (x[j] - mean[j]) / n
					}
					// standard error of a covariance entry <= sqrt(2*2*2/n) = 0.014
					if math.Abs(cij-c.wantCov[i][j]) > 0.06 {
						t.Errorf("sample cov[%d][%d] = %v, want %v", i, j, cij, c.wantCov[i][j])
					}
				}
			}
		})
	}
}

func TestGaussianLogProbClosedForm(t *testing.T) {
	x := []float64{0.3, -1.2, 2.0}
	t.Run("diagonal", func(t *testing.T) {
		mean, vars := []float64{1, -2, 3}, []float64{0.5, 2, 1}
		d := mustNew(t, Spec{Name: "gaussian", Dim: 3, Mean: mean, Var: vars}).(LogDensity)
		want := 0.0
		for i := range x {
			want += -0.5*math.Log(2*math.Pi*vars[i]) - (x[i]-mean[i])*(x[i]-mean[i])/(2*vars[i])
		}
		if got := d.LogProb(x); math.Abs(got-want) > 1e-12 {
			t.Errorf("LogProb = %v, want %v", got, want)
		}
	})
	t.Run("full", func(t *testing.T) {
		mean := []float64{-1, 0, 1}
		cov := [][]float64{{2, 0.6, -0.3}, {0.6, 1, 0.2}, {-0.3, 0.2, 0.5}}
		d := mustNew(t, Spec{Name: "gaussian", Dim: 3, Mean: mean, Cov: cov}).(LogDensity)
		// Independent route: explicit inverse and determinant.
		m := mat.NewDense(3, 3, nil)
		for i := range 3 {
			for j := range 3 {
				m.Set(i, j, cov[i][j])
			}
		}
		var inv mat.Dense
		if err := inv.Inverse(m); err != nil {
			t.Fatal(err)
		}
		r := mat.NewVecDense(3, []float64{x[0] - mean[0], x[1] - mean[1], x[2] - mean[2]})
		quad := mat.Inner(r, &inv, r)
		want := -0.5 * (3*math.Log(2*math.Pi) + math.Log(mat.Det(m)) + quad)
		if got := d.LogProb(x); math.Abs(got-want) > 1e-10 {
			t.Errorf("LogProb = %v, want %v", got, want)
		}
	})
}

func TestDrawIsOrderIndependent(t *testing.T) {
	for _, name := range []string{"gaussian", "8gaussians", "checkerboard", "pinwheel"} {
		s := Spec{Name: name}
		if name == "gaussian" {
			s = Spec{Name: name, Dim: 4, Cov: [][]float64{{1, .5, 0, 0}, {.5, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 2}}}
		}
		d := mustNew(t, s)
		ids := make([]uint64, 2, 8) // spare capacity would expose append aliasing
		ids[0], ids[1] = 4, 9
		all := Draw(d, 5, rng.PurposeData, ids, 0, 100)
		back := Draw(d, 5, rng.PurposeData, ids, 50, 50)
		front := Draw(d, 5, rng.PurposeData, ids, 0, 50)
		if got := append(front, back...); !bytes.Equal(f32bytes(got), f32bytes(all)) {
			t.Errorf("%s: [0,50)+[50,100) differs from [0,100)", name)
		}
		into := make([]float32, 30*d.Dim())
		DrawInto(into, d, 5, rng.PurposeData, ids, 70)
		if !bytes.Equal(f32bytes(into), f32bytes(all[70*d.Dim():])) {
			t.Errorf("%s: DrawInto at 70 differs from Draw", name)
		}
		if ids[0] != 4 || ids[1] != 9 || len(ids) != 2 {
			t.Errorf("%s: Draw changed its ids argument to %v", name, ids)
		}
		others := map[string][]float32{
			"seed":    Draw(d, 6, rng.PurposeData, ids, 0, 100),
			"purpose": Draw(d, 5, rng.PurposeHeldOut, ids, 0, 100),
			"ids":     Draw(d, 5, rng.PurposeData, []uint64{4, 10}, 0, 100),
			"no ids":  Draw(d, 5, rng.PurposeData, nil, 0, 100),
		}
		for what, o := range others {
			same := 0
			for i := range o {
				if o[i] == all[i] {
					same++
				}
			}
			// The checkerboard's coordinates share nothing across streams
			// either; a few coincidences are allowed for discrete toys.
			if same > len(o)/10 {
				t.Errorf("%s: changing the %s leaves %d of %d values equal", name, what, same, len(o))
			}
		}
	}
}

func f32bytes(v []float32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, v)
	return b.Bytes()
}

// writeNPY writes a .npy file per the NumPy format spec: magic, version,
// little-endian header length, a Python dict literal padded with spaces and
// ending in a newline so the data starts at a multiple of 64 bytes.
func writeNPY(t *testing.T, path string, major byte, descr string, fortran bool, shape string, payload []byte) {
	t.Helper()
	if err := os.WriteFile(path, npyImage(major, descr, fortran, shape, payload), 0o644); err != nil {
		t.Fatal(err)
	}
}

// npyImage is the bytes writeNPY writes.
func npyImage(major byte, descr string, fortran bool, shape string, payload []byte) []byte {
	order := "False"
	if fortran {
		order = "True"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr, order, shape)
	prefix := 10
	if major >= 2 {
		prefix = 12
	}
	pad := 64 - (prefix+len(dict)+1)%64
	header := dict + strings.Repeat(" ", pad%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY")
	b.WriteByte(major)
	b.WriteByte(0)
	if major >= 2 {
		binary.Write(&b, binary.LittleEndian, uint32(len(header)))
	} else {
		binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	}
	b.WriteString(header)
	b.Write(payload)
	return b.Bytes()
}

func leBytes(t *testing.T, v any) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var testPoints = [][]float64{{1.5, -2}, {0.25, 3}, {-7, 8.125}}

func TestPointsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	flat64 := []float64{1.5, -2, 0.25, 3, -7, 8.125}
	flat32 := make([]float32, len(flat64))
	for i, v := range flat64 {
		flat32[i] = float32(v)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	npy := func(name string, major byte, descr string, payload []byte) string {
		p := filepath.Join(dir, name)
		writeNPY(t, p, major, descr, false, "(3, 2)", payload)
		return p
	}
	files := map[string]string{
		"csv with header": write("h.csv", "x, y\n1.5, -2\n0.25,3\n\n-7,8.125\n"),
		"csv bare":        write("b.csv", "1.5,-2\n0.25,3\n-7,8.125"),
		"npy f8":          npy("f8.npy", 1, "<f8", leBytes(t, flat64)),
		"npy f4":          npy("f4.npy", 1, "<f4", leBytes(t, flat32)),
		"npy v2 f8":       npy("v2.npy", 2, "<f8", leBytes(t, flat64)),
	}
	for what, path := range files {
		t.Run(what, func(t *testing.T) {
			d := mustNew(t, Spec{Name: "points", Path: path})
			p := d.(*Points)
			if p.Dim() != 2 || p.Len() != 3 {
				t.Fatalf("Dim, Len = %d, %d; want 2, 3", p.Dim(), p.Len())
			}
			for i, want := range testPoints {
				for j := range want {
					if got := p.data[i*2+j]; got != want[j] {
						t.Errorf("point %d = %v, want %v", i, p.data[i*2:i*2+2], want)
					}
				}
			}
			seen := map[[2]float64]int{}
			for _, x := range draw(t, d, 600) {
				seen[[2]float64{x[0], x[1]}]++
			}
			if len(seen) != 3 {
				t.Fatalf("samples take %d distinct values, want the 3 stored points: %v", len(seen), seen)
			}
			for _, want := range testPoints {
				if n := seen[[2]float64{want[0], want[1]}]; n < 150 {
					t.Errorf("point %v drawn %d of 600 times, want about 200", want, n)
				}
			}
		})
	}
	t.Run("jitter", func(t *testing.T) {
		d := mustNew(t, Spec{Name: "points", Path: files["csv bare"], Jitter: 0.1})
		var sq float64
		for _, x := range draw(t, d, 3000) {
			best := math.Inf(1)
			for _, p := range testPoints {
				best = math.Min(best, (x[0]-p[0])*(x[0]-p[0])+(x[1]-p[1])*(x[1]-p[1]))
			}
			sq += best / 3000
		}
		// E|jitter|^2 = 2 * 0.1^2 = 0.02
		if math.Abs(sq-0.02) > 0.003 {
			t.Errorf("mean squared jitter = %v, want 0.02", sq)
		}
	})
}

func TestBadSpecs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	npy := func(name, descr string, fortran bool, shape string, payload []byte) string {
		p := filepath.Join(dir, name)
		writeNPY(t, p, 1, descr, fortran, shape, payload)
		return p
	}
	six := leBytes(t, []float64{1, 2, 3, 4, 5, 6})
	nan := leBytes(t, []float64{1, 2, math.NaN(), 4, 5, 6})
	badMagic := write("magic.npy", "NUMPY\x01\x00 not really")
	missing := filepath.Join(dir, "nope.csv")
	cases := []struct {
		spec Spec
		want []string // substrings of the error
	}{
		{Spec{}, []string{"name is empty"}},
		{Spec{Name: "banana"}, []string{`unknown name "banana"`, "checkerboard"}},
		{Spec{Name: "gaussian"}, []string{`dataset "gaussian"`, "dim = 0"}},
		{Spec{Name: "gaussian", Dim: 3, Var: []float64{1, 2, -1}}, []string{`dataset "gaussian": var[2] = -1, want > 0`}},
		{Spec{Name: "gaussian", Dim: 3, Var: []float64{1, 0, 1}}, []string{"var[1] = 0"}},
		{Spec{Name: "gaussian", Dim: 3, Mean: []float64{1, 2}}, []string{"mean has 2 entries, want 1 or dim = 3"}},
		{Spec{Name: "gaussian", Dim: 2, Mean: []float64{math.NaN()}}, []string{"mean[0] = NaN"}},
		{Spec{Name: "gaussian", Dim: 2, Var: []float64{1}, Cov: [][]float64{{1, 0}, {0, 1}}}, []string{"var and cov are both set"}},
		{Spec{Name: "gaussian", Dim: 2, Cov: [][]float64{{1, 2}, {2, 1}}}, []string{"cov is not positive definite"}},
		{Spec{Name: "gaussian", Dim: 2, Cov: [][]float64{{1, 0.5}, {0.4, 1}}}, []string{"cov[0][1] = 0.5 but cov[1][0] = 0.4", "symmetric"}},
		{Spec{Name: "gaussian", Dim: 2, Cov: [][]float64{{1, 0}}}, []string{"cov has 1 rows, want dim = 2"}},
		{Spec{Name: "gaussian", Dim: 2, Cov: [][]float64{{1, 0}, {0}}}, []string{"cov[1] has 1 entries"}},
		{Spec{Name: "gaussian", Dim: 2, Scale: 2}, []string{"scale is set but does not apply"}},
		{Spec{Name: "moons", Dim: 3}, []string{`dataset "moons": dim = 3, want 2`}},
		{Spec{Name: "moons", Noise: -1}, []string{"noise = -1"}},
		{Spec{Name: "moons", Scale: -2}, []string{"scale = -2"}},
		{Spec{Name: "checkerboard", Noise: 0.1}, []string{"checkerboard has no noise parameter"}},
		{Spec{Name: "swissroll", Mean: []float64{1}}, []string{"mean is set but does not apply"}},
		{Spec{Name: "points"}, []string{`dataset "points": path is empty`}},
		{Spec{Name: "points", Path: "x.csv", Jitter: -1}, []string{"jitter = -1"}},
		{Spec{Name: "points", Path: missing}, []string{"nope.csv", "no such file"}},
		{Spec{Name: "points", Path: write("empty.csv", "")}, []string{"empty.csv", "no points"}},
		{Spec{Name: "points", Path: write("header.csv", "x,y\n")}, []string{"header.csv", "no points"}},
		{Spec{Name: "points", Path: write("ragged.csv", "1,2\n3,4\n5,6,7\n")}, []string{"ragged.csv: line 3 has 3 fields, want 2"}},
		{Spec{Name: "points", Path: write("word.csv", "x,y\n1,2\n3,abc\n")}, []string{"word.csv: line 3 field 2", `"abc" is not a number`}},
		{Spec{Name: "points", Path: write("mixed.csv", "x,2\n")}, []string{"mixed.csv: line 1 field 1"}},
		{Spec{Name: "points", Path: write("nan.csv", "1,2\nNaN,4\n")}, []string{"nan.csv: line 2 field 1", "finite"}},
		{Spec{Name: "points", Path: write("inf.csv", "1,+Inf\n")}, []string{"inf.csv: line 1 field 2", "finite"}},
		{Spec{Name: "points", Dim: 3, Path: write("ok.csv", "1,2\n")}, []string{"ok.csv has dimension 2, but dim = 3"}},
		{Spec{Name: "points", Path: badMagic}, []string{"magic.npy", "bad magic"}},
		{Spec{Name: "points", Path: npy("fortran.npy", "<f8", true, "(3, 2)", six)}, []string{"fortran.npy", "fortran_order = True"}},
		{Spec{Name: "points", Path: npy("int.npy", "<i8", false, "(3, 2)", six)}, []string{"int.npy", `descr "<i8" is not supported`}},
		{Spec{Name: "points", Path: npy("flat.npy", "<f8", false, "(6,)", six)}, []string{"flat.npy", "1-D, want 2-D"}},
		{Spec{Name: "points", Path: npy("short.npy", "<f8", false, "(4, 2)", six)}, []string{"short.npy", "data is 48 bytes, want 64"}},
		{Spec{Name: "points", Path: npy("zero.npy", "<f8", false, "(0, 2)", nil)}, []string{"zero.npy", "no points"}},
		{Spec{Name: "points", Path: npy("nan.npy", "<f8", false, "(3, 2)", nan)}, []string{"nan.npy", "row 1 column 0 is NaN"}},
		{Spec{Name: "points", Path: npy("wrongdim.npy", "<f8", false, "(2, 3)", six), Dim: 2}, []string{"wrongdim.npy has dimension 3, but dim = 2"}},
	}
	for _, c := range cases {
		_, err := New(c.spec)
		if err == nil {
			t.Errorf("New(%+v) succeeded, want an error containing %q", c.spec, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %q, want it to contain %q", c.spec, err, w)
			}
		}
	}
}

func TestNamesAllConstruct(t *testing.T) {
	names := Names()
	if len(names) != 15 {
		t.Errorf("Names() = %v, want 15 names", names)
	}
	for _, name := range names {
		s := Spec{Name: name}
		switch name {
		case "gaussian":
			s.Dim = 2
		case "points", "idx", "png":
			continue // needs a file; covered by TestPointsRoundTrip and images_test.go
		}
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%q) with defaults: %v", name, err)
		}
	}
}

func BenchmarkDraw(b *testing.B) {
	for _, s := range []Spec{{Name: "8gaussians"}, {Name: "gaussian", Dim: 50}} {
		d, err := New(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.Name, func(b *testing.B) {
			for b.Loop() {
				Draw(d, 1, rng.PurposeBench, nil, 0, 10000)
			}
		})
	}
}

// An array of more than two axes is points whose values are the rest of
// the axes in C order: N images of C×H×W are N rows of C*H*W.
func TestReadRowsOfImages(t *testing.T) {
	dir := t.TempDir()
	vals := make([]float32, 2*1*2*3)
	var payload bytes.Buffer
	for i := range vals {
		vals[i] = float32(i) - 2.5
		binary.Write(&payload, binary.LittleEndian, vals[i])
	}
	cases := []struct {
		name, shape string
		dim         int
		err         string
	}{
		{"images.npy", "(2, 1, 2, 3)", 6, ""},
		{"points.npy", "(4, 3)", 3, ""},
		{"short.npy", "(3, 1, 2, 3)", 0, "want 72 for shape (3, 1, 2, 3)"},
		{"empty.npy", "(2, 0, 3)", 0, "holds no points"},
		{"huge.npy", "(2, 4611686018427387904, 4)", 0, "too few for shape"},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, npyImage(1, "<f4", false, c.shape, payload.Bytes()), 0o644); err != nil {
			t.Fatal(err)
		}
		rows, dim, err := ReadRows(path)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.name) {
				t.Errorf("%s: error %v, want one naming the file and %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || dim != c.dim || !slices.Equal(rows, vals) {
			t.Errorf("%s: %d rows of dim %d (%v), want %v of dim %d", c.name, len(rows)/max(dim, 1), dim, err, vals, c.dim)
		}
	}
}
