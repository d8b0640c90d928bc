package nn

import "testing"

func TestPreferredCore(t *testing.T) {
	cases := []struct {
		name, current, env string
		v                  cpuVector
		want               string
	}{
		{"generic kernels on avx-512", "Prescott", "", cpuVector{avx512: true, avx2: true}, "SkylakeX"},
		{"generic kernels on avx2", "Prescott", "", cpuVector{avx2: true}, "Haswell"},
		{"generic kernels, no wide vectors", "Prescott", "", cpuVector{}, ""},
		{"the user chose", "Prescott", "Prescott", cpuVector{avx512: true}, ""},
		{"OpenBLAS knew the CPU", "Haswell", "", cpuVector{avx512: true}, ""},
		{"pure-Go BLAS", "", "", cpuVector{avx512: true}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := preferredCore(c.current, c.env, c.v); got != c.want {
				t.Fatalf("preferredCore(%q, %q, %+v) = %q, want %q", c.current, c.env, c.v, got, c.want)
			}
		})
	}
}
