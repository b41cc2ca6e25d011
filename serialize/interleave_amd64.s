//go:build amd64 && !purego

#include "textflag.h"

// func interleave2SSE2(dst, s0, s1 *byte, n int)
TEXT ·interleave2SSE2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ s0+8(FP), SI
	MOVQ s1+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $4, CX
	JZ   done2

loop2:
	MOVOU     (SI), X0
	MOVOU     (DX), X1
	MOVO      X0, X2
	PUNPCKLBW X1, X0 // s0[0] s1[0] s0[1] s1[1] ... s0[7] s1[7]
	PUNPCKHBW X1, X2 // s0[8] s1[8] ... s0[15] s1[15]
	MOVOU     X0, (DI)
	MOVOU     X2, 16(DI)
	ADDQ      $16, SI
	ADDQ      $16, DX
	ADDQ      $32, DI
	DECQ      CX
	JNZ       loop2

done2:
	RET

// func interleave4SSE2(dst, s0, s1, s2, s3 *byte, n int)
TEXT ·interleave4SSE2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ s0+8(FP), SI
	MOVQ s1+16(FP), R8
	MOVQ s2+24(FP), R9
	MOVQ s3+32(FP), R10
	MOVQ n+40(FP), CX
	SHRQ $4, CX
	JZ   done4

loop4:
	MOVOU     (SI), X0
	MOVOU     (R8), X1
	MOVOU     (R9), X2
	MOVOU     (R10), X3
	MOVO      X0, X4
	PUNPCKLBW X1, X0 // pairs (s0,s1) of elements 0-7
	PUNPCKHBW X1, X4 // pairs of elements 8-15
	MOVO      X2, X5
	PUNPCKLBW X3, X2 // pairs (s2,s3) of elements 0-7
	PUNPCKHBW X3, X5 // pairs of elements 8-15
	MOVO      X0, X6
	PUNPCKLWL X2, X0 // elements 0-3
	PUNPCKHWL X2, X6 // elements 4-7
	MOVO      X4, X7
	PUNPCKLWL X5, X4 // elements 8-11
	PUNPCKHWL X5, X7 // elements 12-15
	MOVOU     X0, (DI)
	MOVOU     X6, 16(DI)
	MOVOU     X4, 32(DI)
	MOVOU     X7, 48(DI)
	ADDQ      $16, SI
	ADDQ      $16, R8
	ADDQ      $16, R9
	ADDQ      $16, R10
	ADDQ      $64, DI
	DECQ      CX
	JNZ       loop4

done4:
	RET
