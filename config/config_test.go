package config

import (
	"slices"
	"strings"
	"testing"
)

const minimalDSB = `
method: dsb
data: {name: moons}
prior: {name: gaussian, dim: 2}
`

func TestDefaultIsValid(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != MethodDSB || c.Data.Name == "" {
		t.Fatalf("default config incomplete: %+v", c)
	}
}

func TestDefaultsFillZeroFields(t *testing.T) {
	c, err := Parse([]byte(minimalDSB), "test")
	if err != nil {
		t.Fatal(err)
	}
	if c.DSB.Steps != 20 || c.Train.Batch <= 0 || c.Model.Arch != "mlp" || len(c.Model.Hidden) == 0 || c.DSB.GammaMax != c.DSB.GammaMin {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

// Each bad input must name the field (or the problem) in a one-line error.
func TestBadInputNamesTheField(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown field", minimalDSB + "bogus: 1\n", "field bogus not found"},
		{"unknown nested field", minimalDSB + "train: {batchsize: 3}\n", "field batchsize not found"},
		{"wrong type", minimalDSB + "train: {batch: many}\n", "cannot unmarshal"},
		{"odd N", minimalDSB + "dsb: {steps: 21}\n", "dsb.steps: 21"},
		{"zero gamma", minimalDSB + "dsb: {gamma_min: 0}\n", "dsb.gamma_min: 0, want > 0"},
		{"negative gamma", minimalDSB + "dsb: {gamma_min: -0.1}\n", "dsb.gamma_min: -0.1"},
		{"gamma order", minimalDSB + "dsb: {gamma_min: 0.1, gamma_max: 0.05}\n", "dsb.gamma_max"},
		{"missing method", "data: {name: moons}\nprior: {name: gaussian}\n", "method: missing"},
		{"unknown method", strings.Replace(minimalDSB, "dsb", "gan", 1), `method: "gan"`},
		{"missing data", "method: si\nprior: {name: gaussian}\n", "data.name: missing"},
		{"points without path", "method: dsb\ndata: {name: points}\nprior: {name: gaussian}\n", "data.path: missing"},
		{"idx without labels", "method: dsb\ndata: {name: idx, path: a.idx}\nprior: {name: gaussian}\n", "data.labels: missing"},
		{"png without folder", "method: dsb\ndata: {name: png}\nprior: {name: gaussian}\n", "data.path: missing"},
		{"classes on a toy", "method: dsb\ndata: {name: moons}\nprior: {name: gaussian, classes: [1]}\n", "prior.classes: labels, test_path"},
		{"negative downscale", "method: dsb\ndata: {name: mnist, downscale: -2}\nprior: {name: gaussian}\n", "data.downscale: -2"},
		{"reference", minimalDSB + "dsb: {reference: vp}\n", "dsb.reference"},
		{"batch vs shards", minimalDSB + "train: {batch: 100}\n", "train.batch: 100 is not a multiple"},
		{"ema", minimalDSB + "train: {ema_decay: 1.5}\n", "train.ema_decay"},
		{"si sampler", "method: si\ndata: {name: moons}\nprior: {name: gaussian}\nsi: {sampler: leapfrog}\n", "si.sampler"},
		{"sde without denoiser", "method: si\ndata: {name: moons}\nprior: {name: gaussian}\nsi: {sampler: sde, gamma: sqrt}\n", "si.sampler: sde needs the score"},
		{"unet groups", minimalDSB + "model: {arch: unet, channels: [32, 60], image: [1, 28, 28]}\n", "model.channels[1]: 60 is not divisible by model.groups = 8"},
		{"unet image size", minimalDSB + "model: {arch: unet, channels: [16, 32, 32], image: [1, 30, 30]}\n", "model.image: 30x30 is not divisible by 2^(levels-1) = 4"},
		{"unet image rank", minimalDSB + "model: {arch: unet, image: [28, 28]}\n", "model.image: [28 28], want [C, H, W]"},
		{"unet activation", minimalDSB + "model: {arch: unet, activation: relu}\n", "model.activation: \"relu\": the unet uses silu"},
		{"unet hidden", minimalDSB + "model: {arch: unet, hidden: [64]}\n", "model.hidden: set for arch unet"},
		{"unet channel bound", minimalDSB + "model: {arch: unet, channels: [8, 0]}\n", "model.channels[1]: 0, want 1..4096"},
		{"unknown arch", minimalDSB + "model: {arch: resnet}\n", `model.arch: "resnet", want mlp, dsb2d or unet`},
		{"two documents", minimalDSB + "---\nmethod: si\n", "more than one YAML document"},
		{"empty", "", "empty file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "run.yaml")
			if err == nil {
				t.Fatalf("accepted, want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "run.yaml") {
				t.Fatalf("error %q does not name %q and the file", err, c.want)
			}
		})
	}
}

func TestHashCoversEveryField(t *testing.T) {
	a, err := Parse([]byte(minimalDSB), "a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse([]byte(minimalDSB), "b")
	if a.Hash() != b.Hash() {
		t.Fatal("equal configs hash differently")
	}
	b.Train.LR *= 2
	if a.Hash() == b.Hash() {
		t.Fatal("changing train.lr did not change the hash")
	}
}

func TestYAMLRoundTrips(t *testing.T) {
	a, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(a.YAML(), "encoded")
	if err != nil {
		t.Fatalf("re-decode own encoding: %v", err)
	}
	if a.Hash() != b.Hash() {
		t.Fatal("YAML round trip changed the config")
	}
}

func TestEncodedConfigOmitsUnsetDatasetFields(t *testing.T) {
	c, err := Parse([]byte(minimalDSB), "test")
	if err != nil {
		t.Fatal(err)
	}
	if y := string(c.YAML()); strings.Contains(y, " mean:") || strings.Contains(y, " jitter:") {
		t.Fatalf("unset dataset fields are written, so they would read back as set:\n%s", y)
	}
}

func TestUNetDefaultsAreUNetSmall(t *testing.T) {
	c, err := Parse([]byte(minimalDSB+"model: {arch: unet, image: [1, 28, 28]}\n"), "run.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := c.Model
	if !slices.Equal(m.Channels, []int{32, 64, 64}) || m.Groups != 8 || m.TimeEmbed != 32 || m.Activation != "silu" {
		t.Fatalf("unet defaults: channels %v, groups %d, time_embed %d, activation %q; want [32 64 64], 8, 32, silu",
			m.Channels, m.Groups, m.TimeEmbed, m.Activation)
	}
}
