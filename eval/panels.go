package eval

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Panel figure sizes: loss and iteration panels are wide and short, one
// under the other; marginal panels are small squares side by side.
const (
	PanelWidth    = 8.0 // inches, each loss/iteration panel
	PanelHeight   = 2.6
	MarginalSide  = 2.6 // inches, each panel of PlotMarginals
	MaxPanels     = 16  // more would be unreadable at these sizes
	boundaryAlpha = 0x90
)

// LossPanel is one direction's training loss: its phases in training
// order, each over its own steps (X nil means 0, 1, 2, ...).
type LossPanel struct {
	Name   string
	Phases []Curve
}

// PlotLossPanels writes one small panel per direction, stacked. A panel lays
// its phases end to end on one step axis, draws each smoothed over its own
// steps (so no average mixes two phases) with the raw values faint behind,
// marks the phase boundaries with dashed lines and names each phase at its
// start. The y range follows the smoothed curves: a few raw spikes would
// otherwise flatten everything else.
func PlotLossPanels(w io.Writer, panels []LossPanel, title string) error {
	if len(panels) == 0 || len(panels) > MaxPanels {
		return fmt.Errorf("plot loss panels: %d panels, want 1..%d", len(panels), MaxPanels)
	}
	plots := make([]*plot.Plot, len(panels))
	for i, lp := range panels {
		if len(lp.Phases) == 0 {
			return fmt.Errorf("plot loss panels: panel %q has no phases", lp.Name)
		}
		name := lp.Name
		if i == 0 && title != "" {
			name = title + ": " + lp.Name
		}
		p := newPlot(name, "", "loss")
		if i == len(panels)-1 {
			p.X.Label.Text = "step (phases end to end)"
		}
		p.Title.TextStyle.Font.Size = vg.Points(11)
		p.X.Tick.Marker = niceTicks{}
		p.Y.Tick.Marker = niceTicks{}
		col := curveColors[i%len(curveColors)]
		offset := 0.0
		lo, hi := math.Inf(1), math.Inf(-1)
		var starts []float64
		for _, c := range lp.Phases {
			pts, err := curvePoints(c)
			if err != nil {
				return fmt.Errorf("plot loss panels: panel %q: %w", lp.Name, err)
			}
			shift := offset - pts[0].X
			for j := range pts {
				pts[j].X += shift
			}
			starts = append(starts, offset)
			offset = pts[len(pts)-1].X + 1
			smooth := pts
			if len(pts) > 50 {
				faint := col
				faint.A = 0x30
				if err := addLine(p, pts, faint, 0.5, false); err != nil {
					return fmt.Errorf("plot loss panels: panel %q: %w", lp.Name, err)
				}
				smooth = movingAverage(pts, max(3, len(pts)/25))
			}
			if err := addLine(p, smooth, col, 1.5, false); err != nil {
				return fmt.Errorf("plot loss panels: panel %q: %w", lp.Name, err)
			}
			for _, q := range smooth {
				lo, hi = math.Min(lo, q.Y), math.Max(hi, q.Y)
			}
		}
		pad := 0.15*(hi-lo) + 1e-9*math.Max(1, math.Abs(hi))
		p.Y.Min, p.Y.Max = lo-pad, hi+2*pad
		p.X.Min, p.X.Max = 0, offset
		if err := markPhases(p, lp.Phases, starts); err != nil {
			return fmt.Errorf("plot loss panels: panel %q: %w", lp.Name, err)
		}
		plots[i] = p
	}
	return renderColumn(w, plots, PanelWidth, PanelHeight)
}

// markPhases draws a dashed line at each phase start after the first and
// each phase's name just inside the top of its segment.
func markPhases(p *plot.Plot, phases []Curve, starts []float64) error {
	boundary := color.NRGBA{R: 0x55, G: 0x55, B: 0x55, A: boundaryAlpha}
	for k, x := range starts {
		if k > 0 {
			l, err := plotter.NewLine(plotter.XYs{{X: x, Y: p.Y.Min}, {X: x, Y: p.Y.Max}})
			if err != nil {
				return err
			}
			l.LineStyle.Color = boundary
			l.LineStyle.Width = vg.Points(0.8)
			l.LineStyle.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			p.Add(l)
		}
	}
	if len(phases) > 12 {
		return nil // names would overlap; the boundaries still show
	}
	labels, err := plotter.NewLabels(plotter.XYLabels{
		XYs:    phaseLabelPoints(starts, p.Y.Max-0.1*(p.Y.Max-p.Y.Min)),
		Labels: phaseNames(phases),
	})
	if err != nil {
		return err
	}
	for i := range labels.TextStyle {
		labels.TextStyle[i].Font.Size = vg.Points(8)
		labels.TextStyle[i].Color = color.Gray{Y: 0x44}
	}
	labels.Offset = vg.Point{X: vg.Points(3)}
	p.Add(labels)
	return nil
}

func phaseLabelPoints(starts []float64, y float64) plotter.XYs {
	pts := make(plotter.XYs, len(starts))
	for i, x := range starts {
		pts[i] = plotter.XY{X: x, Y: y}
	}
	return pts
}

func phaseNames(phases []Curve) []string {
	names := make([]string, len(phases))
	for i, c := range phases {
		names[i] = c.Name
	}
	return names
}

// IterationPanel is one figure per IPF iteration: each curve's X holds the
// iterations, and Floor (optional, same X) is drawn dashed as the level
// sampling noise alone reaches.
type IterationPanel struct {
	Title, YLabel string
	Curves        []Curve
	Floor         *Curve
}

// PlotIterations writes the panels one under the other, each with points on
// its lines so that a run of two iterations still reads.
func PlotIterations(w io.Writer, panels []IterationPanel, title string) error {
	if len(panels) == 0 || len(panels) > MaxPanels {
		return fmt.Errorf("plot iterations: %d panels, want 1..%d", len(panels), MaxPanels)
	}
	plots := make([]*plot.Plot, len(panels))
	for i, ip := range panels {
		if len(ip.Curves) == 0 {
			return fmt.Errorf("plot iterations: panel %q has no curves", ip.Title)
		}
		name := ip.Title
		if i == 0 && title != "" {
			name = title + ": " + ip.Title
		}
		p := newPlot(name, "", ip.YLabel)
		if i == len(panels)-1 {
			p.X.Label.Text = "iteration"
		}
		p.Title.TextStyle.Font.Size = vg.Points(11)
		p.Legend.Left = false
		p.X.Tick.Marker = integerTicks{}
		p.Y.Tick.Marker = niceTicks{}
		lo := math.Inf(1)
		for k, c := range ip.Curves {
			pts, err := curvePoints(c)
			if err != nil {
				return fmt.Errorf("plot iterations: panel %q: %w", ip.Title, err)
			}
			col := curveColors[k%len(curveColors)]
			l, s, err := plotter.NewLinePoints(pts)
			if err != nil {
				return fmt.Errorf("plot iterations: panel %q: %w", ip.Title, err)
			}
			l.LineStyle.Color, l.LineStyle.Width = col, vg.Points(1.5)
			s.GlyphStyle = draw.GlyphStyle{Color: col, Radius: vg.Points(2.5), Shape: draw.CircleGlyph{}}
			p.Add(l, s)
			p.Legend.Add(c.Name, l, s)
			for _, q := range pts {
				lo = math.Min(lo, q.Y)
			}
		}
		if ip.Floor != nil {
			pts, err := curvePoints(*ip.Floor)
			if err != nil {
				return fmt.Errorf("plot iterations: panel %q floor: %w", ip.Title, err)
			}
			if err := addLine(p, pts, color.NRGBA{R: 0x77, G: 0x77, B: 0x77, A: 0xff}, 1, true); err != nil {
				return fmt.Errorf("plot iterations: panel %q floor: %w", ip.Title, err)
			}
			p.Legend.Add(ip.Floor.Name, dashedGlyph{})
			for _, q := range pts {
				lo = math.Min(lo, q.Y)
			}
		}
		if lo >= 0 {
			p.Y.Min = 0 // distances and errors: the zero line is the goal
		}
		plots[i] = p
	}
	return renderColumn(w, plots, PanelWidth, PanelHeight)
}

// PlotMarginals writes a strip of square panels, the point cloud at each
// of a few times along a chain (labels name the times), all on one range so
// that spreading and moving read across the strip. Dimension above 2 shows
// coordinates 1-2. Reference, when given, is drawn faint behind the last
// panel (the data the chain ends at).
func PlotMarginals(w io.Writer, clouds []Cloud, labels []string, reference *Cloud, title string) error {
	if len(clouds) < 2 || len(clouds) > MaxPanels {
		return fmt.Errorf("plot marginals: %d clouds, want 2..%d", len(clouds), MaxPanels)
	}
	if len(labels) != len(clouds) {
		return fmt.Errorf("plot marginals: %d labels for %d clouds, want equal", len(labels), len(clouds))
	}
	sets := make([]plotter.XYs, 0, len(clouds)+1)
	for k, c := range clouds {
		if err := c.Check(labels[k]); err != nil {
			return fmt.Errorf("plot marginals: %w", err)
		}
		if c.Dim < 2 || c.Dim != clouds[0].Dim {
			return fmt.Errorf("plot marginals: %s has dimension %d, want %d (>= 2) like the first", labels[k], c.Dim, clouds[0].Dim)
		}
		sets = append(sets, xy(c))
	}
	var ref plotter.XYs
	if reference != nil {
		if err := reference.Check("reference"); err != nil {
			return fmt.Errorf("plot marginals: %w", err)
		}
		if reference.Dim != clouds[0].Dim {
			return fmt.Errorf("plot marginals: reference has dimension %d, clouds %d, want equal", reference.Dim, clouds[0].Dim)
		}
		ref = xy(*reference)
	}
	plots := make([]*plot.Plot, len(clouds))
	for k := range clouds {
		name := labels[k]
		if k == 0 && title != "" {
			// Short lines: a panel is narrow.
			name = title + "\n" + labels[k]
			if d := clouds[0].Dim; d > 2 {
				name = fmt.Sprintf("%s (x1, x2 of %d)\n%s", title, d, labels[k])
			}
		}
		p := newPlot(name, "", "")
		p.Title.TextStyle.Font.Size = vg.Points(10)
		squareRange(p, append([]plotter.XYs{ref}, sets...)...)
		if ref != nil && k == len(clouds)-1 {
			s, err := scatter(ref, dataColor, vg.Points(1))
			if err != nil {
				return fmt.Errorf("plot marginals: %w", err)
			}
			p.Add(s)
		}
		s, err := scatter(sets[k], generatedColor, vg.Points(1))
		if err != nil {
			return fmt.Errorf("plot marginals: %w", err)
		}
		p.Add(s)
		plots[k] = p
	}
	side := vg.Length(MarginalSide) * vg.Inch
	c := vgimg.NewWith(vgimg.UseWH(side*vg.Length(len(plots)), side), vgimg.UseDPI(PlotDPI))
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Points(4), PadTop: vg.Points(2), PadBottom: vg.Points(2)}
	grid := plot.Align([][]*plot.Plot{plots}, tiles, draw.New(c))
	for k, p := range plots {
		p.Draw(grid[0][k])
	}
	return writePNG(w, c)
}

// MarginalTimes picks about n evenly spaced indices of a chain of steps
// states, always the first and the last.
func MarginalTimes(steps, n int) []int {
	if steps < 1 || n < 1 {
		return nil
	}
	n = min(n, steps)
	if n == 1 {
		return []int{steps - 1}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = int(math.Round(float64(i) * float64(steps-1) / float64(n-1)))
	}
	return idx
}

func curvePoints(c Curve) (plotter.XYs, error) {
	if len(c.Y) == 0 {
		return nil, fmt.Errorf("curve %q is empty", c.Name)
	}
	if c.X != nil && len(c.X) != len(c.Y) {
		return nil, fmt.Errorf("curve %q has %d x values and %d y values, want equal", c.Name, len(c.X), len(c.Y))
	}
	pts := make(plotter.XYs, len(c.Y))
	for j, v := range c.Y {
		x := float64(j)
		if c.X != nil {
			x = c.X[j]
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("curve %q point %d is (%v, %v)", c.Name, j, x, v)
		}
		pts[j] = plotter.XY{X: x, Y: v}
	}
	return pts, nil
}

func addLine(p *plot.Plot, pts plotter.XYs, col color.Color, width float64, dashed bool) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.LineStyle.Color = col
	l.LineStyle.Width = vg.Points(width)
	if dashed {
		l.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l)
	return nil
}

// renderColumn stacks plots one under the other with their data areas
// aligned, each widthIn x heightIn.
func renderColumn(w io.Writer, plots []*plot.Plot, widthIn, heightIn float64) error {
	c := vgimg.NewWith(
		vgimg.UseWH(vg.Length(widthIn)*vg.Inch, vg.Length(heightIn*float64(len(plots)))*vg.Inch),
		vgimg.UseDPI(PlotDPI),
	)
	rows := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Points(4), PadTop: vg.Points(2), PadBottom: vg.Points(2), PadLeft: vg.Points(2), PadRight: vg.Points(8)}
	grid := plot.Align(rows, tiles, draw.New(c))
	for i, p := range plots {
		p.Draw(grid[i][0])
	}
	return writePNG(w, c)
}

func writePNG(w io.Writer, c *vgimg.Canvas) error {
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("write png: %w", err)
	}
	return nil
}

// integerTicks labels whole numbers only: iterations have no halves.
type integerTicks struct{}

func (integerTicks) Ticks(lo, hi float64) []plot.Tick {
	step := math.Max(1, math.Ceil((hi-lo)/10))
	var ticks []plot.Tick
	for v := math.Ceil(lo); v <= hi; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: fmt.Sprintf("%d", int(v))})
	}
	return ticks
}

// dashedGlyph is the legend entry of a floor line.
type dashedGlyph struct{}

func (dashedGlyph) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(draw.LineStyle{Color: color.Gray{Y: 0x77}, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}, c.Min.X, y, c.Max.X, y)
}

// DirectionOf is the direction a phase name ends with ("ipf 3 backward" is
// "backward"); a name of one word is its own direction.
func DirectionOf(phase string) string {
	f := strings.Fields(phase)
	if len(f) == 0 {
		return phase
	}
	return f[len(f)-1]
}
