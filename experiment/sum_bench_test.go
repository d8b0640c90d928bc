package experiment

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbtrain/sbtrain/config"
	"github.com/sbtrain/sbtrain/internal/fixedsum"
	"github.com/sbtrain/sbtrain/internal/par"
	"github.com/sbtrain/sbtrain/method"
)

// stepBench is one optimiser step of a config's first phase in one
// process: "whole", the float32 share of every shard in one Gradient call
// as the sums were before they were made exact, and "shard-sum",
// method.ShardSum shard by shard in fixed point, as train and every
// replica now sum; both then Apply.
func stepBench(b *testing.B, yaml string) {
	cfg, err := config.Parse([]byte(yaml), "bench config")
	if err != nil {
		b.Fatal(err)
	}
	setup, err := Prepare(cfg)
	if err != nil {
		b.Fatal(err)
	}
	meth, err := setup.Method()
	if err != nil {
		b.Fatal(err)
	}
	st, err := meth.Start()
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Open(0); err != nil {
		b.Fatal(err)
	}
	all := make([]int, meth.Shards())
	for i := range all {
		all[i] = i
	}
	var shards []method.Shard
	if c := st.Cache(); c != nil {
		if shards, err = method.Build(context.Background(), c.Builders(1), c.Gen(0), all); err != nil {
			b.Fatal(err)
		}
	}
	defer par.SingleThreadBLAS()()
	g := st.GradLen()
	buf := make([]float32, g+method.LossSlots)
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			clear(buf)
			if err := st.Gradient(0, all, shards, buf); err != nil {
				b.Fatal(err)
			}
			if err := st.Apply(0, buf[:g]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("shard-sum", func(b *testing.B) {
		var sum method.ShardSum
		for b.Loop() {
			out, err := sum.Step(context.Background(), st, 0, meth.Shards(), all, shards, fixedsum.Alone{})
			if err != nil {
				b.Fatal(err)
			}
			if err := st.Apply(0, out[:g]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStepDefault is the embedded default config's step (dsb2d,
// 26,498 parameters, batch 512 from 8 shards of 64 rows).
func BenchmarkStepDefault(b *testing.B) {
	stepBench(b, string(config.DefaultYAML()))
}

// BenchmarkStepMLP256 is a larger net's step: the d = 5 Gaussian
// benchmark's MLP 256x256 (68,869 parameters), batch 512 from 8 shards.
func BenchmarkStepMLP256(b *testing.B) {
	y := strings.NewReplacer("model:\n  arch: dsb2d", "model: {arch: mlp, hidden: [256, 256], activation: silu}").Replace(string(config.DefaultYAML()))
	stepBench(b, y)
}

// BenchmarkStepImage is the MNIST interpolant's step (examples/mnist-si.yaml:
// unet 32, 64, 64 on 28x28, 444,833 parameters, batch 128 from 16 shards of
// 8 images, the unet's own chunk). It needs the MNIST module downloaded.
func BenchmarkStepImage(b *testing.B) {
	y, err := os.ReadFile(filepath.Join("..", "examples", "mnist-si.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	stepBench(b, string(y))
}
