package eval

import (
	"bytes"
	"image/color"
	"image/gif"
	"image/png"
	"testing"
)

// solid is n images of shape, image i filled with the value vals[i%len(vals)].
func solid(n int, shape ImageShape, vals ...float32) []float32 {
	out := make([]float32, 0, n*shape.dim())
	for i := range n {
		for range shape.dim() {
			out = append(out, vals[i%len(vals)])
		}
	}
	return out
}

// tileCentre is the centre pixel of tile (r, c) of a canvas of shape.
func tileCentre(shape ImageShape, r, c int) (int, int) {
	z := shape.zoom()
	gap := max(1, z/2)
	return gap + c*(shape[2]*z+gap) + shape[2]*z/2, gap + r*(shape[1]*z+gap) + shape[1]*z/2
}

func gray(t *testing.T, b []byte, x, y int) uint8 {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r, _, _, _ := img.At(x, y).RGBA()
	return uint8(r >> 8)
}

func TestImageGridLaysOutTiles(t *testing.T) {
	shape := ImageShape{1, 14, 14}
	var b bytes.Buffer
	// 5 images: a 3x3 grid, row order, -1 black, 1 white, 0 mid-gray.
	if err := ImageGrid(&b, solid(5, shape, -1, 1, 0), shape, 0); err != nil {
		t.Fatal(err)
	}
	img, _ := png.Decode(bytes.NewReader(b.Bytes()))
	z := shape.zoom()
	if want := 3*(14*z+z/2) + z/2; img.Bounds().Dx() != want || img.Bounds().Dy() != 2*(14*z+z/2)+z/2 {
		t.Fatalf("grid is %v, want %d wide and 2 tile rows", img.Bounds(), want)
	}
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0xffff {
		t.Fatalf("background alpha %d, want opaque", a)
	}
	if x, y := tileCentre(shape, 1, 2); gray(t, b.Bytes(), x, y) != 0x60 {
		t.Fatalf("the empty sixth tile is %d, want the background 0x60", gray(t, b.Bytes(), x, y))
	}
	for i, want := range []uint8{0, 255, 128, 0, 255} {
		x, y := tileCentre(shape, i/3, i%3)
		if got := gray(t, b.Bytes(), x, y); got != want {
			t.Errorf("tile %d centre is %d, want %d", i, got, want)
		}
	}
}

func TestPairsStripGIF(t *testing.T) {
	shape := ImageShape{3, 4, 4}
	var b bytes.Buffer
	if err := PairsGrid(&b, solid(4, shape, -1), solid(4, shape, 1), shape); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ col, want int }{{0, 0}, {1, 255}, {2, 0}, {3, 255}} {
		x, y := tileCentre(shape, 1, c.col)
		if got := gray(t, b.Bytes(), x, y); int(got) != c.want {
			t.Errorf("pairs row 1 column %d is %d, want %d (source then result)", c.col, got, c.want)
		}
	}

	// 20 times of 3 chains; chain r at time k is (k/19)*2-1 + tiny r term.
	g := ImageShape{1, 4, 4}
	steps := make([][]float32, 20)
	for k := range steps {
		steps[k] = solid(3, g, float32(k)/19*2-1)
	}
	b.Reset()
	if err := TrajectoryStrip(&b, steps, g, 8, 8); err != nil {
		t.Fatal(err)
	}
	for j, want := range map[int]uint8{0: 0, 7: 255} {
		x, y := tileCentre(g, 2, j)
		if got := gray(t, b.Bytes(), x, y); got != want {
			t.Errorf("strip column %d is %d, want %d (prior first, data last)", j, got, want)
		}
	}
	b.Reset()
	if err := ChainGIF(&b, steps, g, 4, 10); err != nil {
		t.Fatal(err)
	}
	anim, err := gif.DecodeAll(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(anim.Image) != 10 {
		t.Fatalf("%d frames, want 10", len(anim.Image))
	}
	x, y := tileCentre(g, 0, 0)
	if c := color.GrayModel.Convert(anim.Image[9].At(x, y)).(color.Gray).Y; c != 255 {
		t.Errorf("last frame's chain is %d, want 255", c)
	}
}

func TestPicturesBadInput(t *testing.T) {
	var b bytes.Buffer
	for name, err := range map[string]error{
		"partial image": ImageGrid(&b, make([]float32, 17), ImageShape{1, 4, 4}, 0),
		"two channels":  ImageGrid(&b, make([]float32, 32), ImageShape{2, 4, 4}, 0),
		"pairs differ":  PairsGrid(&b, make([]float32, 32), make([]float32, 16), ImageShape{1, 4, 4}),
		"ragged steps":  TrajectoryStrip(&b, [][]float32{make([]float32, 16), make([]float32, 32)}, ImageShape{1, 4, 4}, 1, 8),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFrechetAndHistogram(t *testing.T) {
	x := Cloud{Data: []float32{0, 0, 1, 0, 0, 1, 1, 1}, Dim: 2}
	if d, err := FrechetDistance(x, x); err != nil || d > 1e-9 {
		t.Fatalf("distance of a cloud to itself %v, %v", d, err)
	}
	shifted := Cloud{Data: []float32{3, 0, 4, 0, 3, 1, 4, 1}, Dim: 2}
	if d, err := FrechetDistance(x, shifted); err != nil || d < 9-1e-6 || d > 9+1e-6 {
		t.Fatalf("distance to a copy shifted by 3: %v, %v; want 9 (squared)", d, err)
	}
	shares, lo, ent := ClassHistogram([]uint8{0, 0, 1, 1, 3, 9}, []int{0, 1, 3})
	if shares[0] != 2.0/6 || lo != 1.0/6 || ent <= 0.9 || ent >= 1 {
		t.Fatalf("shares %v min %v entropy %v", shares, lo, ent)
	}
	if _, lo, ent := ClassHistogram([]uint8{1, 1}, []int{0, 1}); lo != 0 || ent != 0 {
		t.Fatalf("one class: min %v entropy %v, want 0 0", lo, ent)
	}
}
