package nn

import (
	"math"
	"sync"
	"testing"
)

// TestEvaluatorSharesParametersNotWorkspace: evaluators give the network's
// bytes, follow its parameters, and run concurrently with it (go test
// -race checks that they share nothing written).
func TestEvaluatorSharesParametersNotWorkspace(t *testing.T) {
	for _, spec := range []Spec{
		{Arch: ArchMLP, Dim: 3, Hidden: []int{32, 16}},
		{Arch: ArchDSB2D, Dim: 2},
	} {
		n, err := New(spec, 3)
		if err != nil {
			t.Fatal(err)
		}
		ts, x := randomBatch(5, 300, spec.Dim)
		want := make([]float32, len(x))
		if err := n.Forward(ts, x, want); err != nil {
			t.Fatal(err)
		}
		evs := []*Net{n, n.Evaluator(), n.Evaluator(), n.Evaluator()}
		outs := make([][]float32, len(evs))
		var wg sync.WaitGroup
		for i, e := range evs {
			outs[i] = make([]float32, len(x))
			wg.Go(func() {
				for range 3 {
					if err := e.Forward(ts, x, outs[i]); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		for i, out := range outs {
			for j := range out {
				if math.Float32bits(out[j]) != math.Float32bits(want[j]) {
					t.Fatalf("%s evaluator %d: value %d is %v, want %v", spec.Arch, i, j, out[j], want[j])
				}
			}
		}
		e := evs[1]
		if e.NumParams() != n.NumParams() || &e.Params()[0] != &n.Params()[0] {
			t.Fatalf("%s: evaluator does not read the network's parameter arena", spec.Arch)
		}
		if &e.Grads()[0] == &n.Grads()[0] {
			t.Fatalf("%s: evaluator shares the gradient arena", spec.Arch)
		}
		n.Params()[len(n.Params())-1] += 1 // the last output bias
		got := make([]float32, len(x))
		if err := e.Forward(ts, x, got); err != nil {
			t.Fatal(err)
		}
		if got[spec.Dim-1] == want[spec.Dim-1] {
			t.Errorf("%s: evaluator did not see a parameter change", spec.Arch)
		}
	}
}

func TestSetBLASThreads(t *testing.T) {
	before := BLASThreads()
	defer SetBLASThreads(before)
	SetBLASThreads(1)
	if n := BLASThreads(); n != 1 {
		t.Fatalf("BLASThreads after SetBLASThreads(1) = %d", n)
	}
	SetBLASThreads(0) // taken as 1
	if n := BLASThreads(); n != 1 {
		t.Fatalf("BLASThreads after SetBLASThreads(0) = %d", n)
	}
	SetBLASThreads(2)
	want := 2
	if blasBackend == "pure-Go (gonum)" {
		want = 1 // gonum runs on the caller's goroutine
	}
	if n := BLASThreads(); n != want {
		t.Fatalf("%s: BLASThreads after SetBLASThreads(2) = %d, want %d", blasBackend, n, want)
	}
}
