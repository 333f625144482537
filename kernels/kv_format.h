// KV element formats shared by the page pool (memory/) and the attention kernels, and the byte
// layout of one page. A page holds `tokens` tokens of ONE (sequence, layer, kv-head):
//   dense (f32, f16, bf16): keys (in key-lane blocks on the CPU: KeyLanes below), then values
//     as [tokens x head_dim] rows;
//   quantized (LeanKV's tiers: any bits 1/2/4/8 and groups 1/2/4 for keys and values, e.g.
//     K8V8, K8V4, K4V2): per token, asymmetric min/max quantization per group of head_dim; segments: K codes, K meta, V codes, V meta, one float importance
//     score and one int32 position per token, each segment 16-byte aligned. Codes are packed
//     little-endian into 16-bit words (code i of a word at bits [i·bits, (i+1)·bits)); meta is
//     fp16 (scale, zero) per group, value = code·scale + zero.
// Plain data and constexpr functions; thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace peng::kernels {

// Bits and groups (along head_dim) of the keys and values of a quantized format: bits 1, 2, 4
// or 8 (ranges 1/3/15/255), groups 1, 2 or 4, chosen per tier in the config.
struct KvQuant {
  int k_bits = 0, k_groups = 0, v_bits = 0, v_groups = 0;
  constexpr bool operator==(const KvQuant& o) const {  // (spelled out: CUDA sources are C++17)
    return k_bits == o.k_bits && k_groups == o.k_groups && v_bits == o.v_bits && v_groups == o.v_groups;
  }
};

namespace kv_format_internal {
constexpr int BitsIndex(int bits) { return bits == 1 ? 0 : bits == 2 ? 1 : bits == 4 ? 2 : bits == 8 ? 3 : -1; }
constexpr int GroupsIndex(int groups) { return groups == 1 ? 0 : groups == 2 ? 1 : groups == 4 ? 2 : -1; }
// Quantized formats are 0x100 | k bits index << 6 | k groups index << 4 | v bits << 2 | v groups.
constexpr uint16_t Code(int k_bits, int k_groups, int v_bits, int v_groups) {
  return static_cast<uint16_t>(0x100 | BitsIndex(k_bits) << 6 | GroupsIndex(k_groups) << 4 |
                               BitsIndex(v_bits) << 2 | GroupsIndex(v_groups));
}
}  // namespace kv_format_internal

// A KV format: dense (f32, f16, bf16) or per-token quantized with any valid KvQuant. The named
// quantized presets are LeanKV's tiers with its default grouping (1 group at 8 bits, 2 at 4,
// 4 at 2 and 1). kQuantAny is not a page format: it names the attention kernels that read
// bits and groups from each span at run time (kernels/gen/templates/attention_cpu.h).
enum class KvFormat : uint16_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kK8V8 = kv_format_internal::Code(8, 1, 8, 1),
  kK8V4 = kv_format_internal::Code(8, 1, 4, 2),
  kK4V2 = kv_format_internal::Code(4, 2, 2, 4),
  kQuantAny = 0x1ff,
};

constexpr bool IsQuantized(KvFormat f) { return (static_cast<uint16_t>(f) & 0x100) != 0; }

// LeanKV's usual grouping for a bit width: 1 group at 8 bits, 2 at 4, 4 at 2 and 1.
constexpr int DefaultKvGroups(int bits) { return bits == 8 ? 1 : bits == 4 ? 2 : 4; }

// True when q is a quantized format this build can store and attend over.
constexpr bool ValidKvQuant(const KvQuant& q) {
  using namespace kv_format_internal;
  return BitsIndex(q.k_bits) >= 0 && BitsIndex(q.v_bits) >= 0 && GroupsIndex(q.k_groups) >= 0 &&
         GroupsIndex(q.v_groups) >= 0;
}

// The format of a valid KvQuant.
constexpr KvFormat QuantFormat(const KvQuant& q) {
  return static_cast<KvFormat>(kv_format_internal::Code(q.k_bits, q.k_groups, q.v_bits, q.v_groups));
}

// Bytes of one element of a dense format (0 for quantized formats: use KvPageSegments).
constexpr size_t KvFormatBytes(KvFormat f) {
  return f == KvFormat::kF32 ? 4 : (f == KvFormat::kF16 || f == KvFormat::kBF16) ? 2 : 0;
}

// Bits and groups of a quantized format (all zero for dense formats and kQuantAny).
constexpr KvQuant QuantOf(KvFormat f) {
  if (!IsQuantized(f) || f == KvFormat::kQuantAny) return KvQuant{};
  constexpr int kBits[4] = {1, 2, 4, 8}, kGroups[4] = {1, 2, 4, 0};
  const uint16_t c = static_cast<uint16_t>(f);
  return KvQuant{kBits[(c >> 6) & 3], kGroups[(c >> 4) & 3], kBits[(c >> 2) & 3], kGroups[c & 3]};
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

// Dense pages written by the CPU stores (kernels/cpu/kv_store.h) keep their keys in blocks of
// L = KeyLanes tokens, dimension-major within a block: key (t, d) is element
// ((t / L) * head_dim + d) * L + t % L of the key segment. Attention then computes 16 tokens'
// logits with vertical FMAs and no horizontal sums. Values stay token rows, and so do the codes
// of quantized pages (L = 0: token rows). The CUDA worker's own pages keep token rows.
inline constexpr int kMaxKeyLanes = 16;
constexpr int KeyLanes(KvFormat f, int tokens_per_page) {
  return IsQuantized(f) ? 0 : tokens_per_page < kMaxKeyLanes ? tokens_per_page : kMaxKeyLanes;
}
// Element index of key (t, d) in a key segment laid out with `lanes` (0: token rows).
constexpr size_t KeyElement(int lanes, int head_dim, int64_t t, int d) {
  if (lanes == 0) return static_cast<size_t>(t) * head_dim + d;
  return (static_cast<size_t>(t / lanes) * head_dim + d) * lanes + static_cast<size_t>(t % lanes);
}

// Bytes one token of one kv-head costs in a full page, metadata included.
constexpr double KvBytesPerToken(KvFormat f, int head_dim, int tokens_per_page) {
  return static_cast<double>(PageSegmentsOf(f, head_dim, tokens_per_page).page_bytes) / tokens_per_page;
}

// "f32", "f16", "bf16", or k<bits>v<bits> for a quantized format with the default grouping
// (e.g. "k8v4"), else k<bits>g<groups>v<bits>g<groups> (e.g. "k8g2v4g4"); "quant-any" for
// kQuantAny. The returned string lives as long as the program.
const char* KvFormatName(KvFormat f);

// Parses KvFormatName's spellings; a quantized format may also spell out default groups
// ("k8g1v4g2" = "k8v4"). False for anything else, including bits or groups out of range.
bool ParseKvFormat(std::string_view name, KvFormat* out);

// What ParseKvFormat accepts, for error messages.
inline constexpr char kKvFormatSyntax[] =
    "f32, f16, bf16, or k<bits>[g<groups>]v<bits>[g<groups>] with bits 1, 2, 4, 8 and groups 1, 2, 4 "
    "(e.g. k8v8, k8v4, k4v2, k8g2v4g4)";

}  // namespace peng::kernels
