#include "kernels/cpu/kv_store.h"

#include <cstring>

#include "kernels/cpu/fp16.h"

namespace peng::kernels {

void StoreKvRow(const float* src, KvFormat format, int64_t n, void* dst) {
  switch (format) {
    case KvFormat::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case KvFormat::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = Fp32ToFp16(src[i]);
      return;
    }
    case KvFormat::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {  // round to nearest even
        uint32_t bits;
        std::memcpy(&bits, &src[i], 4);
        d[i] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
      }
      return;
    }
  }
}

void LoadKvRow(const void* src, KvFormat format, int64_t n, float* dst) {
  const auto* h = static_cast<const uint16_t*>(src);
  switch (format) {
    case KvFormat::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case KvFormat::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Fp16ToFp32(h[i]);
      return;
    case KvFormat::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFp32(h[i]);
      return;
  }
}

}  // namespace peng::kernels
