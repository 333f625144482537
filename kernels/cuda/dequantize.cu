#include "kernels/cuda/dequantize.h"

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace peng::kernels::cuda {
namespace {

__device__ __forceinline__ float Half(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// One thread decodes one 32-element block (or one 32-element slice of a K-quant super-block).
__global__ void DequantQ4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= nb) return;
  const float d = Half(b[i].d);
  for (int j = 0; j < 16; ++j) {
    y[i * 32 + j] = d * ((b[i].qs[j] & 0x0f) - 8);
    y[i * 32 + j + 16] = d * ((b[i].qs[j] >> 4) - 8);
  }
}

__global__ void DequantQ4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= nb) return;
  const float d = Half(b[i].d), m = Half(b[i].m);
  for (int j = 0; j < 16; ++j) {
    y[i * 32 + j] = d * (b[i].qs[j] & 0x0f) + m;
    y[i * 32 + j + 16] = d * (b[i].qs[j] >> 4) + m;
  }
}

template <typename Block, bool kHasMin>
__global__ void DequantQ5(const Block* b, float* y, int64_t nb) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= nb) return;
  const float d = Half(b[i].d);
  float m = 0.f;
  if constexpr (kHasMin) m = Half(b[i].m);
  const uint32_t qh = b[i].qh[0] | (uint32_t(b[i].qh[1]) << 8) | (uint32_t(b[i].qh[2]) << 16) |
                      (uint32_t(b[i].qh[3]) << 24);
  const int offset = kHasMin ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int hi0 = ((qh >> j) << 4) & 0x10;
    const int hi1 = (qh >> (j + 12)) & 0x10;
    y[i * 32 + j] = d * (((b[i].qs[j] & 0x0f) | hi0) - offset) + m;
    y[i * 32 + j + 16] = d * (((b[i].qs[j] >> 4) | hi1) - offset) + m;
  }
}

__global__ void DequantQ8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= nb) return;
  const float d = Half(b[i].d);
  for (int j = 0; j < 32; ++j) y[i * 32 + j] = d * b[i].qs[j];
}

__device__ __forceinline__ void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// K-quants: thread s of a super-block decodes sub-block s (32 elements), 8 threads per block.
template <bool kFive>
__global__ void DequantQ45_K(const uint8_t* raw, float* y, int64_t nb) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= nb * 8) return;
  const int64_t i = t / 8;
  const int s = int(t % 8), pair = s / 2, upper = s % 2;
  const uint8_t* scales;
  const uint8_t* qs;
  const uint8_t* qh = nullptr;
  float d, dmin;
  if constexpr (kFive) {
    const auto* b = reinterpret_cast<const BlockQ5_K*>(raw) + i;
    d = Half(b->d); dmin = Half(b->dmin); scales = b->scales; qs = b->qs; qh = b->qh;
  } else {
    const auto* b = reinterpret_cast<const BlockQ4_K*>(raw) + i;
    d = Half(b->d); dmin = Half(b->dmin); scales = b->scales; qs = b->qs;
  }
  int sc, m;
  ScaleMinK4(s, scales, &sc, &m);
  const float d1 = d * sc, m1 = dmin * m;
  const uint8_t* q = qs + pair * 32;
  const uint8_t hmask = uint8_t(1u << s);
  float* out = y + i * 256 + s * 32;
  for (int l = 0; l < 32; ++l) {
    int code = upper ? (q[l] >> 4) : (q[l] & 0x0f);
    if constexpr (kFive) code += (qh[l] & hmask) ? 16 : 0;
    out[l] = d1 * code - m1;
  }
}

__global__ void DequantQ6_K(const BlockQ6_K* b, float* y, int64_t nb) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= nb * 2) return;
  const int64_t i = t / 2;
  const int half = int(t % 2);
  const float d = Half(b[i].d);
  const uint8_t* ql = b[i].ql + half * 64;
  const uint8_t* qh = b[i].qh + half * 32;
  const int8_t* sc = b[i].scales + half * 8;
  float* out = y + i * 256 + half * 128;
  for (int l = 0; l < 32; ++l) {
    const int is = l / 16;
    out[l] = d * sc[is] * (((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32);
    out[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
    out[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
    out[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
  }
}

__global__ void ConvertF16(const uint16_t* x, float* y, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = Half(x[i]);
}

__global__ void ConvertBF16(const uint16_t* x, float* y, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __uint_as_float(uint32_t(x[i]) << 16);
}

inline unsigned Grid(int64_t threads, int block) { return unsigned((threads + block - 1) / block); }

}  // namespace

bool DequantizeToF32(GgmlType type, const void* src, float* dst, int64_t n, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const int64_t nb32 = n / 32, nb256 = n / 256;
  switch (type) {
    case GgmlType::kF32:
      return cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream) ==
             cudaSuccess;
    case GgmlType::kF16:
      ConvertF16<<<Grid(n, kBlock), kBlock, 0, stream>>>(static_cast<const uint16_t*>(src), dst, n);
      return true;
    case GgmlType::kBF16:
      ConvertBF16<<<Grid(n, kBlock), kBlock, 0, stream>>>(static_cast<const uint16_t*>(src), dst, n);
      return true;
    case GgmlType::kQ4_0:
      DequantQ4_0<<<Grid(nb32, kBlock), kBlock, 0, stream>>>(static_cast<const BlockQ4_0*>(src), dst, nb32);
      return true;
    case GgmlType::kQ4_1:
      DequantQ4_1<<<Grid(nb32, kBlock), kBlock, 0, stream>>>(static_cast<const BlockQ4_1*>(src), dst, nb32);
      return true;
    case GgmlType::kQ5_0:
      DequantQ5<BlockQ5_0, false><<<Grid(nb32, kBlock), kBlock, 0, stream>>>(
          static_cast<const BlockQ5_0*>(src), dst, nb32);
      return true;
    case GgmlType::kQ5_1:
      DequantQ5<BlockQ5_1, true><<<Grid(nb32, kBlock), kBlock, 0, stream>>>(
          static_cast<const BlockQ5_1*>(src), dst, nb32);
      return true;
    case GgmlType::kQ8_0:
      DequantQ8_0<<<Grid(nb32, kBlock), kBlock, 0, stream>>>(static_cast<const BlockQ8_0*>(src), dst, nb32);
      return true;
    case GgmlType::kQ4_K:
      DequantQ45_K<false><<<Grid(nb256 * 8, kBlock), kBlock, 0, stream>>>(
          static_cast<const uint8_t*>(src), dst, nb256);
      return true;
    case GgmlType::kQ5_K:
      DequantQ45_K<true><<<Grid(nb256 * 8, kBlock), kBlock, 0, stream>>>(
          static_cast<const uint8_t*>(src), dst, nb256);
      return true;
    case GgmlType::kQ6_K:
      DequantQ6_K<<<Grid(nb256 * 2, kBlock), kBlock, 0, stream>>>(static_cast<const BlockQ6_K*>(src), dst, nb256);
      return true;
    default:
      return false;
  }
}

}  // namespace peng::kernels::cuda
