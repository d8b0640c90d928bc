package eval

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot sizes: clouds and trajectories are square so that distances look
// right; loss curves are wide. All are rendered at PlotDPI.
const (
	PlotDPI         = 100
	CloudPlotInches = 6   // PlotSamples and PlotTrajectories: 600 x 600 px
	LossPlotWidth   = 8   // PlotLoss: 800 x 500 px
	LossPlotHeight  = 5.0 //
	// MaxPlotPoints caps the points drawn per cloud (the first ones); more
	// only slow rendering down and hide each other.
	MaxPlotPoints = 20000
)

var (
	dataColor      = color.NRGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0x50} // blue
	generatedColor = color.NRGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0x50} // orange
	pathColor      = color.NRGBA{R: 0x44, G: 0x44, B: 0x44, A: 0x90}
	startColor     = color.NRGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0x50} // green
	endColor       = color.NRGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0x50} // red
	curveColors    = []color.NRGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
		{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
		{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff}, {R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	}
)

// opaque returns c with full alpha, for legend entries of faint clouds.
func opaque(c color.NRGBA) color.NRGBA { c.A = 0xff; return c }

// legendGlyph is a legend thumbnail: one large opaque dot, so the entry is
// readable even when the cloud's own markers are small and translucent.
type legendGlyph struct{ style draw.GlyphStyle }

func (g legendGlyph) Thumbnail(c *draw.Canvas) {
	c.DrawGlyph(g.style, c.Center())
}

func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 0xe0}
	grid.Horizontal.Color = color.Gray{Y: 0xe0}
	p.Add(grid)
	return p
}

// render draws p as a PNG of the given size in inches at PlotDPI.
func render(w io.Writer, p *plot.Plot, widthIn, heightIn float64) error {
	c := vgimg.NewWith(
		vgimg.UseWH(vg.Length(widthIn)*vg.Inch, vg.Length(heightIn)*vg.Inch),
		vgimg.UseDPI(PlotDPI),
	)
	p.Draw(draw.New(c))
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("write png: %w", err)
	}
	return nil
}

// xy returns the first two coordinates of up to MaxPlotPoints points.
func xy(c Cloud) plotter.XYs {
	n := min(c.Len(), MaxPlotPoints)
	pts := make(plotter.XYs, n)
	for i := range pts {
		r := c.Row(i)
		pts[i].X, pts[i].Y = float64(r[0]), float64(r[1])
	}
	return pts
}

func scatter(pts plotter.XYs, c color.NRGBA, radius vg.Length) (*plotter.Scatter, error) {
	s, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle = draw.GlyphStyle{Color: c, Radius: radius, Shape: draw.CircleGlyph{}}
	return s, nil
}

// squareRange sets equal x and y ranges covering all points with a 5%
// margin, so a circle looks like a circle on the square canvas.
func squareRange(p *plot.Plot, sets ...plotter.XYs) {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, pts := range sets {
		for _, q := range pts {
			xmin, xmax = math.Min(xmin, q.X), math.Max(xmax, q.X)
			ymin, ymax = math.Min(ymin, q.Y), math.Max(ymax, q.Y)
		}
	}
	half := math.Max(xmax-xmin, ymax-ymin)/2*1.05 + 1e-9
	cx, cy := (xmin+xmax)/2, (ymin+ymax)/2
	// Headroom at the top for the legend, kept square.
	head := 0.12 * half
	p.X.Min, p.X.Max = cx-half-head/2, cx+half+head/2
	p.Y.Min, p.Y.Max = cy-half, cy+half+head
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
}

// niceTicks labels 4 to 10 round values (1, 2 or 5 times a power of ten)
// and puts unlabelled minor ticks between them; labels are as short as the
// value allows (500, not 500.00).
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 4, 64)}}
	}
	raw := (hi - lo) / 6
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, f := range []float64{2, 5, 10} {
		if step >= raw {
			break
		}
		step = f * mag
	}
	var ticks []plot.Tick
	minor := step / 5
	for k := math.Ceil(lo / minor); k*minor <= hi; k++ {
		v := k * minor
		if math.Abs(v) < 1e-12*step {
			v = 0
		}
		t := plot.Tick{Value: v}
		if r := math.Round(v / step); math.Abs(v/step-r) < 1e-9 {
			t.Label = strconv.FormatFloat(r*step, 'g', 6, 64)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// logTicks labels every power of ten in range (and the 2s and 5s when the
// range spans at most three decades), with minor ticks at 2..9.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	few := last-first <= 3
	var ticks []plot.Tick
	for e := first; e <= last; e++ {
		base := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			v := m * base
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (few && (m == 2 || m == 5)) {
				t.Label = strconv.FormatFloat(v, 'g', 3, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

func coordTitle(title string, dim int) string {
	if dim > 2 {
		return fmt.Sprintf("%s (coordinates 1-2 of %d)", title, dim)
	}
	return title
}

func addCloud(p *plot.Plot, pts plotter.XYs, c color.NRGBA, label string) error {
	s, err := scatter(pts, c, vg.Points(1.2))
	if err != nil {
		return err
	}
	p.Add(s)
	p.Legend.Add(label, legendGlyph{draw.GlyphStyle{Color: opaque(c), Radius: vg.Points(3.5), Shape: draw.CircleGlyph{}}})
	return nil
}

// PlotSamples writes a PNG scatter of generated points over data points.
// Clouds of dimension above 2 show their first two coordinates, and the
// title says so. Clouds must have dimension >= 2.
func PlotSamples(w io.Writer, data, generated Cloud, title string) error {
	if err := data.Check("data"); err != nil {
		return fmt.Errorf("plot samples: %w", err)
	}
	if err := generated.Check("generated"); err != nil {
		return fmt.Errorf("plot samples: %w", err)
	}
	if data.Dim != generated.Dim {
		return fmt.Errorf("plot samples: data has dimension %d, generated %d, want equal", data.Dim, generated.Dim)
	}
	if data.Dim < 2 {
		return fmt.Errorf("plot samples: dimension %d, want >= 2", data.Dim)
	}
	p := newPlot(coordTitle(title, data.Dim), "x1", "x2")
	dpts, gpts := xy(data), xy(generated)
	squareRange(p, dpts, gpts)
	if err := addCloud(p, dpts, dataColor, fmt.Sprintf("data (%d)", data.Len())); err != nil {
		return fmt.Errorf("plot samples: %w", err)
	}
	if err := addCloud(p, gpts, generatedColor, fmt.Sprintf("generated (%d)", generated.Len())); err != nil {
		return fmt.Errorf("plot samples: %w", err)
	}
	return render(w, p, CloudPlotInches, CloudPlotInches)
}

// PlotTrajectories writes a PNG of particle paths: steps[k] holds every
// particle at time step k (all steps the same size and dimension), the
// first and last steps are drawn as clouds and the first paths particles as
// lines through all steps. Dimension above 2 shows coordinates 1-2.
func PlotTrajectories(w io.Writer, steps []Cloud, paths int, title string) error {
	if len(steps) < 2 {
		return fmt.Errorf("plot trajectories: %d time steps, want at least 2", len(steps))
	}
	if paths < 1 {
		return fmt.Errorf("plot trajectories: paths = %d, want >= 1", paths)
	}
	first := steps[0]
	for k, c := range steps {
		if err := c.Check(fmt.Sprintf("step %d", k)); err != nil {
			return fmt.Errorf("plot trajectories: %w", err)
		}
		if c.Dim != first.Dim || c.Len() != first.Len() {
			return fmt.Errorf("plot trajectories: step %d has %d points of dimension %d, step 0 has %d of dimension %d, want equal",
				k, c.Len(), c.Dim, first.Len(), first.Dim)
		}
	}
	if first.Dim < 2 {
		return fmt.Errorf("plot trajectories: dimension %d, want >= 2", first.Dim)
	}
	last := steps[len(steps)-1]
	p := newPlot(coordTitle(title, first.Dim), "x1", "x2")
	spts, epts := xy(first), xy(last)
	paths = min(paths, first.Len())
	lines := make([]plotter.XYs, paths)
	for i := range lines {
		lines[i] = make(plotter.XYs, len(steps))
		for k, c := range steps {
			r := c.Row(i)
			lines[i][k].X, lines[i][k].Y = float64(r[0]), float64(r[1])
		}
	}
	squareRange(p, append([]plotter.XYs{spts, epts}, lines...)...)
	if err := addCloud(p, spts, startColor, fmt.Sprintf("step 0 (%d)", first.Len())); err != nil {
		return fmt.Errorf("plot trajectories: %w", err)
	}
	if err := addCloud(p, epts, endColor, fmt.Sprintf("step %d (%d)", len(steps)-1, last.Len())); err != nil {
		return fmt.Errorf("plot trajectories: %w", err)
	}
	for i, pts := range lines {
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot trajectories: %w", err)
		}
		l.LineStyle.Color = pathColor
		l.LineStyle.Width = vg.Points(0.8)
		p.Add(l)
		// Ends in the legend's colours: drawn over the lines, they would
		// otherwise hide the clouds when every point has a path.
		for _, end := range []struct {
			at  plotter.XY
			col color.NRGBA
		}{{pts[0], startColor}, {pts[len(pts)-1], endColor}} {
			dot, err := scatter(plotter.XYs{end.at}, opaque(end.col), vg.Points(2.2))
			if err != nil {
				return fmt.Errorf("plot trajectories: %w", err)
			}
			p.Add(dot)
		}
		if i == 0 {
			p.Legend.Add(fmt.Sprintf("%d paths", paths), l)
		}
	}
	return render(w, p, CloudPlotInches, CloudPlotInches)
}

// Curve is one named loss curve. X holds the step of each value; nil means
// 0, 1, 2, ...
type Curve struct {
	Name string
	X    []float64
	Y    []float64
}

// PlotLoss writes a PNG of loss curves, one colour each. The y axis is
// logarithmic when every value is positive and they span more than a factor
// of 10 (SI losses can be negative, so this is decided per plot). A curve
// with more than 200 points is drawn faint, with its moving average (window
// of 2% of its length) on top.
func PlotLoss(w io.Writer, curves []Curve, title string) error {
	if err := plotCurves(w, curves, title, "step", "loss", true); err != nil {
		return fmt.Errorf("plot loss: %w", err)
	}
	return nil
}

// PlotLines writes a PNG of named curves on linear axes, styled as
// PlotLoss (long curves faint with a moving average on top): throughput
// or step time over a run, say.
func PlotLines(w io.Writer, curves []Curve, title, xLabel, yLabel string) error {
	if err := plotCurves(w, curves, title, xLabel, yLabel, false); err != nil {
		return fmt.Errorf("plot %s: %w", yLabel, err)
	}
	return nil
}

// plotCurves draws curves; with allowLog the y axis is logarithmic when
// every value is positive and they span more than a factor of 10.
func plotCurves(w io.Writer, curves []Curve, title, xLabel, yLabel string, allowLog bool) error {
	if len(curves) == 0 {
		return fmt.Errorf("no curves")
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, c := range curves {
		if len(c.Y) == 0 {
			return fmt.Errorf("curve %q is empty", c.Name)
		}
		if c.X != nil && len(c.X) != len(c.Y) {
			return fmt.Errorf("curve %q has %d x values and %d y values, want equal", c.Name, len(c.X), len(c.Y))
		}
		for i, v := range c.Y {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("curve %q value %d is %v", c.Name, i, v)
			}
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		for i, v := range c.X {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("curve %q x value %d is %v", c.Name, i, v)
			}
		}
	}
	logY := allowLog && lo > 0 && hi/lo > 10
	p := newPlot(title, xLabel, yLabel)
	p.Legend.Left = false
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
		p.Y.Label.Text = yLabel + " (log scale)"
	}
	for i, c := range curves {
		pts := make(plotter.XYs, len(c.Y))
		for j, v := range c.Y {
			pts[j].X, pts[j].Y = float64(j), v
			if c.X != nil {
				pts[j].X = c.X[j]
			}
		}
		col := curveColors[i%len(curveColors)]
		raw, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("curve %q: %w", c.Name, err)
		}
		raw.LineStyle.Color = col
		raw.LineStyle.Width = vg.Points(1.2)
		legend := raw
		if len(pts) > 200 {
			faint := col
			faint.A = 0x40
			raw.LineStyle.Color = faint
			raw.LineStyle.Width = vg.Points(0.6)
			smooth, err := plotter.NewLine(movingAverage(pts, max(3, len(pts)/50)))
			if err != nil {
				return fmt.Errorf("curve %q: %w", c.Name, err)
			}
			smooth.LineStyle.Color = col
			smooth.LineStyle.Width = vg.Points(1.6)
			p.Add(raw, smooth)
			legend = smooth
		} else {
			p.Add(raw)
		}
		p.Legend.Add(c.Name, legend)
	}
	return render(w, p, LossPlotWidth, LossPlotHeight)
}

// movingAverage is the centred running mean of the y values over window
// points (shrinking at the ends).
func movingAverage(pts plotter.XYs, window int) plotter.XYs {
	out := make(plotter.XYs, len(pts))
	prefix := make([]float64, len(pts)+1)
	for i, q := range pts {
		prefix[i+1] = prefix[i] + q.Y
	}
	for i := range pts {
		a, b := max(0, i-window/2), min(len(pts), i+window/2+1)
		out[i] = plotter.XY{X: pts[i].X, Y: (prefix[b] - prefix[a]) / float64(b-a)}
	}
	return out
}

// SavePNG writes a plot to path through write (for example a closure over
// PlotSamples), replacing the file only once the plot is complete.
func SavePNG(path string, write func(w io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save plot %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("save plot %s: %w", path, err)
	}
	if err := write(f); err != nil {
		return fmt.Errorf("save plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save plot %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save plot %s: %w", path, err)
	}
	return nil
}
