// KV element formats shared by the page pool (memory/) and the attention kernels, and the byte
// layout of one page. A page holds `tokens` tokens of ONE (sequence, layer, kv-head):
//   dense (f32, f16, bf16): keys as [tokens x head_dim] rows, then values the same shape;
//   quantized (K8V8, K8V4, K4V2 — LeanKV's tiers): per token, asymmetric min/max quantization
//     per group of head_dim; segments: K codes, K meta, V codes, V meta, one float importance
//     score and one int32 position per token, each segment 16-byte aligned. Codes are packed
//     little-endian into 16-bit words (code i of a word at bits [i·bits, (i+1)·bits)); meta is
//     fp16 (scale, zero) per group, value = code·scale + zero.
// Plain data and constexpr functions; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace peng::kernels {

enum class KvFormat : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kK8V8 = 3, kK8V4 = 4, kK4V2 = 5 };

constexpr bool IsQuantized(KvFormat f) { return f == KvFormat::kK8V8 || f == KvFormat::kK8V4 || f == KvFormat::kK4V2; }

// Bytes of one element of a dense format (0 for quantized formats: use KvPageSegments).
constexpr size_t KvFormatBytes(KvFormat f) {
  return f == KvFormat::kF32 ? 4 : (f == KvFormat::kF16 || f == KvFormat::kBF16) ? 2 : 0;
}

// Bits and groups (along head_dim) of the keys and values of a quantized format. Grouping as
// LeanKV's defaults: 1 group at 8 bits, 2 at 4 bits, 4 at 2 bits.
struct KvQuant {
  int k_bits = 0, k_groups = 0, v_bits = 0, v_groups = 0;
};
constexpr KvQuant QuantOf(KvFormat f) {
  return f == KvFormat::kK8V8 ? KvQuant{8, 1, 8, 1}
         : f == KvFormat::kK8V4 ? KvQuant{8, 1, 4, 2}
         : f == KvFormat::kK4V2 ? KvQuant{4, 2, 2, 4}
                                : KvQuant{};
}

constexpr size_t AlignUp16(size_t n) { return (n + 15) / 16 * 16; }

// Offsets (bytes from the page start) and strides of one page's segments.
struct KvPageSegments {
  size_t k_row = 0, v_row = 0;        // bytes per token: dense rows or packed codes
  size_t k_meta_row = 0, v_meta_row = 0;  // bytes of (scale, zero) fp16 pairs per token
  size_t k = 0, k_meta = 0, v = 0, v_meta = 0, scores = 0, positions = 0;
  size_t page_bytes = 0;
};

constexpr KvPageSegments PageSegmentsOf(KvFormat f, int head_dim, int tokens) {
  KvPageSegments s;
  const size_t t = static_cast<size_t>(tokens), hd = static_cast<size_t>(head_dim);
  if (!IsQuantized(f)) {
    s.k_row = s.v_row = KvFormatBytes(f) * hd;
    s.v = s.k_row * t;
    s.page_bytes = 2 * s.k_row * t;
    return s;
  }
  const KvQuant q = QuantOf(f);
  s.k_row = (hd * q.k_bits + 15) / 16 * 2;  // whole 16-bit words
  s.v_row = (hd * q.v_bits + 15) / 16 * 2;
  s.k_meta_row = 4 * static_cast<size_t>(q.k_groups);
  s.v_meta_row = 4 * static_cast<size_t>(q.v_groups);
  s.k_meta = AlignUp16(s.k + s.k_row * t);
  s.v = AlignUp16(s.k_meta + s.k_meta_row * t);
  s.v_meta = AlignUp16(s.v + s.v_row * t);
  s.scores = AlignUp16(s.v_meta + s.v_meta_row * t);
  s.positions = AlignUp16(s.scores + 4 * t);
  s.page_bytes = AlignUp16(s.positions + 4 * t);
  return s;
}

// Bytes one token of one kv-head costs in a full page, metadata included.
constexpr double KvBytesPerToken(KvFormat f, int head_dim, int tokens_per_page) {
  return static_cast<double>(PageSegmentsOf(f, head_dim, tokens_per_page).page_bytes) / tokens_per_page;
}

constexpr const char* KvFormatName(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return "f32";
    case KvFormat::kF16: return "f16";
    case KvFormat::kBF16: return "bf16";
    case KvFormat::kK8V8: return "k8v8";
    case KvFormat::kK8V4: return "k8v4";
    case KvFormat::kK4V2: return "k4v2";
  }
  return "?";
}

// "f32" | "f16" | "bf16" | "k8v8" | "k8v4" | "k4v2"; false for anything else.
constexpr bool ParseKvFormat(std::string_view name, KvFormat* out) {
  for (KvFormat f : {KvFormat::kF32, KvFormat::kF16, KvFormat::kBF16, KvFormat::kK8V8, KvFormat::kK8V4,
                     KvFormat::kK4V2}) {
    if (name == KvFormatName(f)) {
      *out = f;
      return true;
    }
  }
  return false;
}

}  // namespace peng::kernels
