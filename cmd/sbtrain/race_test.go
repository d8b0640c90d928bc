//go:build race

package main

// raceEnabled: this test binary has the race detector, which makes training
// several times slower; the cluster tests shrink their run and skip the
// ones the non-race pass covers.
const raceEnabled = true
