// Row-interleaved ("I16") weight layout for fast batched matmul with batch-invariant results.
// A [rows x cols] Q4_1 or Q8_0 matrix (rows % 16 == 0) is repacked at load into tiles of 16 rows
// x 32 columns, so that one vector holds one column of 16 rows:
//   Q4_1 tile: fp16 d[16], fp16 m[16], then for j = 0..15 the 16 bytes
//              (code of column j) | (code of column j+16) << 4, one byte per row   (320 bytes)
//   Q8_0 tile: fp16 d[16], then for c = 0..31 the 16 int8 codes of column c        (544 bytes)
// Tiles are stored row group by row group, blocks in column order. The kernel keeps 16 rows per
// accumulator and broadcasts activations (outer product: no horizontal sums), and every batch
// size runs the same FMAs in the same order for a given (row, token).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

inline constexpr int kInterleaveRows = 16;

// Whether a matrix of this type and shape can be interleaved (on this build's CPU target).
bool CanInterleave(GgmlType type, int64_t rows, int64_t cols);
// Bytes of the interleaved copy (the same as the GGML layout for Q4_1, Q8_0).
size_t InterleavedBytes(GgmlType type, int64_t rows, int64_t cols);
// Repacks GGML rows into the interleaved layout.
void Interleave(GgmlType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Dequantizes row r of an interleaved matrix into cols floats.
void DequantizeInterleavedRow(GgmlType type, const uint8_t* data, int64_t cols, int64_t r, float* dst);
// y[t*ldy + r] = sum_c W[r][c] x[t*ldx + c] for rows [r0, r1) (multiples of 16) and all tokens.
void MatMulInterleaved(GgmlType type, const uint8_t* data, int64_t cols, const float* x,
                       int64_t ldx, int64_t num_tokens, float* y, int64_t ldy, int64_t r0, int64_t r1);

}  // namespace peng::kernels
