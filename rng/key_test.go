package rng

import "testing"

// newByHand is New as first written, one id at a time: Key must not change
// a single stream that runs keyed before it existed.
func newByHand(seed uint64, purpose Purpose, ids ...uint64) Stream {
	k := mix(seed ^ 0x243F6A8885A308D3)
	k = mix(k ^ mix(uint64(purpose)+0x13198A2E03707344))
	for _, id := range ids {
		k = mix(k ^ mix(id+0xA4093822299F31D0))
	}
	return Stream{key: k}
}

func TestKeyKeepsNewStreams(t *testing.T) {
	cases := []struct {
		name      string
		got, want Stream
	}{
		{name: "no ids", got: NewKey(3, PurposeNoise).Stream(), want: newByHand(3, PurposeNoise)},
		{name: "prefix then ids", got: NewKey(3, PurposeNoise, 1, 0).With(77).With(19).Stream(),
			want: newByHand(3, PurposeNoise, 1, 0, 77, 19)},
		{name: "all at once", got: NewKey(9, PurposeSample, 5, 6).Stream(), want: newByHand(9, PurposeSample, 5, 6)},
		{name: "New", got: New(1<<60, PurposeData, 2, 3, 4, 5), want: newByHand(1<<60, PurposeData, 2, 3, 4, 5)},
	}
	for _, c := range cases {
		for i := range 8 {
			if a, b := c.got.Norm(), c.want.Norm(); a != b {
				t.Fatalf("%s: draw %d is %v, want %v", c.name, i, a, b)
			}
		}
	}
}
