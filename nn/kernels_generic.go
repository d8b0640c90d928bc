//go:build !amd64 || purego

package nn

// Without the assembly the Go kernels run everywhere.

func expVec(dst, x []float32)                           { expGo(dst, x) }
func sigmoidVec(dst, x []float32)                       { sigmoidGo(dst, x) }
func siluVec(a, s, z []float32)                         { siluGo(a, s, z) }
func siluFwdVec(a, z []float32)                         { siluFwdGo(a, z) }
func siluGradVec(g, z, s []float32)                     { siluGradGo(g, z, s) }
func tanhVec(dst, x []float32)                          { tanhGo(dst, x) }
func tanhGradVec(g, a []float32)                        { tanhGradGo(g, a) }
func signScaleVec(dst, src, z []float32, neg float32)   { signScaleGo(dst, src, z, neg) }
func adamVec(params, grads, m, v []float32, c adamCoef) { adamGo(params, grads, m, v, c) }
