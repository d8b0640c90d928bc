package eval

import (
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/png"
	"io"
	"math"
)

// ImageShape is C x H x W of images stored as rows of C*H*W values in
// [-1, 1], channel-major: the layout of dataset images and of generated
// samples of them.
type ImageShape [3]int

func (s ImageShape) dim() int { return s[0] * s[1] * s[2] }

func (s ImageShape) check(name string, rows []float32) (int, error) {
	if s[0] != 1 && s[0] != 3 {
		return 0, fmt.Errorf("%s: %d channels, want 1 (gray) or 3 (RGB)", name, s[0])
	}
	if s[1] < 1 || s[2] < 1 {
		return 0, fmt.Errorf("%s: image size %dx%d", name, s[2], s[1])
	}
	if len(rows) == 0 || len(rows)%s.dim() != 0 {
		return 0, fmt.Errorf("%s: %d values are not whole %dx%dx%d images", name, len(rows), s[0], s[1], s[2])
	}
	return len(rows) / s.dim(), nil
}

// zoom is the pixel repeat that makes a tile at least 56 pixels across.
func (s ImageShape) zoom() int { return max(1, (56+s[2]-1)/s[2]) }

// toByte maps [-1, 1] to 0..255; NaN is drawn black, out of range clipped.
func toByte(v float32) uint8 {
	x := (float64(v) + 1) * 127.5
	if !(x > 0) {
		return 0
	}
	if x >= 255 {
		return 255
	}
	return uint8(math.Round(x))
}

// canvas is a tiled picture: tiles of one image shape with a 1-pixel gap
// (zoomed) between them, on a dark gray background.
type canvas struct {
	shape      ImageShape
	zoom, gap  int
	rows, cols int
	img        *image.RGBA
}

func newCanvas(shape ImageShape, rows, cols int) *canvas {
	z := shape.zoom()
	c := &canvas{shape: shape, zoom: z, gap: max(1, z/2), rows: rows, cols: cols}
	w := cols*(shape[2]*z+c.gap) + c.gap
	h := rows*(shape[1]*z+c.gap) + c.gap
	c.img = image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(c.img.Pix); i += 4 {
		c.img.Pix[i], c.img.Pix[i+1], c.img.Pix[i+2], c.img.Pix[i+3] = 0x60, 0x60, 0x60, 0xff
	}
	return c
}

// put draws image px (C*H*W values) at tile (r, col).
func (c *canvas) put(r, col int, px []float32) {
	ch, h, w := c.shape[0], c.shape[1], c.shape[2]
	x0 := c.gap + col*(w*c.zoom+c.gap)
	y0 := c.gap + r*(h*c.zoom+c.gap)
	for y := range h {
		for x := range w {
			var rgb [3]uint8
			for k := range 3 {
				rgb[k] = toByte(px[min(k, ch-1)*h*w+y*w+x])
			}
			for dy := range c.zoom {
				off := c.img.PixOffset(x0+x*c.zoom, y0+y*c.zoom+dy)
				for dx := range c.zoom {
					p := c.img.Pix[off+4*dx:]
					p[0], p[1], p[2], p[3] = rgb[0], rgb[1], rgb[2], 0xff
				}
			}
		}
	}
}

// gridSide is the column count of a near-square grid of n tiles.
func gridSide(n int) int { return max(1, int(math.Ceil(math.Sqrt(float64(n))))) }

// ImageGrid draws images (rows of shape) as a PNG grid of cols columns (0:
// near square), in row order.
func ImageGrid(w io.Writer, images []float32, shape ImageShape, cols int) error {
	n, err := shape.check("image grid", images)
	if err != nil {
		return err
	}
	if cols <= 0 {
		cols = gridSide(n)
	}
	c := newCanvas(shape, (n+cols-1)/cols, cols)
	for i := range n {
		c.put(i/cols, i%cols, images[i*shape.dim():(i+1)*shape.dim()])
	}
	return png.Encode(w, c.img)
}

// PairsGrid draws source[i] beside generated[i] for every pair, pairs laid
// out in a near-square grid: transfer's before and after.
func PairsGrid(w io.Writer, source, generated []float32, shape ImageShape) error {
	n, err := shape.check("pairs grid: source", source)
	if err != nil {
		return err
	}
	if m, err := shape.check("pairs grid: generated", generated); err != nil {
		return err
	} else if m != n {
		return fmt.Errorf("pairs grid: %d sources, %d generated images", n, m)
	}
	pairs := gridSide(n)
	c := newCanvas(shape, (n+pairs-1)/pairs, 2*pairs)
	d := shape.dim()
	for i := range n {
		c.put(i/pairs, 2*(i%pairs), source[i*d:(i+1)*d])
		c.put(i/pairs, 2*(i%pairs)+1, generated[i*d:(i+1)*d])
	}
	return png.Encode(w, c.img)
}

// pickTimes is up to k indices spread evenly over 0..n-1, first and last
// included.
func pickTimes(n, k int) []int {
	if n <= k {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, k)
	for i := range out {
		out[i] = int(math.Round(float64(i) * float64(n-1) / float64(k-1)))
	}
	return out
}

// checkSteps checks that every time of steps holds the same number of
// whole images and returns that number.
func checkSteps(name string, steps [][]float32, shape ImageShape) (int, error) {
	if len(steps) == 0 {
		return 0, fmt.Errorf("%s: no times", name)
	}
	n, err := shape.check(name, steps[0])
	if err != nil {
		return 0, err
	}
	for k, s := range steps {
		if len(s) != len(steps[0]) {
			return 0, fmt.Errorf("%s: time %d has %d values, time 0 has %d", name, k, len(s), len(steps[0]))
		}
	}
	return n, nil
}

// TrajectoryStrip draws the first chains images of steps (steps[k] is every
// chain's state at the k-th time) as one row per chain, at about times
// columns spread from the first time (the prior) to the last (the data).
func TrajectoryStrip(w io.Writer, steps [][]float32, shape ImageShape, chains, times int) error {
	n, err := checkSteps("trajectory strip", steps, shape)
	if err != nil {
		return err
	}
	chains = min(max(1, chains), n)
	cols := pickTimes(len(steps), max(2, times))
	c := newCanvas(shape, chains, len(cols))
	d := shape.dim()
	for r := range chains {
		for j, k := range cols {
			c.put(r, j, steps[k][r*d:(r+1)*d])
		}
	}
	return png.Encode(w, c.img)
}

// ChainGIF animates the first chains images of steps as a grid, one frame
// per chosen time (at most frames, spread over the chain, the last held
// longer), with image/gif's paletted frames: 256 grays, or the web-safe
// palette for colour.
func ChainGIF(w io.Writer, steps [][]float32, shape ImageShape, chains, frames int) error {
	n, err := checkSteps("chain gif", steps, shape)
	if err != nil {
		return err
	}
	chains = min(max(1, chains), n)
	cols := gridSide(chains)
	pal := color.Palette(palette.WebSafe)
	if shape[0] == 1 {
		pal = make(color.Palette, 256)
		for i := range pal {
			pal[i] = color.Gray{Y: uint8(i)}
		}
	}
	out := &gif.GIF{}
	d := shape.dim()
	ks := pickTimes(len(steps), max(2, frames))
	for fi, k := range ks {
		c := newCanvas(shape, (chains+cols-1)/cols, cols)
		for i := range chains {
			c.put(i/cols, i%cols, steps[k][i*d:(i+1)*d])
		}
		frame := image.NewPaletted(c.img.Bounds(), pal)
		if shape[0] == 1 {
			for i := 0; i < len(c.img.Pix); i += 4 {
				frame.Pix[i/4] = c.img.Pix[i]
			}
		} else {
			for y := range c.img.Bounds().Dy() {
				for x := range c.img.Bounds().Dx() {
					frame.Set(x, y, c.img.At(x, y))
				}
			}
		}
		delay := 12 // hundredths of a second
		if fi == len(ks)-1 {
			delay = 150
		}
		out.Image = append(out.Image, frame)
		out.Delay = append(out.Delay, delay)
	}
	return gif.EncodeAll(w, out)
}
