// Elementwise and row-wise CPU operators of the Llama-family forward pass. Raw pointers, no
// allocation, no threads: the engine splits work across its pool.
#pragma once

#include <cstdint>

namespace peng::kernels {

// y = x / rms(x) * weight over one row of n.
void RmsNormRow(const float* x, const float* weight, float eps, int64_t n, float* y);

enum class RopeStyle {
  kInterleaved,  // rotate pairs (2i, 2i+1): GGUF llama-arch (Q/K rows permuted by the converter)
  kNeox,         // rotate pairs (i, i + d/2): Hugging Face layout, qwen2 in GGUF
};

// Precomputed inverse frequencies: inv_freq[i] = base^(-2i/rot_dim) / linear_scale.
void RopeInvFreq(int rot_dim, float base, float linear_scale, float* inv_freq);

// RoPE in two steps, so that a position's angles serve every layer and head: cs[i], sn[i]
// (i < rot_dim / 2) for position pos, then the rotation of the first rot_dim dims of each of
// n_heads vectors of head_dim.
void RopeAngles(int rot_dim, int64_t pos, const float* inv_freq, float* cs, float* sn);
void RopeRotate(float* x, int n_heads, int head_dim, int rot_dim, const float* cs, const float* sn,
                RopeStyle style);

// gate[i] = silu(gate[i]) * up[i]
void SiluMulRow(float* gate, const float* up, int64_t n);

// In-place softmax of a row; returns log of the normaliser (max + log sum exp).
float SoftmaxRow(float* x, int64_t n);

// log(sum exp x[i]) over a row, computed as SoftmaxRow computes its normaliser; x is unchanged.
// max_out (optional): the row's max, which the normaliser is taken around.
float LogSumExp(const float* x, int64_t n, float* max_out = nullptr);

// out[i] = exp(x[i] - max) over a row (out may be x); returns sum of out, *max_out = max.
double ExpShiftedRow(const float* x, int64_t n, float* out, float* max_out);

// The indices i of x[0, n) with x[i] >= threshold, ascending, into ids (room for n); returns
// how many, and (if sum is not null) *sum = the sum of those x[i].
int64_t SelectAtLeast(const float* x, int64_t n, float threshold, int32_t* ids, double* sum = nullptr);

// Index of the first maximum of x[0, n) (ties: the lowest index, as std::max_element), n > 0.
// NaN entries are passed over; 0 when there is nothing else.
int64_t ArgMax(const float* x, int64_t n);

}  // namespace peng::kernels
