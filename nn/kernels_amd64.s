//go:build amd64 && !purego

#include "textflag.h"

// 8-wide AVX2+FMA forms of the Go kernels in kernels.go, same algorithm
// and constants; see there for the accuracy. Each TEXT takes n, a positive
// multiple of 8: the Go wrappers in kernels_amd64.go handle the rest.
// Operand order is Go's: the Intel r/m operand comes first, so in
// VMINPS a, b, dst a NaN in either gives a, and VBLENDVPS m, a, b, dst
// gives a where m's sign bit is set, else b.

// kconst holds each constant 8 times, one YMM-wide row per constant, so
// that arithmetic can take it as a memory operand.
#define EXPHI     kconst<>+0(SB)
#define EXPLO     kconst<>+32(SB)
#define LOG2E     kconst<>+64(SB)
#define LN2HI     kconst<>+96(SB)
#define LN2LO     kconst<>+128(SB)
#define EXPP0     kconst<>+160(SB)
#define EXPP1     kconst<>+192(SB)
#define EXPP2     kconst<>+224(SB)
#define EXPP3     kconst<>+256(SB)
#define EXPP4     kconst<>+288(SB)
#define EXPP5     kconst<>+320(SB)
#define ONE       kconst<>+352(SB)
#define BIAS      kconst<>+384(SB)
#define ABSMASK   kconst<>+416(SB)
#define SIGNMASK  kconst<>+448(SB)
#define TANHSMALL kconst<>+480(SB)
#define TANHP0    kconst<>+512(SB)
#define TANHP1    kconst<>+544(SB)
#define TANHP2    kconst<>+576(SB)
#define TANHP3    kconst<>+608(SB)
#define TANHP4    kconst<>+640(SB)
#define MINUS2    kconst<>+672(SB)

// EXP8 sets x = e^x, clobbering t1, t2, t3: exp32 in kernels.go. The
// clamps keep x as the NaN-winning operand so that NaN propagates.
#define EXP8(x, t1, t2, t3) \
	VMOVUPS      EXPHI, t1        \
	VMINPS       x, t1, t1        \
	VMOVUPS      EXPLO, x         \
	VMAXPS       t1, x, x         \
	VMULPS       LOG2E, x, t1     \
	VROUNDPS     $0, t1, t1       \
	VFNMADD231PS LN2HI, t1, x     \
	VFNMADD231PS LN2LO, t1, x     \
	VMOVUPS      EXPP0, t2        \
	VFMADD213PS  EXPP1, x, t2     \
	VFMADD213PS  EXPP2, x, t2     \
	VFMADD213PS  EXPP3, x, t2     \
	VFMADD213PS  EXPP4, x, t2     \
	VFMADD213PS  EXPP5, x, t2     \
	VMULPS       x, x, t3         \
	VFMADD213PS  x, t3, t2        \
	VADDPS       ONE, t2, t2      \
	VCVTPS2DQ    t1, t1           \
	VPSRAD       $1, t1, t3       \
	VPSUBD       t3, t1, t1       \
	VPADDD       BIAS, t3, t3     \
	VPSLLD       $23, t3, t3      \
	VPADDD       BIAS, t1, t1     \
	VPSLLD       $23, t1, t1      \
	VMULPS       t3, t2, t2       \
	VMULPS       t1, t2, x

// SIGMOID8 sets s = sigmoid(x), keeping x, clobbering t1..t3: num/(1+e)
// with e = e^-|x| and num = e for negative x, else 1 (sigmoid32).
#define SIGMOID8(x, s, t1, t2, t3) \
	VORPS     SIGNMASK, x, t1 \
	EXP8(t1, s, t2, t3)       \
	VMOVUPS   ONE, s          \
	VADDPS    t1, s, t2       \
	VBLENDVPS x, t1, s, s     \
	VDIVPS    t2, s, s

// func expAVX2(dst, x *float32, n int)
TEXT ·expAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX

expLoop:
	VMOVUPS (SI), Y0
	EXP8(Y0, Y1, Y2, Y3)
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     expLoop
	VZEROUPPER
	RET

// func sigmoidAVX2(dst, x *float32, n int)
TEXT ·sigmoidAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX

sigmoidLoop:
	VMOVUPS (SI), Y0
	SIGMOID8(Y0, Y1, Y2, Y3, Y4)
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     sigmoidLoop
	VZEROUPPER
	RET

// func siluAVX2(a, s, z *float32, n int)
TEXT ·siluAVX2(SB), NOSPLIT, $0-32
	MOVQ a+0(FP), DI
	MOVQ s+8(FP), DX
	MOVQ z+16(FP), SI
	MOVQ n+24(FP), CX

siluLoop:
	VMOVUPS (SI), Y0
	SIGMOID8(Y0, Y1, Y2, Y3, Y4)
	VMULPS  Y1, Y0, Y0
	VMOVUPS Y1, (DX)
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     siluLoop
	VZEROUPPER
	RET

// func siluFwdAVX2(a, z *float32, n int)
// siluAVX2 without storing the sigmoid.
TEXT ·siluFwdAVX2(SB), NOSPLIT, $0-24
	MOVQ a+0(FP), DI
	MOVQ z+8(FP), SI
	MOVQ n+16(FP), CX

siluFwdLoop:
	VMOVUPS (SI), Y0
	SIGMOID8(Y0, Y1, Y2, Y3, Y4)
	VMULPS  Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     siluFwdLoop
	VZEROUPPER
	RET

// func siluGradAVX2(grad, z, s *float32, n int)
// g *= s*(1+z*(1-s)) in the scalar order, unfused.
TEXT ·siluGradAVX2(SB), NOSPLIT, $0-32
	MOVQ    grad+0(FP), DI
	MOVQ    z+8(FP), SI
	MOVQ    s+16(FP), DX
	MOVQ    n+24(FP), CX
	VMOVUPS ONE, Y7

siluGradLoop:
	VMOVUPS (DX), Y1
	VSUBPS  Y1, Y7, Y2
	VMULPS  (SI), Y2, Y2
	VADDPS  Y2, Y7, Y2
	VMULPS  Y2, Y1, Y2
	VMULPS  (DI), Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     siluGradLoop
	VZEROUPPER
	RET

// func tanhAVX2(dst, x *float32, n int)
TEXT ·tanhAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX

tanhLoop:
	VMOVUPS     (SI), Y0
	VANDPS      ABSMASK, Y0, Y1
	VMULPS      MINUS2, Y1, Y2
	EXP8(Y2, Y3, Y4, Y5)
	VMOVUPS     ONE, Y3
	VSUBPS      Y2, Y3, Y4
	VADDPS      Y2, Y3, Y3
	VDIVPS      Y3, Y4, Y4
	VMULPS      Y1, Y1, Y2
	VMOVUPS     TANHP0, Y3
	VFMADD213PS TANHP1, Y2, Y3
	VFMADD213PS TANHP2, Y2, Y3
	VFMADD213PS TANHP3, Y2, Y3
	VFMADD213PS TANHP4, Y2, Y3
	VMULPS      Y2, Y3, Y3
	VFMADD213PS Y1, Y1, Y3
	VCMPPS      $1, TANHSMALL, Y1, Y5
	VBLENDVPS   Y5, Y3, Y4, Y4
	VANDPS      SIGNMASK, Y0, Y5
	VORPS       Y5, Y4, Y4
	VMOVUPS     Y4, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JNZ         tanhLoop
	VZEROUPPER
	RET

// func tanhGradAVX2(grad, a *float32, n int)
// g *= 1-a*a in the scalar order, unfused.
TEXT ·tanhGradAVX2(SB), NOSPLIT, $0-24
	MOVQ    grad+0(FP), DI
	MOVQ    a+8(FP), SI
	MOVQ    n+16(FP), CX
	VMOVUPS ONE, Y7

tanhGradLoop:
	VMOVUPS (SI), Y0
	VMULPS  Y0, Y0, Y0
	VSUBPS  Y0, Y7, Y0
	VMULPS  (DI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JNZ     tanhGradLoop
	VZEROUPPER
	RET

// func signScaleAVX2(dst, src, z *float32, n int, neg float32)
// dst = src * (neg where z's sign bit is set, else 1).
TEXT ·signScaleAVX2(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         z+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS neg+32(FP), Y6
	VMOVUPS      ONE, Y7

signScaleLoop:
	VMOVUPS   (DX), Y0
	VBLENDVPS Y0, Y6, Y7, Y1
	VMULPS    (SI), Y1, Y1
	VMOVUPS   Y1, (DI)
	ADDQ      $32, SI
	ADDQ      $32, DX
	ADDQ      $32, DI
	SUBQ      $8, CX
	JNZ       signScaleLoop
	VZEROUPPER
	RET

// func adamAVX2(params, grads, m, v *float32, n int, b1, c1, b2, c2, stepSize, sqrtBC2, eps float64)
// adamGo 4 elements at a time in float64, the same operations in the same
// order, none fused.
TEXT ·adamAVX2(SB), NOSPLIT, $0-96
	MOVQ         params+0(FP), DI
	MOVQ         grads+8(FP), SI
	MOVQ         m+16(FP), DX
	MOVQ         v+24(FP), BX
	MOVQ         n+32(FP), CX
	VBROADCASTSD b1+40(FP), Y8
	VBROADCASTSD c1+48(FP), Y9
	VBROADCASTSD b2+56(FP), Y10
	VBROADCASTSD c2+64(FP), Y11
	VBROADCASTSD stepSize+72(FP), Y12
	VBROADCASTSD sqrtBC2+80(FP), Y13
	VBROADCASTSD eps+88(FP), Y14

adamLoop:
	VCVTPS2PD  (SI), Y0
	VCVTPS2PD  (DX), Y1
	VMULPD     Y1, Y8, Y1
	VMULPD     Y0, Y9, Y2
	VADDPD     Y2, Y1, Y1
	VCVTPS2PD  (BX), Y3
	VMULPD     Y3, Y10, Y3
	VMULPD     Y0, Y11, Y4
	VMULPD     Y0, Y4, Y4
	VADDPD     Y4, Y3, Y3
	VCVTPD2PSY Y1, X5
	VMOVUPS    X5, (DX)
	VCVTPD2PSY Y3, X5
	VMOVUPS    X5, (BX)
	VSQRTPD    Y3, Y3
	VDIVPD     Y13, Y3, Y3
	VADDPD     Y14, Y3, Y3
	VMULPD     Y1, Y12, Y1
	VDIVPD     Y3, Y1, Y1
	VCVTPS2PD  (DI), Y2
	VSUBPD     Y1, Y2, Y2
	VCVTPD2PSY Y2, X2
	VMOVUPS    X2, (DI)
	ADDQ       $16, SI
	ADDQ       $16, DX
	ADDQ       $16, BX
	ADDQ       $16, DI
	SUBQ       $4, CX
	JNZ        adamLoop
	VZEROUPPER
	RET

// 0: expHi
DATA kconst<>+0(SB)/8, $0x42b2000042b20000
DATA kconst<>+8(SB)/8, $0x42b2000042b20000
DATA kconst<>+16(SB)/8, $0x42b2000042b20000
DATA kconst<>+24(SB)/8, $0x42b2000042b20000
// 32: expLo
DATA kconst<>+32(SB)/8, $0xc2d00000c2d00000
DATA kconst<>+40(SB)/8, $0xc2d00000c2d00000
DATA kconst<>+48(SB)/8, $0xc2d00000c2d00000
DATA kconst<>+56(SB)/8, $0xc2d00000c2d00000
// 64: log2e
DATA kconst<>+64(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA kconst<>+72(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA kconst<>+80(SB)/8, $0x3fb8aa3b3fb8aa3b
DATA kconst<>+88(SB)/8, $0x3fb8aa3b3fb8aa3b
// 96: ln2Hi
DATA kconst<>+96(SB)/8, $0x3f3180003f318000
DATA kconst<>+104(SB)/8, $0x3f3180003f318000
DATA kconst<>+112(SB)/8, $0x3f3180003f318000
DATA kconst<>+120(SB)/8, $0x3f3180003f318000
// 128: ln2Lo
DATA kconst<>+128(SB)/8, $0xb95e8083b95e8083
DATA kconst<>+136(SB)/8, $0xb95e8083b95e8083
DATA kconst<>+144(SB)/8, $0xb95e8083b95e8083
DATA kconst<>+152(SB)/8, $0xb95e8083b95e8083
// 160: expP0
DATA kconst<>+160(SB)/8, $0x3950696739506967
DATA kconst<>+168(SB)/8, $0x3950696739506967
DATA kconst<>+176(SB)/8, $0x3950696739506967
DATA kconst<>+184(SB)/8, $0x3950696739506967
// 192: expP1
DATA kconst<>+192(SB)/8, $0x3ab743ce3ab743ce
DATA kconst<>+200(SB)/8, $0x3ab743ce3ab743ce
DATA kconst<>+208(SB)/8, $0x3ab743ce3ab743ce
DATA kconst<>+216(SB)/8, $0x3ab743ce3ab743ce
// 224: expP2
DATA kconst<>+224(SB)/8, $0x3c0889083c088908
DATA kconst<>+232(SB)/8, $0x3c0889083c088908
DATA kconst<>+240(SB)/8, $0x3c0889083c088908
DATA kconst<>+248(SB)/8, $0x3c0889083c088908
// 256: expP3
DATA kconst<>+256(SB)/8, $0x3d2aa9c13d2aa9c1
DATA kconst<>+264(SB)/8, $0x3d2aa9c13d2aa9c1
DATA kconst<>+272(SB)/8, $0x3d2aa9c13d2aa9c1
DATA kconst<>+280(SB)/8, $0x3d2aa9c13d2aa9c1
// 288: expP4
DATA kconst<>+288(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA kconst<>+296(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA kconst<>+304(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA kconst<>+312(SB)/8, $0x3e2aaaaa3e2aaaaa
// 320: expP5
DATA kconst<>+320(SB)/8, $0x3f0000003f000000
DATA kconst<>+328(SB)/8, $0x3f0000003f000000
DATA kconst<>+336(SB)/8, $0x3f0000003f000000
DATA kconst<>+344(SB)/8, $0x3f0000003f000000
// 352: one
DATA kconst<>+352(SB)/8, $0x3f8000003f800000
DATA kconst<>+360(SB)/8, $0x3f8000003f800000
DATA kconst<>+368(SB)/8, $0x3f8000003f800000
DATA kconst<>+376(SB)/8, $0x3f8000003f800000
// 384: bias 127
DATA kconst<>+384(SB)/8, $0x0000007f0000007f
DATA kconst<>+392(SB)/8, $0x0000007f0000007f
DATA kconst<>+400(SB)/8, $0x0000007f0000007f
DATA kconst<>+408(SB)/8, $0x0000007f0000007f
// 416: absMask
DATA kconst<>+416(SB)/8, $0x7fffffff7fffffff
DATA kconst<>+424(SB)/8, $0x7fffffff7fffffff
DATA kconst<>+432(SB)/8, $0x7fffffff7fffffff
DATA kconst<>+440(SB)/8, $0x7fffffff7fffffff
// 448: signMask
DATA kconst<>+448(SB)/8, $0x8000000080000000
DATA kconst<>+456(SB)/8, $0x8000000080000000
DATA kconst<>+464(SB)/8, $0x8000000080000000
DATA kconst<>+472(SB)/8, $0x8000000080000000
// 480: tanhSmall
DATA kconst<>+480(SB)/8, $0x3f2000003f200000
DATA kconst<>+488(SB)/8, $0x3f2000003f200000
DATA kconst<>+496(SB)/8, $0x3f2000003f200000
DATA kconst<>+504(SB)/8, $0x3f2000003f200000
// 512: tanhP0
DATA kconst<>+512(SB)/8, $0xbbbaf0eabbbaf0ea
DATA kconst<>+520(SB)/8, $0xbbbaf0eabbbaf0ea
DATA kconst<>+528(SB)/8, $0xbbbaf0eabbbaf0ea
DATA kconst<>+536(SB)/8, $0xbbbaf0eabbbaf0ea
// 544: tanhP1
DATA kconst<>+544(SB)/8, $0x3ca9134e3ca9134e
DATA kconst<>+552(SB)/8, $0x3ca9134e3ca9134e
DATA kconst<>+560(SB)/8, $0x3ca9134e3ca9134e
DATA kconst<>+568(SB)/8, $0x3ca9134e3ca9134e
// 576: tanhP2
DATA kconst<>+576(SB)/8, $0xbd5c1e2dbd5c1e2d
DATA kconst<>+584(SB)/8, $0xbd5c1e2dbd5c1e2d
DATA kconst<>+592(SB)/8, $0xbd5c1e2dbd5c1e2d
DATA kconst<>+600(SB)/8, $0xbd5c1e2dbd5c1e2d
// 608: tanhP3
DATA kconst<>+608(SB)/8, $0x3e0883933e088393
DATA kconst<>+616(SB)/8, $0x3e0883933e088393
DATA kconst<>+624(SB)/8, $0x3e0883933e088393
DATA kconst<>+632(SB)/8, $0x3e0883933e088393
// 640: tanhP4
DATA kconst<>+640(SB)/8, $0xbeaaaa99beaaaa99
DATA kconst<>+648(SB)/8, $0xbeaaaa99beaaaa99
DATA kconst<>+656(SB)/8, $0xbeaaaa99beaaaa99
DATA kconst<>+664(SB)/8, $0xbeaaaa99beaaaa99
// 672: -2
DATA kconst<>+672(SB)/8, $0xc0000000c0000000
DATA kconst<>+680(SB)/8, $0xc0000000c0000000
DATA kconst<>+688(SB)/8, $0xc0000000c0000000
DATA kconst<>+696(SB)/8, $0xc0000000c0000000
GLOBL kconst<>(SB), RODATA|NOPTR, $704
