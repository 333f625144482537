// Matrix multiplication with weights kept in their stored GGML type: y = x · Wᵀ.
// W is [rows x cols] (one stored row per output feature, GGML layout), x is [tokens x cols]
// float32. Quantized blocks are dequantized in registers and multiplied in float32 (fused), so
// activations keep full precision. Callers split the output rows across threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_types.h"

namespace peng::kernels {

struct MatrixView {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;       // of the GGML layout (also the average for interleaved data)
  bool interleaved = false;   // data is in the I16 layout of interleaved.h (row() is invalid)
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
};

// True when MatMulRows has a fused path for the type (otherwise it dequantizes row by row).
bool HasFusedMatMul(GgmlType type);

// For rows [r0, r1) and all tokens: y[t*ldy + r] = sum_c W[r][c] * x[t*ldx + c]. For an
// interleaved matrix r0 and r1 must be multiples of kInterleaveRows (16). For a given matrix,
// a (row, token) result is bitwise the same whatever the batch size (batch invariance).
// `scratch` holds at least w.cols floats (used by types without a fused path).
void MatMulRows(const MatrixView& w, const float* x, int64_t ldx, int64_t num_tokens, float* y,
                int64_t ldy, int64_t r0, int64_t r1, float* scratch);

// Dequantizes rows [r0, r1) of w into dst (row-major, w.cols floats per row).
void DequantizeRows(const MatrixView& w, int64_t r0, int64_t r1, float* dst);

}  // namespace peng::kernels
