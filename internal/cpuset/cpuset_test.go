package cpuset

import (
	"slices"
	"strings"
	"testing"
)

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		name string
		all  []int
		i, n int
		want []int
	}{
		{"one worker takes all", []int{0, 1, 2, 3}, 0, 1, []int{0, 1, 2, 3}},
		{"blocks of two", []int{0, 1, 2, 3}, 1, 2, []int{2, 3}},
		{"a CPU each", []int{0, 1}, 1, 2, []int{1}},
		{"uneven split covers all", []int{0, 1, 2}, 1, 2, []int{1, 2}},
		{"uneven split, first block", []int{0, 1, 2, 3, 4}, 0, 3, []int{0}},
		{"uneven split, last block", []int{0, 1, 2, 3, 4}, 2, 3, []int{3, 4}},
		{"more workers than CPUs alternate", []int{0, 1}, 2, 4, []int{0}},
		{"neighbours differ", []int{0, 1}, 3, 4, []int{1}},
		{"sparse allowed set", []int{2, 5}, 1, 3, []int{5}},
		{"rank out of range", []int{0, 1}, 2, 2, nil},
		{"no CPUs", nil, 0, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Share(tc.all, tc.i, tc.n); !slices.Equal(got, tc.want) {
				t.Fatalf("Share(%v, %d, %d) = %v, want %v", tc.all, tc.i, tc.n, got, tc.want)
			}
		})
	}
}

func TestShareDoesNotAlias(t *testing.T) {
	all := []int{0, 1, 2, 3}
	Share(all, 0, 2)[0] = 9
	if all[0] != 0 {
		t.Fatalf("Share returned a slice of its input: all became %v", all)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in, canon string
		cpus      []int
	}{
		{"0", "0", []int{0}},
		{"0-3", "0-3", []int{0, 1, 2, 3}},
		{"3,1,2", "1-3", []int{1, 2, 3}},
		{"0-1, 1-2,7", "0-2,7", []int{0, 1, 2, 7}},
		{"5,9-10", "5,9-10", []int{5, 9, 10}},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if !slices.Equal(got, tc.cpus) || Format(got) != tc.canon {
			t.Fatalf("Parse(%q) = %v formatted %q, want %v formatted %q", tc.in, got, Format(got), tc.cpus, tc.canon)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "a", "-1", "3-1", "1-", "0,,1", "1024", "0-2000", "1.5"} {
		if cpus, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, cpus)
		} else if !strings.Contains(err.Error(), "cpu list") {
			t.Errorf("Parse(%q): error %q does not name the cpu list", in, err)
		}
	}
}
