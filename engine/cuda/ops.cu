// Kernels behind engine/cuda/ops.h. One block per token row for the row ops; grid-stride loops
// for the elementwise ones. Reductions are float32 (warp shuffles, then one value per warp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "engine/cuda/ops.h"

namespace peng::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(int64_t n, int per_block = kThreads) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

__device__ __forceinline__ Bf16 ToBf16Bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ float BlockSum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = lane < warps ? shared[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // every thread of the block holds the sum
}

__global__ void GatherRowsKernel(const uint8_t* table, size_t row_bytes, const int32_t* ids,
                                 uint8_t* dst) {
  const uint8_t* src = table + static_cast<size_t>(ids[blockIdx.x]) * row_bytes;
  uint8_t* out = dst + static_cast<size_t>(blockIdx.x) * row_bytes;
  if (row_bytes % 4 == 0) {
    const auto* s = reinterpret_cast<const uint32_t*>(src);
    auto* d = reinterpret_cast<uint32_t*>(out);
    for (size_t i = threadIdx.x; i < row_bytes / 4; i += blockDim.x) d[i] = s[i];
  } else {
    for (size_t i = threadIdx.x; i < row_bytes; i += blockDim.x) out[i] = src[i];
  }
}

__global__ void RmsNormKernel(const float* x, const int32_t* rows, const float* w, float eps,
                              int d, Bf16* y) {
  __shared__ float shared[32];
  const int64_t row = rows ? rows[blockIdx.x] : blockIdx.x;
  const float* xr = x + row * d;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  ss = BlockSum(ss, shared);
  const float inv = rsqrtf(ss / d + eps);
  Bf16* yr = y + static_cast<int64_t>(blockIdx.x) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) yr[i] = ToBf16Bits(xr[i] * inv * w[i]);
}

__device__ __forceinline__ void StoreRow(const float* src, int n, kernels::KvFormat format,
                                         uint8_t* dst) {
  switch (format) {
    case kernels::KvFormat::kF32:
      for (int i = threadIdx.x; i < n; i += blockDim.x) reinterpret_cast<float*>(dst)[i] = src[i];
      break;
    case kernels::KvFormat::kF16:
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        reinterpret_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
      }
      break;
    case kernels::KvFormat::kBF16:
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        reinterpret_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
      }
      break;
  }
}

// One block per token; the token's q|k|v row is staged in shared memory.
__global__ void QkvEpilogueKernel(const float* qkv, const float* bias, const float* inv_freq,
                                  const int32_t* pos, const int32_t* seq, QkvShape s,
                                  KvStoreTarget kv, float* q_out) {
  extern __shared__ float row[];
  const int64_t t = blockIdx.x;
  const int hd = s.head_dim;
  const int qd = s.num_heads * hd, kvd = s.num_kv_heads * hd, width = qd + 2 * kvd;
  const float* src = qkv + t * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) row[i] = src[i] + (bias ? bias[i] : 0.0f);
  __syncthreads();

  // RoPE over q and k heads: one thread per (head, rotated pair). Angles in double, like the
  // CPU worker (positions reach 1e5 and more).
  const int half = s.rope_dim / 2;
  const int rotated = (s.num_heads + s.num_kv_heads) * half;
  const double p = pos[t];
  for (int j = threadIdx.x; j < rotated; j += blockDim.x) {
    const int head = j / half, i = j % half;
    float* v = row + head * hd;  // k heads follow the q heads directly
    const bool inter = s.rope_style == kernels::RopeStyle::kInterleaved;
    const int a = inter ? 2 * i : i, b = inter ? 2 * i + 1 : i + half;
    double sn, cs;
    sincos(p * static_cast<double>(inv_freq[i]), &sn, &cs);
    const float c = static_cast<float>(cs), sf = static_cast<float>(sn);
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * sf;
    v[b] = x0 * sf + x1 * c;
  }
  __syncthreads();

  for (int i = threadIdx.x; i < qd; i += blockDim.x) q_out[t * qd + i] = row[i];
  const int64_t position = pos[t];
  const size_t elem = kernels::KvFormat::kF32 == kv.format ? 4 : 2;
  const size_t row_bytes = elem * hd;
  for (int h = 0; h < s.num_kv_heads; ++h) {
    const int32_t page =
        kv.page_table[(static_cast<int64_t>(seq[t]) * s.num_kv_heads + h) * kv.max_pages +
                      position / kv.tokens_per_page];
    uint8_t* k_row = kv.base + page * kv.page_bytes + (position % kv.tokens_per_page) * row_bytes;
    uint8_t* v_row = k_row + static_cast<size_t>(kv.tokens_per_page) * row_bytes;
    StoreRow(row + qd + h * hd, hd, kv.format, k_row);
    StoreRow(row + qd + kvd + h * hd, hd, kv.format, v_row);
  }
}

__global__ void SwiGluKernel(const float* gu, int64_t n, int ffn, Bf16* out) {
  const int64_t total = n * ffn;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / ffn, c = i % ffn;
    const float g = gu[t * 2 * ffn + c], u = gu[t * 2 * ffn + ffn + c];
    out[i] = ToBf16Bits(g / (1.0f + __expf(-g)) * u);
  }
}

__global__ void CastKernel(const float* src, int64_t n, Bf16* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = ToBf16Bits(src[i]);
  }
}

}  // namespace

cudaError_t GatherRows(const uint8_t* table, size_t row_bytes, const int32_t* ids, int64_t n,
                       uint8_t* dst, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  GatherRowsKernel<<<static_cast<unsigned>(n), 128, 0, stream>>>(table, row_bytes, ids, dst);
  return cudaGetLastError();
}

cudaError_t RmsNormToBf16(const float* x, const int32_t* rows, const float* w, float eps, int d,
                          int64_t n, Bf16* y, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  RmsNormKernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, rows, w, eps, d, y);
  return cudaGetLastError();
}

cudaError_t QkvEpilogue(const float* qkv, const float* bias, const float* inv_freq,
                        const int32_t* pos, const int32_t* seq, int64_t n, const QkvShape& shape,
                        const KvStoreTarget& kv, float* q_out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const size_t shared =
      sizeof(float) * (shape.num_heads + 2 * shape.num_kv_heads) * static_cast<size_t>(shape.head_dim);
  if (shared > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        QkvEpilogueKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (err != cudaSuccess) return err;
  }
  QkvEpilogueKernel<<<static_cast<unsigned>(n), kThreads, shared, stream>>>(
      qkv, bias, inv_freq, pos, seq, shape, kv, q_out);
  return cudaGetLastError();
}

cudaError_t SwiGluToBf16(const float* gu, int64_t n, int ffn, Bf16* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluKernel<<<Blocks(n * ffn), kThreads, 0, stream>>>(gu, n, ffn, out);
  return cudaGetLastError();
}

cudaError_t CastToBf16(const float* src, int64_t n, Bf16* dst, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  CastKernel<<<Blocks(n), kThreads, 0, stream>>>(src, n, dst);
  return cudaGetLastError();
}

}  // namespace peng::cuda
