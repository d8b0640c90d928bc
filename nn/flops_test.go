package nn

import "testing"

func TestStepFLOPs(t *testing.T) {
	cases := []struct {
		name  string
		spec  Spec
		batch int
		want  float64
	}{
		// net.0: [x (2), t (1)] -> 4, forward and weight gradient for both
		// sources; net.1: 4 -> 2, forward, weight and input gradient.
		{"mlp", Spec{Arch: ArchMLP, Dim: 2, Hidden: []int{4}}, 3,
			2 * 3 * (2*(2*4+1*4) + 3*(4*2))},
		// time_embed: 4 -> 8 -> 8 (input gradient into .0's output only);
		// inc 1 -> 2 on 2x2 (no input gradient); mid: conv1 and conv2
		// 2 -> 2 3x3, temb 8 -> 2; up.0: conv1 4 -> 2, conv2 2 -> 2, skip
		// 4 -> 2 1x1, temb; out_conv 2 -> 1. Forward, weight and input
		// gradient are each rows*cout*kdim multiply-adds.
		{"unet", Spec{Arch: ArchUNet, Image: [3]int{1, 2, 2}, Channels: []int{2}, Groups: 1, TimeEmbed: 4}, 1,
			2 * (2*4*8 + 3*8*8 + // time embedding
				2*4*2*9 + // inc
				3*4*2*18 + 3*4*2*18 + 3*8*2 + // mid
				3*4*2*36 + 3*4*2*18 + 3*4*2*4 + 3*8*2 + // up.0
				3*4*1*18)}, // out_conv
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := New(c.spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := n.StepFLOPs(c.batch); got != c.want {
				t.Fatalf("StepFLOPs(%d) = %v, want %v", c.batch, got, c.want)
			}
		})
	}
}

func TestParamCountMatchesNew(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		want int64 // 0: whatever New allocates
	}{
		{"mlp", Spec{Arch: ArchMLP, Dim: 5, Hidden: []int{256, 256}}, 0},
		{"dsb2d", Spec{Arch: ArchDSB2D, Dim: 2}, 0},
		{"unet-small", Spec{Arch: ArchUNet, Image: [3]int{1, 28, 28}, Channels: []int{32, 64, 64}}, 444833},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.spec.ParamCount()
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(c.spec, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got != int64(n.NumParams()) || (c.want != 0 && got != c.want) {
				t.Fatalf("ParamCount = %d, New allocates %d (want %d)", got, n.NumParams(), c.want)
			}
		})
	}
	if _, err := (Spec{Arch: "resnet", Dim: 2}).ParamCount(); err == nil {
		t.Fatal("ParamCount of an unknown arch: no error")
	}
}
