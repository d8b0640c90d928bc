//go:build amd64 && !purego

#include "textflag.h"

// 1.5·2^52 as float64 bits, broadcast by the kernels.
DATA magic64<>+0(SB)/8, $0x4338000000000000
GLOBL magic64<>(SB), RODATA|NOPTR, $8

DATA absmask<>+0(SB)/4, $0x7fffffff
GLOBL absmask<>(SB), RODATA|NOPTR, $4

// func accumulateAVX2(acc *int64, t *float32, n int, scale float64)
// Per element: float32 -> float64 (exact), times scale (exact, a power of
// two), plus magic (rounded to even, as the Go kernel's add), then the
// bit pattern minus magic's is the integer, added to acc.
TEXT ·accumulateAVX2(SB), NOSPLIT, $0-32
	MOVQ acc+0(FP), DI
	MOVQ t+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSD scale+24(FP), Y4
	VBROADCASTSD magic64<>(SB), Y5

loop8:
	CMPQ CX, $8
	JLT  done
	VCVTPS2PD 0(SI), Y0
	VCVTPS2PD 16(SI), Y1
	VMULPD    Y4, Y0, Y0
	VMULPD    Y4, Y1, Y1
	VADDPD    Y5, Y0, Y0
	VADDPD    Y5, Y1, Y1
	VPSUBQ    Y5, Y0, Y0
	VPSUBQ    Y5, Y1, Y1
	VPADDQ    0(DI), Y0, Y0
	VPADDQ    32(DI), Y1, Y1
	VMOVDQU   Y0, 0(DI)
	VMOVDQU   Y1, 32(DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $8, CX
	JMP       loop8

done:
	VZEROUPPER
	RET

// func maxAbsAVX2(t *float32, n int, out *[8]uint32)
TEXT ·maxAbsAVX2(SB), NOSPLIT, $0-24
	MOVQ t+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ out+16(FP), DI
	VPBROADCASTD absmask<>(SB), Y4
	VPXOR        Y0, Y0, Y0
	VPXOR        Y1, Y1, Y1

loop16:
	CMPQ CX, $16
	JLT  loop8
	VPAND   0(SI), Y4, Y2
	VPAND   32(SI), Y4, Y3
	VPMAXUD Y2, Y0, Y0
	VPMAXUD Y3, Y1, Y1
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     loop16

loop8:
	CMPQ CX, $8
	JLT  done
	VPAND   0(SI), Y4, Y2
	VPMAXUD Y2, Y0, Y0
	ADDQ    $32, SI
	SUBQ    $8, CX
	JMP     loop8

done:
	VPMAXUD Y1, Y0, Y0
	VMOVDQU Y0, 0(DI)
	VZEROUPPER
	RET
