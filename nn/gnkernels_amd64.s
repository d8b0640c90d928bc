//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA forms of the GroupNorm row kernels in gnkernels.go. Each takes
// c, the row length, a positive multiple of 8, and rows > 0 rows of c
// floats; the per-channel vectors hold c floats.

// func gnSumsAVX2(p1, p2, a, b *float32, c, rows int)
TEXT ·gnSumsAVX2(SB), NOSPLIT, $0-48
	MOVQ p1+0(FP), DI
	MOVQ p2+8(FP), SI
	MOVQ a+16(FP), AX
	MOVQ b+24(FP), R9
	MOVQ c+32(FP), R8
	SHLQ $2, R8
	MOVQ rows+40(FP), DX

srow:
	XORQ BX, BX

scol:
	VMOVUPS     (AX)(BX*1), Y0
	VADDPS      (DI)(BX*1), Y0, Y2
	VMOVUPS     Y2, (DI)(BX*1)
	VMOVUPS     (SI)(BX*1), Y3
	VFMADD231PS (R9)(BX*1), Y0, Y3
	VMOVUPS     Y3, (SI)(BX*1)
	ADDQ        $32, BX
	CMPQ        BX, R8
	JLT         scol
	ADDQ        R8, AX
	ADDQ        R8, R9
	DECQ        DX
	JNZ         srow
	VZEROUPPER
	RET

// func gnAffineAVX2(z, x, mu, sc, beta *float32, c, rows int)
TEXT ·gnAffineAVX2(SB), NOSPLIT, $0-56
	MOVQ z+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ mu+16(FP), R10
	MOVQ sc+24(FP), R11
	MOVQ beta+32(FP), R12
	MOVQ c+40(FP), R8
	SHLQ $2, R8
	MOVQ rows+48(FP), DX

arow:
	XORQ BX, BX

acol:
	VMOVUPS     (SI)(BX*1), Y0
	VSUBPS      (R10)(BX*1), Y0, Y0
	VMOVUPS     (R12)(BX*1), Y1
	VFMADD231PS (R11)(BX*1), Y0, Y1
	VMOVUPS     Y1, (DI)(BX*1)
	ADDQ        $32, BX
	CMPQ        BX, R8
	JLT         acol
	ADDQ        R8, SI
	ADDQ        R8, DI
	DECQ        DX
	JNZ         arow
	VZEROUPPER
	RET

// func gnBackAVX2(dx, x, d, k1, k2, mu, k4 *float32, c, rows, add int)
TEXT ·gnBackAVX2(SB), NOSPLIT, $0-80
	MOVQ dx+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ d+16(FP), AX
	MOVQ k1+24(FP), R9
	MOVQ k2+32(FP), R10
	MOVQ mu+40(FP), R11
	MOVQ k4+48(FP), R12
	MOVQ c+56(FP), R8
	SHLQ $2, R8
	MOVQ rows+64(FP), DX
	MOVQ add+72(FP), CX

brow:
	XORQ BX, BX

bcol:
	VMOVUPS     (SI)(BX*1), Y0
	VSUBPS      (R11)(BX*1), Y0, Y0
	VMOVUPS     (R12)(BX*1), Y1
	VFMADD231PS (R10)(BX*1), Y0, Y1
	VMOVUPS     (AX)(BX*1), Y2
	VFMADD231PS (R9)(BX*1), Y2, Y1
	TESTQ       CX, CX
	JZ          bstore
	VADDPS      (DI)(BX*1), Y1, Y1

bstore:
	VMOVUPS Y1, (DI)(BX*1)
	ADDQ    $32, BX
	CMPQ    BX, R8
	JLT     bcol
	ADDQ    R8, SI
	ADDQ    R8, DI
	ADDQ    R8, AX
	DECQ    DX
	JNZ     brow
	VZEROUPPER
	RET

// func colSumAVX2(dst, m *float32, c, rows int)
TEXT ·colSumAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ m+8(FP), AX
	MOVQ c+16(FP), R8
	SHLQ $2, R8
	MOVQ rows+24(FP), DX

crow:
	XORQ BX, BX

ccol:
	VMOVUPS (DI)(BX*1), Y0
	VADDPS  (AX)(BX*1), Y0, Y0
	VMOVUPS Y0, (DI)(BX*1)
	ADDQ    $32, BX
	CMPQ    BX, R8
	JLT     ccol
	ADDQ    R8, AX
	DECQ    DX
	JNZ     crow
	VZEROUPPER
	RET

// func addRowsAVX2(dst, v *float32, c, rows int)
TEXT ·addRowsAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ v+8(FP), SI
	MOVQ c+16(FP), R8
	SHLQ $2, R8
	MOVQ rows+24(FP), DX

rrow:
	XORQ BX, BX

rcol:
	VMOVUPS (DI)(BX*1), Y0
	VADDPS  (SI)(BX*1), Y0, Y0
	VMOVUPS Y0, (DI)(BX*1)
	ADDQ    $32, BX
	CMPQ    BX, R8
	JLT     rcol
	ADDQ    R8, DI
	DECQ    DX
	JNZ     rrow
	VZEROUPPER
	RET
