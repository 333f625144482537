// Prompt matmuls on Intel AMX: y = x · Wᵀ for an interleaved matrix
// (kernels/cpu/interleaved.h) with bfloat16 activations, on the tile unit (TDPBF16PS).
//
// Why a second kernel: the int8 kernel needs a float epilogue per 32-column block (the block's
// weight and activation scales), which AMX's integer tiles cannot absorb, so on AMX it runs no
// faster than on the vector unit. Here each 32-row panel of the weights is dequantized once
// into bfloat16 tiles (scales and minimums folded in), then multiplied by every 16-token tile
// of the activations, accumulating in float over the whole row: the dequantization is spread
// over all the call's tokens, so it pays for prompts (many tokens), not for decodes.
//
// Numerics: weights d·u + m rounded to bfloat16 (a relative error of at most 2⁻⁹, ~30x below
// the 4-bit step), activations rounded to bfloat16, products summed in float. A (row, token)
// result depends only on that token's activations: bitwise the same whatever else is in the
// call, as the int8 kernel's.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

// Whether this CPU has AMX-BF16 and the OS granted this process the tile state (asked once).
bool HasAmxBf16();

// The kernel reads activations in blocks of this many tokens: a buffer of n tokens needs
// readable rows up to RoundUp(n, kAmxTokenBlock). What they hold does not matter (a token's
// result depends on its own row only; the extra rows' results are not stored).
inline constexpr int64_t kAmxTokenBlock = 32;

// x [n x cols] float (row stride ldx) → dst [n x cols] bfloat16, rounded to nearest even.
void ConvertToBf16(const float* x, int64_t ldx, int64_t n, int64_t cols, uint16_t* dst);

// Bytes of scratch MatMulInterleavedAmx needs for a matrix of `cols` columns.
size_t AmxScratchBytes(int64_t cols);

// y[t*ldy + r] = Σ_c W[r][c]·x[t*cols + c] for rows [r0, r1) (multiples of 16) and tokens
// [0, n), with x from ConvertToBf16 (rows up to RoundUp(n, kAmxTokenBlock) readable). Requires HasAmxBf16(); `scratch` holds
// AmxScratchBytes(cols) bytes, 64-byte aligned.
void MatMulInterleavedAmx(GgmlType type, const uint8_t* data, int64_t cols, const uint16_t* x,
                          int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1, uint8_t* scratch);

}  // namespace peng::kernels
