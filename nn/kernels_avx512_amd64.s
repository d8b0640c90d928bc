//go:build amd64 && !purego

#include "textflag.h"

// 16-wide AVX-512 forms of the AVX2 kernels in kernels_amd64.s. Each lane
// runs exactly the AVX2 lane's instruction sequence: the same constants,
// the same fused and unfused operations with the same operand order (which
// decides which NaN comes out), VRNDSCALEPS $0 for VROUNDPS $0, and sign
// or compare masks in K registers with merge-masked moves for the
// VBLENDVPS selects. So a result's bits do not depend on whether a
// machine has AVX-512. Each TEXT takes any n > 0: the last n%16 elements
// go through masked loads and stores, whose masked-off lanes compute on
// zeros and are never written.
//
// The constants live in Z16..Z27, Z29 (and Z8..Z15 for tanh), broadcast once
// per call from k512, 4 bytes each.

#define K_EXPHI     k512<>+0(SB)
#define K_EXPLO     k512<>+4(SB)
#define K_LOG2E     k512<>+8(SB)
#define K_LN2HI     k512<>+12(SB)
#define K_LN2LO     k512<>+16(SB)
#define K_EXPP0     k512<>+20(SB)
#define K_EXPP1     k512<>+24(SB)
#define K_EXPP2     k512<>+28(SB)
#define K_EXPP3     k512<>+32(SB)
#define K_EXPP4     k512<>+36(SB)
#define K_EXPP5     k512<>+40(SB)
#define K_ONE       k512<>+44(SB)
#define K_BIAS      k512<>+48(SB)
#define K_SIGNMASK  k512<>+52(SB)
#define K_ABSMASK   k512<>+56(SB)
#define K_TANHSMALL k512<>+60(SB)
#define K_TANHP0    k512<>+64(SB)
#define K_TANHP1    k512<>+68(SB)
#define K_TANHP2    k512<>+72(SB)
#define K_TANHP3    k512<>+76(SB)
#define K_TANHP4    k512<>+80(SB)
#define K_MINUS2    k512<>+84(SB)

#define ONE16  Z27
#define SIGN16 Z29

#define LOADEXPCONST \
	VBROADCASTSS K_EXPHI, Z16    \
	VBROADCASTSS K_EXPLO, Z17    \
	VBROADCASTSS K_LOG2E, Z18    \
	VBROADCASTSS K_LN2HI, Z19    \
	VBROADCASTSS K_LN2LO, Z20    \
	VBROADCASTSS K_EXPP0, Z21    \
	VBROADCASTSS K_EXPP1, Z22    \
	VBROADCASTSS K_EXPP2, Z23    \
	VBROADCASTSS K_EXPP3, Z24    \
	VBROADCASTSS K_EXPP4, Z25    \
	VBROADCASTSS K_EXPP5, Z26    \
	VBROADCASTSS K_ONE, ONE16    \
	VBROADCASTSS K_SIGNMASK, SIGN16

// TAILMASK sets K7 to the lanes of this block: all 16, or the low CX
// when fewer are left. Clobbers AX.
#define TAILMASK(label) \
	CMPQ  CX, $16   \
	JAE   label     \
	MOVQ  $1, AX    \
	SHLQ  CX, AX    \
	DECQ  AX        \
	KMOVW AX, K7    \
label:

#define FULLMASK \
	MOVQ  $0xffff, AX \
	KMOVW AX, K7

// EXP16 sets x = e^x, clobbering t1, t2, t3: EXP8 lane for lane, but
// for the scaling by 2^n. EXP8 multiplies by 2^(n>>1) exactly (p is in
// [0.7, 1.42] and n>>1 in [-75, 64], so the product is normal) and then
// by 2^(n-n>>1), rounding once; VSCALEFPS rounds p*2^n once, so both give
// the correctly rounded p*2^n, subnormal or +Inf included, and for a NaN
// x both return p's NaN, quieted.
#define EXP16(x, t1, t2, t3) \
	VMINPS       x, Z16, t1   \
	VMAXPS       t1, Z17, x   \
	VMULPS       Z18, x, t1   \
	VRNDSCALEPS  $0, t1, t1   \
	VFNMADD231PS Z19, t1, x   \
	VFNMADD231PS Z20, t1, x   \
	VMOVAPS      Z21, t2      \
	VFMADD213PS  Z22, x, t2   \
	VFMADD213PS  Z23, x, t2   \
	VFMADD213PS  Z24, x, t2   \
	VFMADD213PS  Z25, x, t2   \
	VFMADD213PS  Z26, x, t2   \
	VMULPS       x, x, t3     \
	VFMADD213PS  x, t3, t2    \
	VADDPS       ONE16, t2, t2 \
	VSCALEFPS    t1, t2, x

// SIGMOID16 sets s = sigmoid(x), keeping x, clobbering t1..t3 and K1:
// SIGMOID8 lane for lane, the VBLENDVPS on x's sign as a K1-masked move.
#define SIGMOID16(x, s, t1, t2, t3) \
	VPORD     SIGN16, x, t1 \
	EXP16(t1, s, t2, t3)    \
	VMOVAPS   ONE16, s      \
	VADDPS    t1, s, t2     \
	VPMOVD2M  x, K1         \
	VMOVAPS   t1, K1, s     \
	VDIVPS    t2, s, s

// func expAVX512(dst, x *float32, n int)
TEXT ·expAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	LOADEXPCONST
	FULLMASK

exp512Loop:
	TAILMASK(exp512Body)
	VMOVUPS.Z (SI), K7, Z0
	EXP16(Z0, Z1, Z2, Z3)
	VMOVUPS   Z0, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        exp512Loop
	VZEROUPPER
	RET

// func sigmoidAVX512(dst, x *float32, n int)
TEXT ·sigmoidAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	LOADEXPCONST
	FULLMASK

sigmoid512Loop:
	TAILMASK(sigmoid512Body)
	VMOVUPS.Z (SI), K7, Z0
	SIGMOID16(Z0, Z1, Z2, Z3, Z4)
	VMOVUPS   Z1, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        sigmoid512Loop
	VZEROUPPER
	RET

// func siluAVX512(a, s, z *float32, n int)
TEXT ·siluAVX512(SB), NOSPLIT, $0-32
	MOVQ a+0(FP), DI
	MOVQ s+8(FP), DX
	MOVQ z+16(FP), SI
	MOVQ n+24(FP), CX
	LOADEXPCONST
	FULLMASK

silu512Loop:
	TAILMASK(silu512Body)
	VMOVUPS.Z (SI), K7, Z0
	SIGMOID16(Z0, Z1, Z2, Z3, Z4)
	VMULPS    Z1, Z0, Z0
	VMOVUPS   Z1, K7, (DX)
	VMOVUPS   Z0, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        silu512Loop
	VZEROUPPER
	RET

// func siluFwdAVX512(a, z *float32, n int)
// siluAVX512 without storing the sigmoid.
TEXT ·siluFwdAVX512(SB), NOSPLIT, $0-24
	MOVQ a+0(FP), DI
	MOVQ z+8(FP), SI
	MOVQ n+16(FP), CX
	LOADEXPCONST
	FULLMASK

siluFwd512Loop:
	TAILMASK(siluFwd512Body)
	VMOVUPS.Z (SI), K7, Z0
	SIGMOID16(Z0, Z1, Z2, Z3, Z4)
	VMULPS    Z1, Z0, Z0
	VMOVUPS   Z0, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        siluFwd512Loop
	VZEROUPPER
	RET

// func siluGradAVX512(grad, z, s *float32, n int)
// g *= s*(1+z*(1-s)) in the scalar order, unfused.
TEXT ·siluGradAVX512(SB), NOSPLIT, $0-32
	MOVQ         grad+0(FP), DI
	MOVQ         z+8(FP), SI
	MOVQ         s+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS K_ONE, ONE16
	FULLMASK

siluGrad512Loop:
	TAILMASK(siluGrad512Body)
	VMOVUPS.Z (DX), K7, Z1
	VMOVUPS.Z (SI), K7, Z3
	VMOVUPS.Z (DI), K7, Z4
	VSUBPS    Z1, ONE16, Z2
	VMULPS    Z3, Z2, Z2
	VADDPS    Z2, ONE16, Z2
	VMULPS    Z2, Z1, Z2
	VMULPS    Z4, Z2, Z2
	VMOVUPS   Z2, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        siluGrad512Loop
	VZEROUPPER
	RET

// func tanhAVX512(dst, x *float32, n int)
TEXT ·tanhAVX512(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	LOADEXPCONST
	VBROADCASTSS K_ABSMASK, Z8
	VBROADCASTSS K_TANHSMALL, Z9
	VBROADCASTSS K_TANHP0, Z10
	VBROADCASTSS K_TANHP1, Z11
	VBROADCASTSS K_TANHP2, Z12
	VBROADCASTSS K_TANHP3, Z13
	VBROADCASTSS K_TANHP4, Z14
	VBROADCASTSS K_MINUS2, Z15
	FULLMASK

tanh512Loop:
	TAILMASK(tanh512Body)
	VMOVUPS.Z   (SI), K7, Z0
	VPANDD      Z8, Z0, Z1
	VMULPS      Z15, Z1, Z2
	EXP16(Z2, Z3, Z4, Z5)
	VMOVAPS     ONE16, Z3
	VSUBPS      Z2, Z3, Z4
	VADDPS      Z2, Z3, Z3
	VDIVPS      Z3, Z4, Z4
	VMULPS      Z1, Z1, Z2
	VMOVAPS     Z10, Z3
	VFMADD213PS Z11, Z2, Z3
	VFMADD213PS Z12, Z2, Z3
	VFMADD213PS Z13, Z2, Z3
	VFMADD213PS Z14, Z2, Z3
	VMULPS      Z2, Z3, Z3
	VFMADD213PS Z1, Z1, Z3
	VCMPPS      $1, Z9, Z1, K1
	VMOVAPS     Z3, K1, Z4
	VPANDD      SIGN16, Z0, Z5
	VPORD       Z5, Z4, Z4
	VMOVUPS     Z4, K7, (DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JG          tanh512Loop
	VZEROUPPER
	RET

// func tanhGradAVX512(grad, a *float32, n int)
// g *= 1-a*a in the scalar order, unfused.
TEXT ·tanhGradAVX512(SB), NOSPLIT, $0-24
	MOVQ         grad+0(FP), DI
	MOVQ         a+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS K_ONE, ONE16
	FULLMASK

tanhGrad512Loop:
	TAILMASK(tanhGrad512Body)
	VMOVUPS.Z (SI), K7, Z0
	VMOVUPS.Z (DI), K7, Z1
	VMULPS    Z0, Z0, Z0
	VSUBPS    Z0, ONE16, Z0
	VMULPS    Z1, Z0, Z0
	VMOVUPS   Z0, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        tanhGrad512Loop
	VZEROUPPER
	RET

// func signScaleAVX512(dst, src, z *float32, n int, neg float32)
// dst = src * (neg where z's sign bit is set, else 1).
TEXT ·signScaleAVX512(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         z+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS neg+32(FP), Z6
	VBROADCASTSS K_ONE, ONE16
	FULLMASK

signScale512Loop:
	TAILMASK(signScale512Body)
	VMOVUPS.Z (DX), K7, Z0
	VMOVUPS.Z (SI), K7, Z2
	VPMOVD2M  Z0, K1
	VMOVAPS   ONE16, Z1
	VMOVAPS   Z6, K1, Z1
	VMULPS    Z2, Z1, Z1
	VMOVUPS   Z1, K7, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      $64, DI
	SUBQ      $16, CX
	JG        signScale512Loop
	VZEROUPPER
	RET

DATA k512<>+0(SB)/4, $0x42b20000  // expHi
DATA k512<>+4(SB)/4, $0xc2d00000  // expLo
DATA k512<>+8(SB)/4, $0x3fb8aa3b  // log2e
DATA k512<>+12(SB)/4, $0x3f318000 // ln2Hi
DATA k512<>+16(SB)/4, $0xb95e8083 // ln2Lo
DATA k512<>+20(SB)/4, $0x39506967 // expP0
DATA k512<>+24(SB)/4, $0x3ab743ce // expP1
DATA k512<>+28(SB)/4, $0x3c088908 // expP2
DATA k512<>+32(SB)/4, $0x3d2aa9c1 // expP3
DATA k512<>+36(SB)/4, $0x3e2aaaaa // expP4
DATA k512<>+40(SB)/4, $0x3f000000 // expP5
DATA k512<>+44(SB)/4, $0x3f800000 // 1
DATA k512<>+48(SB)/4, $0x0000007f // bias 127, unused
DATA k512<>+52(SB)/4, $0x80000000 // signMask
DATA k512<>+56(SB)/4, $0x7fffffff // absMask
DATA k512<>+60(SB)/4, $0x3f200000 // tanhSmall
DATA k512<>+64(SB)/4, $0xbbbaf0ea // tanhP0
DATA k512<>+68(SB)/4, $0x3ca9134e // tanhP1
DATA k512<>+72(SB)/4, $0xbd5c1e2d // tanhP2
DATA k512<>+76(SB)/4, $0x3e088393 // tanhP3
DATA k512<>+80(SB)/4, $0xbeaaaa99 // tanhP4
DATA k512<>+84(SB)/4, $0xc0000000 // -2
GLOBL k512<>(SB), RODATA|NOPTR, $88
