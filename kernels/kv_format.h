// KV element formats shared by the page pool (memory/) and the attention kernels. A page of one
// (sequence, layer, kv-head) stores `tokens_per_page` keys, then as many values, each head_dim
// elements in this format.
#pragma once

#include <cstddef>
#include <cstdint>

namespace peng::kernels {

enum class KvFormat : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline size_t KvFormatBytes(KvFormat f) { return f == KvFormat::kF32 ? 4 : 2; }
inline const char* KvFormatName(KvFormat f) {
  return f == KvFormat::kF32 ? "f32" : f == KvFormat::kF16 ? "f16" : "bf16";
}

}  // namespace peng::kernels
