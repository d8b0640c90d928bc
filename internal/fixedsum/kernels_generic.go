//go:build !amd64 || purego

package fixedsum

func accumulate(acc []int64, t []float32, scale float64) { accumulateGo(acc, t, scale) }

func maxAbsBits(t []float32) int64 { return maxAbsBitsGo(t) }
