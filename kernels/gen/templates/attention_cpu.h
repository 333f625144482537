// CPU attention template: the generator instantiates it once per variant and ISA
// (kernels/gen/generate.py). A variant is AttnSpec<phase, kv_format, head_dim, group,
// score_mod, mask_mod, reduction>; everything below is compile-time in those parameters.
//
// Shape of the computation (AttentionEngine's decomposition): rows are (query token, group
// head) pairs of one kv-head; the kv range is walked in tiles of kTile tokens taken from the
// page spans; each tile gives a [rows x kTile] block of logits (q·k, then score_mod, then
// mask_mod → −inf), and the row reduction folds the block into per-row state (softmax: running
// max m, sum l and output o rescaled by exp(m − m'); sigmoid: o += σ(s)·v). Decode is one query
// (rows = the group) over a split [kv_begin, kv_end) followed by a log-sum-exp combine;
// prefill is a tile of queries over the whole history. Framework-free; no allocation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/attention/args.h"
#include "kernels/attention/variant.h"
#include "kernels/gen/templates/attn_spec.h"
#include "kernels/gen/templates/simd_cpu.h"

namespace peng::kernels::gen::PENG_GEN_ISA_NS {

template <AttentionPhase kPhase_, KvFormat kFormat_, int kHeadDim_, int kGroup_, ScoreMod kScore_,
          MaskMod kMask_, Reduction kReduction_>
using AttnSpec = AttnTuple<kPhase_, kFormat_, kHeadDim_, kGroup_, kScore_, kMask_, kReduction_>;

inline constexpr int kTile = 16;  // kv tokens per logits block
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// --- KV page format hooks --------------------------------------------------------------------
// Quantized pages: rows [t0, t0 + n) of a span's keys (kValue = false) or values dequantized
// into `scratch` as floats, [n x HD] (codes · scale + zero per group, metadata from the span).
// Dense pages are read in place: keys by key-lane block (RowBlock::Dots), values by row.
template <int HD, int kBits>
inline void DequantRow(const uint8_t* codes, const uint16_t* meta, int groups, float* dst) {
  constexpr int kMask = (1 << kBits) - 1;
  const int per_group = HD / groups;
  for (int g = 0; g < groups; ++g) {
    const float scale = Fp16ToFp32(meta[2 * g]), zero = Fp16ToFp32(meta[2 * g + 1]);
    if (per_group % 16 == 0) {
      for (int i = 0; i < per_group; i += 16) {
        Simd::DequantCodes16<kBits>(codes, g * per_group + i, scale, zero, dst + g * per_group + i);
      }
    } else {
      for (int i = g * per_group; i < (g + 1) * per_group; ++i) {
        const int code = (codes[i * kBits / 8] >> (i * kBits % 8)) & kMask;
        dst[i] = static_cast<float>(code) * scale + zero;
      }
    }
  }
}

// Cache lines [lo, lo + 64 * lines) to request ahead of use (lo 64-byte aligned).
struct LineRange {
  uintptr_t lo = 0, lines = 0;
  static LineRange Of(const void* base, size_t row_bytes, int64_t first, int n) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(base) + first * row_bytes, end = begin + n * row_bytes;
    const uintptr_t lo = begin & ~uintptr_t{63};
    return {lo, (end - lo + 63) / 64};
  }
  void Request(uintptr_t l) const { __builtin_prefetch(reinterpret_cast<const void*>(lo + 64 * l), 0, 3); }
  // Step i of n: line i, and at the last step every line from n on.
  void RequestStep(int i, int n) const {
    if (static_cast<uintptr_t>(i) < lines) Request(i);
    if (i == n - 1) {
      for (uintptr_t l = n; l < lines; ++l) Request(l);
    }
  }
};

// n rows of quantized codes (row stride `row`, meta stride `meta_row`) into scratch; row t
// also requests step t of the ranges `ahead` (codes and meta of a later tile; may be empty).
template <int HD, int kBits>
inline void DequantRows(const uint8_t* codes, const uint8_t* meta, size_t row, size_t meta_row, int groups,
                        int n, float* scratch, const LineRange* ahead) {
  for (int t = 0; t < n; ++t) {
    ahead[0].RequestStep(t, n);
    ahead[1].RequestStep(t, n);
    DequantRow<HD, kBits>(codes + t * row, reinterpret_cast<const uint16_t*>(meta + t * meta_row), groups,
                          scratch + t * HD);
  }
}

// Rows [t0, t0 + n) of a quantized span's keys or values as floats in scratch. ahead[0..1]:
// the codes and meta lines of a later tile to request meanwhile (see RowBlock::Run).
template <KvFormat F, int HD, bool kValue>
inline const float* PageRows(const KvSpan& span, int64_t t0, int n, float* scratch, const LineRange* ahead) {
  static_assert(IsQuantized(F), "dense keys and values are read in place");
  const void* base = kValue ? span.v : span.k;
  // A named format has its bits and groups at compile time; kQuantAny reads them from the
  // span (one switch per tile).
  const KvFormat f = F == KvFormat::kQuantAny ? span.format : F;
  const KvQuant q = QuantOf(f);
  const KvPageSegments seg = PageSegmentsOf(f, HD, 1);
  const int bits = kValue ? q.v_bits : q.k_bits, groups = kValue ? q.v_groups : q.k_groups;
  const size_t row = kValue ? seg.v_row : seg.k_row, meta_row = kValue ? seg.v_meta_row : seg.k_meta_row;
  const uint8_t* codes = static_cast<const uint8_t*>(base) + t0 * row;
  const uint8_t* meta = static_cast<const uint8_t*>(kValue ? span.v_meta : span.k_meta) + t0 * meta_row;
  switch (bits) {
    case 8: DequantRows<HD, 8>(codes, meta, row, meta_row, groups, n, scratch, ahead); break;
    case 4: DequantRows<HD, 4>(codes, meta, row, meta_row, groups, n, scratch, ahead); break;
    case 2: DequantRows<HD, 2>(codes, meta, row, meta_row, groups, n, scratch, ahead); break;
    default: DequantRows<HD, 1>(codes, meta, row, meta_row, groups, n, scratch, ahead); break;
  }
  return scratch;
}

// kW consecutive elements of a dense format from element i of p, as floats.
template <KvFormat F>
inline typename Simd::Vec LoadDense(const void* p, size_t i) {
  if constexpr (F == KvFormat::kF32) return Simd::Load(static_cast<const float*>(p) + i);
  else if constexpr (F == KvFormat::kF16) return Simd::LoadF16(static_cast<const uint16_t*>(p) + i);
  else return Simd::LoadBf16(static_cast<const uint16_t*>(p) + i);
}

template <KvFormat F>
inline float DenseElement(const void* p, size_t i) {
  if constexpr (F == KvFormat::kF32) return static_cast<const float*>(p)[i];
  else if constexpr (F == KvFormat::kF16) return Fp16ToFp32(static_cast<const uint16_t*>(p)[i]);
  else return Bf16ToFp32(static_cast<const uint16_t*>(p)[i]);
}

// n consecutive elements of a dense format from element i of p into dst as floats (exact).
template <KvFormat F>
inline void ConvertRun(const void* p, size_t i, int n, float* dst) {
  int j = 0;
  for (; j + Simd::kW <= n; j += Simd::kW) Simd::Store(dst + j, LoadDense<F>(p, i + j));
  if (j == n) return;
#if PENG_GEN_ISA == 3
  typename Simd::Vec v;
  if constexpr (F == KvFormat::kF32) v = Simd::LoadN(static_cast<const float*>(p) + i + j, n - j);
  else if constexpr (F == KvFormat::kF16) v = Simd::LoadF16N(static_cast<const uint16_t*>(p) + i + j, n - j);
  else v = Simd::LoadBf16N(static_cast<const uint16_t*>(p) + i + j, n - j);
  Simd::StoreN(dst + j, v, n - j);
#else
  for (; j < n; ++j) dst[j] = DenseElement<F>(p, i + j);
#endif
}

// --- small vector helpers over compile-time lengths ----------------------------------------
template <int N>
inline float Dot(const float* a, const float* b) {
  if constexpr (N % Simd::kW == 0) {
    typename Simd::Vec acc0 = Simd::Zero(), acc1 = Simd::Zero();
    int i = 0;
    for (; i + 2 * Simd::kW <= N; i += 2 * Simd::kW) {
      acc0 = Simd::Fma(Simd::Load(a + i), Simd::Load(b + i), acc0);
      acc1 = Simd::Fma(Simd::Load(a + i + Simd::kW), Simd::Load(b + i + Simd::kW), acc1);
    }
    if (i < N) acc0 = Simd::Fma(Simd::Load(a + i), Simd::Load(b + i), acc0);
    return Simd::ReduceAdd(Simd::Add(acc0, acc1));
  } else {
    float s = 0;
    for (int i = 0; i < N; ++i) s += a[i] * b[i];
    return s;
  }
}

// --- score_mod and mask_mod ----------------------------------------------------------------
template <class S>
inline float ModScore(float s, int g, int64_t q_pos, int64_t kv_pos, const AttentionParams& p) {
  if constexpr (S::kScore == ScoreMod::kNone) {
    return s;
  } else if constexpr (S::kScore == ScoreMod::kScale) {
    return s * p.scale;
  } else if constexpr (S::kScore == ScoreMod::kSoftcap) {
    return p.softcap * std::tanh(s * p.scale / p.softcap);
  } else {
    return s * p.scale + p.alibi_slopes[g] * static_cast<float>(kv_pos - q_pos);
  }
}

template <class S>
inline bool Admit(int g, int64_t q_pos, int64_t kv_pos, const AttentionParams& p) {
  if constexpr (S::kMask == MaskMod::kCausal) {
    return kv_pos <= q_pos;
  } else if constexpr (S::kMask == MaskMod::kSlidingWindow) {
    return kv_pos <= q_pos && kv_pos > q_pos - p.window;
  } else if constexpr (S::kMask == MaskMod::kFull) {
    return true;
  } else {
    return (p.head_subset[g * p.subset_words + (kv_pos >> 6)] >> (kv_pos & 63)) & 1;
  }
}

// The kv range [begin, end) that can hold admitted tokens for queries at [q_lo, q_hi]: the
// block-level fast path of the masks (causal and window skip whole ranges).
template <class S>
inline void ClampRange(int64_t q_lo, int64_t q_hi, const AttentionParams& p, int64_t* begin, int64_t* end) {
  if constexpr (S::kMask == MaskMod::kCausal || S::kMask == MaskMod::kSlidingWindow) {
    *end = std::min(*end, q_hi + 1);
  }
  if constexpr (S::kMask == MaskMod::kSlidingWindow) {
    *begin = std::max(*begin, q_lo - p.window + 1);
  }
}

// --- the row block ---------------------------------------------------------------------------
// Rows r < R: query q_row[r] (HD floats), group head g_row[r], position pos_row[r]. State per
// row: o [R x HD], m, l. When raw is set, every logit after the mods and the mask is also
// stored at raw[r * raw_stride + (kv − begin)].
template <class S>
struct RowBlock {
  static constexpr int HD = S::kHeadDim;
  static constexpr int kMaxRows = 32;
  const float* q_row[kMaxRows];
  int g_row[kMaxRows];
  int64_t pos_row[kMaxRows];
  int rows = 0;
  float o[kMaxRows * HD];
  float m[kMaxRows];
  // Softmax denominators per row, kept lane by lane (one horizontal sum at Finish, not one per
  // tile).
  typename Simd::Vec l_lanes[kMaxRows];
  float k_scratch[kTile * HD], v_scratch[kTile * HD];

  void Reset() {
    std::fill(o, o + rows * HD, 0.0f);
    std::fill(m, m + rows, kNegInf);
    std::fill(l_lanes, l_lanes + rows, Simd::Zero());
  }

  // q·k of rows [r0, r0 + N) against the kTile lanes of a key-lane block (HD x kTile elements
  // of format KF at kt): two chains per row (even and odd dimensions) added at the end.
  template <KvFormat KF, int N>
  void LaneDots(const void* kt, int r0, float (*s)[kTile]) {
    static_assert(HD % 2 == 0, "key-lane dots take dimensions in pairs");
    constexpr int kVecs = kTile / Simd::kW;
    typename Simd::Vec even[N][kVecs], odd[N][kVecs];
    const float* q[N];
    for (int r = 0; r < N; ++r) {
      q[r] = q_row[r0 + r];
      for (int v = 0; v < kVecs; ++v) even[r][v] = odd[r][v] = Simd::Zero();
    }
    // The keys of the tile kPrefetchTiles ahead are requested over the steps of this loop (see
    // PrefetchCursor); only the first chunk of rows does it.
    const char* pf_k = r0 == 0 ? pf_k_ : nullptr;
    for (int d = 0; d < HD; d += 2) {
      if (pf_k != nullptr) {
        for (int l = (d / 2) * kKeyLinesPerStep; l < (d / 2 + 1) * kKeyLinesPerStep && l < kTileLines; ++l) {
          __builtin_prefetch(pf_k + 64 * l, 0, 3);
        }
      }
      typename Simd::Vec k0[kVecs], k1[kVecs];
      for (int v = 0; v < kVecs; ++v) {
        k0[v] = LoadDense<KF>(kt, static_cast<size_t>(d) * kTile + v * Simd::kW);
        k1[v] = LoadDense<KF>(kt, static_cast<size_t>(d + 1) * kTile + v * Simd::kW);
      }
      for (int r = 0; r < N; ++r) {
        const typename Simd::Vec q0 = Simd::Set1(q[r][d]), q1 = Simd::Set1(q[r][d + 1]);
        for (int v = 0; v < kVecs; ++v) {
          even[r][v] = Simd::Fma(q0, k0[v], even[r][v]);
          odd[r][v] = Simd::Fma(q1, k1[v], odd[r][v]);
        }
      }
    }
    for (int r = 0; r < N; ++r)
      for (int v = 0; v < kVecs; ++v) Simd::Store(s[r0 + r] + v * Simd::kW, Simd::Add(even[r][v], odd[r][v]));
  }

  // All rows against one key-lane block, in register-sized chunks of rows.
  template <KvFormat KF>
  void LaneDotsAllRows(const void* kt, float (*s)[kTile]) {
    constexpr int kChunk = kTile / Simd::kW == 1 ? 8 : 3;  // accumulators fit the register file
    for (int r0 = 0; r0 < rows; r0 += kChunk) {
      switch (std::min(kChunk, rows - r0)) {
        case 1: LaneDots<KF, 1>(kt, r0, s); break;
        case 2: LaneDots<KF, 2>(kt, r0, s); break;
        case 3: LaneDots<KF, 3>(kt, r0, s); break;
        case 4: if constexpr (kChunk >= 4) LaneDots<KF, 4>(kt, r0, s); break;
        case 5: if constexpr (kChunk >= 5) LaneDots<KF, 5>(kt, r0, s); break;
        case 6: if constexpr (kChunk >= 6) LaneDots<KF, 6>(kt, r0, s); break;
        case 7: if constexpr (kChunk >= 7) LaneDots<KF, 7>(kt, r0, s); break;
        default: if constexpr (kChunk >= 8) LaneDots<KF, 8>(kt, r0, s); break;
      }
    }
  }

  // q·k of every row against the n dequantized key rows in k_scratch (quantized pages).
  void RowDots(int n, float (*s)[kTile]) {
    if constexpr (HD % Simd::kW == 0) {
      // Dequantized keys are token rows: per row, kW tokens' lane-wise products, then their kW
      // horizontal sums in one fold (ReduceAddEach) rather than one sum per (row, token).
      // Rows past n are zeros, so every tile runs the same unrolled code.
      std::fill(k_scratch + n * HD, k_scratch + kTile * HD, 0.0f);
      constexpr int kVecs = HD / Simd::kW;
      for (int r = 0; r < rows; ++r) {
        typename Simd::Vec q[kVecs];
        for (int v = 0; v < kVecs; ++v) q[v] = Simd::Load(q_row[r] + v * Simd::kW);
        for (int tb = 0; tb < kTile; tb += Simd::kW) {
          typename Simd::Vec part[Simd::kW];
#pragma GCC unroll 16
          for (int j = 0; j < Simd::kW; ++j) {
            const float* kt = k_scratch + (tb + j) * HD;
            typename Simd::Vec a = Simd::Mul(q[0], Simd::Load(kt));
            for (int v = 1; v < kVecs; ++v) a = Simd::Fma(q[v], Simd::Load(kt + v * Simd::kW), a);
            part[j] = a;
          }
          Simd::ReduceAddEach(part, s[r] + tb);
        }
      }
    } else {
      for (int r = 0; r < rows; ++r)
        for (int t = 0; t < n; ++t) s[r][t] = Dot<HD>(q_row[r], k_scratch + t * HD);
    }
  }

  // Dense keys [t0, t0 + m) of a span as floats into lanes [at, at + m) of the key-lane block
  // in k_scratch (dimension-major, kTile lanes): the layout a 16-token page stores. A span with
  // fewer lanes (pages under 16 tokens) holds each dimension's tokens of a lane block side by
  // side, so every (dimension, run of tokens) is one contiguous conversion; token rows (no
  // lanes) go token by token. The index arithmetic stays out of the element loops: with a
  // division per element, 8-token pages decoded ~8x slower than 16-token ones.
  void GatherKeys(const KvSpan& span, int64_t t0, int m, int at) {
    const int lanes = span.key_lanes;
    if (lanes == 0) {
      for (int t = 0; t < m; ++t) {
        for (int d = 0; d < HD; ++d) {
          k_scratch[d * kTile + at + t] = DenseElement<S::kFormat>(span.k, static_cast<size_t>(t0 + t) * HD + d);
        }
      }
      return;
    }
    for (int done = 0; done < m;) {
      const int64_t t = t0 + done;
      const int lane = static_cast<int>(t % lanes), run = std::min(m - done, lanes - lane);
      size_t src = static_cast<size_t>(t / lanes) * HD * lanes + lane;
      float* dst = k_scratch + at + done;
      for (int d = 0; d < HD; ++d, src += lanes, dst += kTile) ConvertRun<S::kFormat>(span.k, src, run, dst);
      done += run;
    }
  }

  // Dense value rows [t0, t0 + m) of a span as floats into rows [at, at + m) of v_scratch.
  void GatherValues(const KvSpan& span, int64_t t0, int m, int at) {
    // The rows are contiguous: one run.
    ConvertRun<S::kFormat>(span.v, static_cast<size_t>(t0) * HD, m * HD, v_scratch + at * HD);
  }

  // q·k of every row against tile rows [t0, t0 + n) of one span into s[r][0, n).
  void Dots(const KvSpan& span, int64_t t0, int n, float (*s)[kTile]) {
    // Every row takes the same path whatever the block holds (one query in decode, many in
    // prefill), so a token's result never depends on how it was batched or chunked.
    if constexpr (IsQuantized(S::kFormat)) {
      PageRows<S::kFormat, HD, false>(span, t0, n, k_scratch, pf_quant_);
      RowDots(n, s);
    } else if (span.key_lanes == kTile && t0 % kTile == 0) {
      // A key-lane block as stored: 16 tokens' logits per vector, no horizontal sums
      // (against per-token dots over token rows, attention_bench: prefill 1.8x, decode in
      // cache 1.4x).
      LaneDotsAllRows<S::kFormat>(static_cast<const uint8_t*>(span.k) + KeyElement(kTile, HD, t0, 0) * KvFormatBytes(S::kFormat), s);
    } else {
      // Token rows or a tile that starts mid-block: gather into one float block, then the same
      // arithmetic (the conversion to float is exact, so the result is bitwise the same).
      GatherKeys(span, t0, n, 0);
      ZeroKeyLanes(n);
      LaneDotsAllRows<KvFormat::kF32>(k_scratch, s);
    }
  }

  // Lanes [n, kTile) of the gathered key-lane block: zeros, as a partial tile's unused lanes.
  void ZeroKeyLanes(int n) {
    for (int d = 0; d < HD; ++d) std::fill(k_scratch + d * kTile + n, k_scratch + (d + 1) * kTile, 0.0f);
  }

  // Logits of every row against tile rows [t0, t0 + n) of one span at kv position kv0.
  void Scores(const KvSpan& span, int64_t t0, int n, int64_t kv0, const AttentionParams& p, float (*s)[kTile]) {
    Dots(span, t0, n, s);
    ModAndMask(kv0, n, p, s);
  }

  // score_mod and the mask over one tile's dots (kv positions [kv0, kv0 + n)); lanes past n are
  // −inf.
  void ModAndMask(int64_t kv0, int n, const AttentionParams& p, float (*s)[kTile]) {
    if (TileAdmitsAll(kv0, n, p)) {
      // Fast path (most tiles of causal attention): no per-element mask, vector score_mod.
      for (int r = 0; r < rows; ++r) {
        if constexpr (S::kScore == ScoreMod::kScale) {
          for (int t = 0; t < n; ++t) s[r][t] *= p.scale;
        } else if constexpr (S::kScore != ScoreMod::kNone) {
          for (int t = 0; t < n; ++t) s[r][t] = ModScore<S>(s[r][t], g_row[r], pos_row[r], kv0 + t, p);
        }
        for (int t = n; t < kTile; ++t) s[r][t] = kNegInf;
      }
      return;
    }
    if constexpr (S::kMask == MaskMod::kCausal || S::kMask == MaskMod::kSlidingWindow) {
      // The tiles on the diagonal: each row admits one run of tokens, [lo, hi) of the tile.
      for (int r = 0; r < rows; ++r) {
        const int64_t q = pos_row[r];
        const int hi = static_cast<int>(std::clamp<int64_t>(q - kv0 + 1, 0, n));
        int lo = 0;
        if constexpr (S::kMask == MaskMod::kSlidingWindow) {
          lo = static_cast<int>(std::clamp<int64_t>(q - p.window + 1 - kv0, 0, hi));
        }
        for (int t = 0; t < lo; ++t) s[r][t] = kNegInf;
        if constexpr (S::kScore == ScoreMod::kScale) {
          for (int t = lo; t < hi; ++t) s[r][t] *= p.scale;
        } else if constexpr (S::kScore != ScoreMod::kNone) {
          for (int t = lo; t < hi; ++t) s[r][t] = ModScore<S>(s[r][t], g_row[r], q, kv0 + t, p);
        }
        for (int t = hi; t < kTile; ++t) s[r][t] = kNegInf;
      }
      return;
    }
    for (int r = 0; r < rows; ++r) {
      for (int t = 0; t < kTile; ++t) {
        const int64_t kv = kv0 + t;
        s[r][t] = t < n && Admit<S>(g_row[r], pos_row[r], kv, p) ? ModScore<S>(s[r][t], g_row[r], pos_row[r], kv, p)
                                                                 : kNegInf;
      }
    }
  }

  // True when every row admits every token of [kv0, kv0 + n) (mask evaluated on the block).
  bool TileAdmitsAll(int64_t kv0, int n, const AttentionParams& p) const {
    if constexpr (S::kMask == MaskMod::kFull) {
      return true;
    } else if constexpr (S::kMask == MaskMod::kHeadSubset) {
      return false;
    } else {
      int64_t lo = pos_row[0], hi = pos_row[0];
      for (int r = 1; r < rows; ++r) {
        lo = std::min(lo, pos_row[r]);
        hi = std::max(hi, pos_row[r]);
      }
      if (kv0 + n - 1 > lo) return false;  // causal: the last token is not after any query
      return S::kMask == MaskMod::kCausal || kv0 > hi - p.window;
    }
  }

  // o[r] = o[r]·alpha[r] + Σ_t p[r][t]·v[t] for rows [r0, r0 + N) over n value rows (element i
  // of row t at vals + t·HD + i, format VF): each value vector is loaded once for the N rows.
  // Every row's arithmetic is the same whatever rows share the chunk.
  template <KvFormat VF, int N>
  void AccumulateRows(int r0, const float* alpha, const float (*pt)[kTile], const void* vals, int n) {
    constexpr int kVecs = HD / Simd::kW;
    constexpr int kBlock = kVecs < 4 ? kVecs : 4;
    static_assert(kVecs % kBlock == 0, "head_dim / SIMD width must be a multiple of the block");
    for (int b = 0; b < kVecs; b += kBlock) {
      typename Simd::Vec acc[N][kBlock]{};  // all loaded below ({} quiets a false -Wuninitialized)
      for (int r = 0; r < N; ++r) {
        for (int k = 0; k < kBlock; ++k) {
          acc[r][k] = Simd::Load(o + (r0 + r) * HD + (b + k) * Simd::kW);
          // ×1 is exact: skipping it changes no bit.
          if (alpha[r0 + r] != 1.0f) acc[r][k] = Simd::Mul(acc[r][k], Simd::Set1(alpha[r0 + r]));
        }
      }
      // The values of the tile kPrefetchTiles ahead, over the tokens of this loop: the lines
      // that start inside token t's row (see PrefetchCursor). Only the first pass does it.
      const char* pf_v = r0 == 0 && b == 0 ? pf_v_ : nullptr;
      for (int t = 0; t < n; ++t) {
        if (pf_v != nullptr) {
          for (size_t at = (t * kValueRowBytes + 63) / 64 * 64; at < (t + 1) * kValueRowBytes; at += 64) {
            __builtin_prefetch(pf_v + at, 0, 3);
          }
        }
        typename Simd::Vec v[kBlock];
        for (int k = 0; k < kBlock; ++k) v[k] = LoadDense<VF>(vals, static_cast<size_t>(t) * HD + (b + k) * Simd::kW);
        for (int r = 0; r < N; ++r) {
          const typename Simd::Vec p = Simd::Set1(pt[r0 + r][t]);
          for (int k = 0; k < kBlock; ++k) acc[r][k] = Simd::Fma(p, v[k], acc[r][k]);
        }
      }
      for (int r = 0; r < N; ++r)
        for (int k = 0; k < kBlock; ++k) Simd::Store(o + (r0 + r) * HD + (b + k) * Simd::kW, acc[r][k]);
    }
  }

  template <KvFormat VF>
  void Accumulate(const float* alpha, const float (*pt)[kTile], const void* vals, int n) {
    if constexpr (HD % Simd::kW == 0) {
      constexpr int kChunk = Simd::kW == 16 ? 4 : 2;  // accumulators + one block of values fit
      for (int r0 = 0; r0 < rows; r0 += kChunk) {
        switch (std::min(kChunk, rows - r0)) {
          case 1: AccumulateRows<VF, 1>(r0, alpha, pt, vals, n); break;
          case 2: AccumulateRows<VF, 2>(r0, alpha, pt, vals, n); break;
          case 3: if constexpr (kChunk >= 3) AccumulateRows<VF, 3>(r0, alpha, pt, vals, n); break;
          default: if constexpr (kChunk >= 4) AccumulateRows<VF, 4>(r0, alpha, pt, vals, n); break;
        }
      }
    } else {
      for (int r = 0; r < rows; ++r) {
        float* orow = o + r * HD;
        for (int i = 0; i < HD; ++i) orow[i] *= alpha[r];
        for (int t = 0; t < n; ++t)
          for (int i = 0; i < HD; ++i) orow[i] += pt[r][t] * DenseElement<VF>(vals, static_cast<size_t>(t) * HD + i);
      }
    }
  }

  // Folds one tile of logits into the row state: per row the weights of the tile's tokens
  // (softmax: exp(s − m') and the rescale exp(m − m') of what came before; sigmoid: σ(s)), then
  // the values, in format VF at vals (n rows).
  template <KvFormat VF>
  void Reduce(float (*s)[kTile], const void* vals, int n) {
    alignas(64) float pt[kMaxRows][kTile];
    float alpha[kMaxRows];
    for (int r = 0; r < rows; ++r) {
      alpha[r] = 1.0f;
      if constexpr (S::kReduction == Reduction::kSoftmax) {
        typename Simd::Vec mx = Simd::Set1(kNegInf);
        for (int c = 0; c < kTile; c += Simd::kW) mx = Simd::Max(mx, Simd::Load(s[r] + c));
        // Once the running max has settled most tiles stay under it: one compare instead of a
        // horizontal max (the same m_new either way).
        const bool settled = m[r] != kNegInf && !Simd::AnyGreater(mx, m[r]);
        const float tmax = settled ? m[r] : Simd::ReduceMax(mx);
        if (tmax == kNegInf) {  // nothing admitted in this tile: the row stays as it is
          std::fill(pt[r], pt[r] + kTile, 0.0f);
          continue;
        }
        const float m_new = std::max(m[r], tmax);
        // alpha = 1 exactly when the running max holds (the common case once it has settled).
        alpha[r] = m[r] == kNegInf ? 0.0f : m_new == m[r] ? 1.0f : std::exp(m[r] - m_new);
        typename Simd::Vec sum = Simd::Zero();
        const typename Simd::Vec mv = Simd::Set1(m_new);
        for (int c = 0; c < kTile; c += Simd::kW) {
          const typename Simd::Vec e = Simd::Exp(Simd::Sub(Simd::Load(s[r] + c), mv));
          Simd::Store(pt[r] + c, e);
          sum = Simd::Add(sum, e);
        }
        l_lanes[r] = alpha[r] == 1.0f ? Simd::Add(l_lanes[r], sum)
                                      : Simd::Fma(l_lanes[r], Simd::Set1(alpha[r]), sum);
        m[r] = m_new;
      } else {
        for (int t = 0; t < kTile; ++t) pt[r][t] = s[r][t] == kNegInf ? 0.0f : 1.0f / (1.0f + std::exp(-s[r][t]));
      }
    }
    Accumulate<VF>(alpha, pt, vals, n);
  }

  // Dense keys and values are requested kPrefetchTiles tiles ahead of use, into L1: pages lie
  // anywhere in the pool (4 KB each at SmolLM2's shape), where the hardware's stream
  // prefetchers barely get going. The requests are spread evenly over the work: the keys of the
  // tile ahead over the key loop (LaneDots), its values over the value loop (AccumulateRows).
  // Issued as one burst they fill the core's miss buffers and stall the loads the arithmetic
  // waits on; issued all over the key loop they still stall it, and the value loop issues none.
  // attention_bench, decode, batch 16, scattered pages, 2 threads (docs/BENCHMARKS.md, "CPU
  // attention: keys and values prefetched over their own loops"): keys and values both over
  // the key loop 19-26 GB/s, each over their own loop 27-31.
  static constexpr int kPrefetchTiles = 2;
  // Decode: beyond those, each tile's first lines are requested into L2 kKickTiles tiles ahead
  // of the L1 requests. That starts the L2 stream prefetcher on the tile's page, which fetches
  // the rest of the page by itself, so the spread L1 requests find it in L2. The core keeps only
  // a few misses in flight of its own (the fill buffers); the streamer adds its own.
  // attention_bench --format=f16, 2 threads, decode batch 16 at context 256 / 2,048 / 8,192:
  // 15.4-15.6 / 14.6 / 14.5-15.0 GB/s without, 18.0-18.3 / 17.9-18.4 / 17.6-17.8 with
  // (docs/BENCHMARKS.md, "CPU attention: L2 kicks ahead"). In place of the L1 requests, the
  // same kicks lost (the fourth session's section "c=16 / c=1 on the Intel machine").
  static constexpr int kKickTiles = 4;
  static constexpr int kTileLines = static_cast<int>(static_cast<size_t>(kTile) * HD * KvFormatBytes(S::kFormat) / 64);
  static constexpr int kKeyLinesPerStep = (kTileLines + HD / 2 - 1) / (HD / 2);
  static constexpr size_t kValueRowBytes = HD * KvFormatBytes(S::kFormat);
  const char* pf_k_ = nullptr;  // the tile to request during the next LaneDots, or null
  const char* pf_v_ = nullptr;
  // Quantized pages: the tile kPrefetchTiles ahead, requested a line per row while the current
  // tile's keys (ranges 0-1) and values (2-3) are dequantized. Requested at all, decode went
  // 2.0-2.7x faster; a line per row rather than all at once, k8v8 another 10-30% (the burst
  // waited for miss buffers). docs/BENCHMARKS.md, "CPU attention: quantized pages prefetched".
  LineRange pf_quant_[4];
  struct PrefetchCursor {
    const KvSpan* spans;
    int num_spans, si = 0;
    int64_t t = 0, pos = 0, end = 0;  // tile offset in span si; its position; the walk's end
    // The cursor's tile (its span, first row and rows; false past the end), then moves to the
    // next one.
    bool NextTile(const KvSpan** span, int64_t* first, int* n) {
      if (si >= num_spans || pos >= end) return false;
      *span = &spans[si];
      *first = t;
      const int64_t next = std::min<int64_t>(spans[si].num_tokens, t + kTile);
      *n = static_cast<int>(next - t);
      pos += next - t;
      t = next;
      if (t >= spans[si].num_tokens) {
        ++si;
        t = 0;
      }
      return true;
    }
    // Dense: the cursor's tile as key and value addresses (null past the end).
    void Next(const char** k, const char** v) {
      *k = *v = nullptr;
      const KvSpan* span;
      int64_t first;
      int n;
      if (!NextTile(&span, &first, &n)) return;
      *k = static_cast<const char*>(span->k) + KeyElement(span->key_lanes, HD, first, 0) * KvFormatBytes(S::kFormat);
      *v = static_cast<const char*>(span->v) + first * HD * KvFormatBytes(S::kFormat);
    }
    // Dense: requests every line of the cursor's tile now, then moves on. Keys: the lane block
    // from the tile's first token on (its rows interleave the block's tokens), or its token rows.
    void RequestNextDense() {
      const KvSpan* span;
      int64_t first;
      int n;
      if (!NextTile(&span, &first, &n)) return;
      const size_t bytes = KvFormatBytes(S::kFormat);
      const int lanes = span->key_lanes;
      const LineRange keys = LineRange::Of(
          static_cast<const uint8_t*>(span->k) + KeyElement(lanes, HD, first, 0) * bytes, bytes,
          0, lanes == 0 ? n * HD : (HD - 1) * lanes + static_cast<int>(std::min<int64_t>(lanes - first % lanes, n)));
      const LineRange values = LineRange::Of(span->v, HD * bytes, first, n);
      for (uintptr_t l = 0; l < keys.lines; ++l) keys.Request(l);
      for (uintptr_t l = 0; l < values.lines; ++l) values.Request(l);
    }
    // Requests the first line of the cursor's tile (keys and values; quantized: of each
    // segment) into L2, then moves on: see kKickTiles.
    void Kick() {
      // Prefill reuses each tile for many query rows: its misses are not what bounds it.
      if constexpr (S::kPhase != AttentionPhase::kDecode) return;
      if constexpr (IsQuantized(S::kFormat)) {
        LineRange r[4];
        NextQuantized(r);
        for (const LineRange& x : r) {
          if (x.lines > 0) __builtin_prefetch(reinterpret_cast<const void*>(x.lo), 0, 2);
        }
      } else {
        const char *k, *v;
        Next(&k, &v);
        if (k != nullptr) {
          __builtin_prefetch(k, 0, 2);
          __builtin_prefetch(v, 0, 2);
        }
      }
    }
    // Quantized: the cursor's tile as line ranges — key codes, key (scale, zero), value codes,
    // value (scale, zero); ~1-2.3 KB at SmolLM2's shape; all empty past the end.
    void NextQuantized(LineRange* r) {
      const KvSpan* span;
      int64_t first;
      int n;
      for (int i = 0; i < 4; ++i) r[i] = LineRange{};
      if (!NextTile(&span, &first, &n)) return;
      const KvFormat f = S::kFormat == KvFormat::kQuantAny ? span->format : S::kFormat;
      const KvPageSegments seg = PageSegmentsOf(f, HD, 1);
      r[0] = LineRange::Of(span->k, seg.k_row, first, n);
      r[1] = LineRange::Of(span->k_meta, seg.k_meta_row, first, n);
      r[2] = LineRange::Of(span->v, seg.v_row, first, n);
      r[3] = LineRange::Of(span->v_meta, seg.v_meta_row, first, n);
    }
  };

  // Walks [begin, end) of the history tile by tile. raw (optional): logits per row.
  void Run(const KvSpan* spans, int num_spans, int64_t begin, int64_t end, const AttentionParams& p,
           float* raw = nullptr, int64_t raw_stride = 0) {
    float s[kMaxRows][kTile];
    PrefetchCursor ahead{spans, num_spans};
    ahead.end = end;
    for (int64_t start = 0; ahead.si < num_spans; start += spans[ahead.si++].num_tokens) {
      if (start + spans[ahead.si].num_tokens > begin) {
        ahead.t = (begin - start) / kTile * kTile;
        ahead.pos = start + ahead.t;
        break;
      }
    }
    // The first kPrefetchTiles tiles are needed at once: requested now, a piece (a tile, or a
    // page where pages are smaller) at a time.
    for (const int64_t to = std::min(end, ahead.pos + kPrefetchTiles * kTile); ahead.pos < to && ahead.si < num_spans;) {
      if constexpr (IsQuantized(S::kFormat)) {
        ahead.NextQuantized(pf_quant_);
        for (const LineRange& r : pf_quant_) {
          for (uintptr_t l = 0; l < r.lines; ++l) r.Request(l);
        }
      } else {
        ahead.RequestNextDense();
      }
    }
    // The tiles after those, up to kKickTiles further: kicked now; then one more per tile.
    PrefetchCursor kick = ahead;
    for (int i = 0; i < kKickTiles; ++i) kick.Kick();
    // Tiles are fixed by position, whatever the page size: [begin, the next multiple of kTile),
    // then every kTile positions. A tile inside one span (always, with pages of a multiple of
    // kTile tokens) is read in place; one across spans (smaller pages) is gathered as floats
    // and takes the same arithmetic, so a token's result is bitwise the same for every page
    // size (the summation order follows the tiles).
    int si = 0;
    int64_t span_start = 0;
    auto skip_spans_before = [&](int64_t pos) {
      while (si < num_spans && span_start + spans[si].num_tokens <= pos) span_start += spans[si++].num_tokens;
    };
    skip_spans_before(begin);
    for (int64_t j = begin; j < end && si < num_spans;) {
      const int64_t tile_end = std::min(end, (j / kTile + 1) * kTile);
      const int n = static_cast<int>(tile_end - j);
      if (tile_end <= span_start + spans[si].num_tokens) {
        if constexpr (IsQuantized(S::kFormat)) ahead.NextQuantized(pf_quant_);
        else ahead.Next(&pf_k_, &pf_v_);
        kick.Kick();
        Scores(spans[si], j - span_start, n, j, p, s);
        if (raw != nullptr) {
          for (int r = 0; r < rows; ++r) std::copy(s[r], s[r] + n, raw + r * raw_stride + (j - begin));
        }
        if constexpr (IsQuantized(S::kFormat)) {
          Reduce<KvFormat::kF32>(s, PageRows<S::kFormat, HD, true>(spans[si], j - span_start, n, v_scratch, pf_quant_ + 2), n);
        } else {  // dense values are read where they lie
          Reduce<S::kFormat>(s, static_cast<const uint8_t*>(spans[si].v) + (j - span_start) * HD * KvFormatBytes(S::kFormat), n);
        }
      } else {
        GatheredTile(spans, num_spans, si, span_start, j, n, ahead, kick, s);
        ModAndMask(j, n, p, s);
        if (raw != nullptr) {
          for (int r = 0; r < rows; ++r) std::copy(s[r], s[r] + n, raw + r * raw_stride + (j - begin));
        }
        Reduce<KvFormat::kF32>(s, v_scratch, n);
      }
      j = tile_end;
      skip_spans_before(j);
    }
  }

  // Tile [j, j + n) across spans from span si (which starts at span_start): keys and values
  // gathered as floats into k_scratch (key lanes or, quantized, token rows) and v_scratch
  // (token rows), and the tile's dots into s. The prefetch cursors move a piece at a time.
  void GatheredTile(const KvSpan* spans, int num_spans, int si, int64_t span_start, int64_t j, int n,
                    PrefetchCursor& ahead, PrefetchCursor& kick, float (*s)[kTile]) {
    const LineRange none[2];
    int at = 0;
    for (; at < n && si < num_spans; span_start += spans[si++].num_tokens) {
      const int64_t t0 = j + at - span_start;
      const int m = static_cast<int>(std::min<int64_t>(n - at, spans[si].num_tokens - t0));
      // Each piece moves the cursors one piece on and requests that piece's lines at once: a
      // piece is at most half a tile here, and the kernels' spread requests cover one tile.
      kick.Kick();
      if constexpr (IsQuantized(S::kFormat)) {
        ahead.NextQuantized(pf_quant_);
        for (const LineRange& r : pf_quant_) {
          for (uintptr_t l = 0; l < r.lines; ++l) r.Request(l);
        }
        PageRows<S::kFormat, HD, false>(spans[si], t0, m, k_scratch + at * HD, none);
        PageRows<S::kFormat, HD, true>(spans[si], t0, m, v_scratch + at * HD, none);
      } else {
        ahead.RequestNextDense();
        GatherKeys(spans[si], t0, m, at);
        GatherValues(spans[si], t0, m, at);
      }
      at += m;
    }
    pf_k_ = pf_v_ = nullptr;  // every piece's lines are requested already
    if constexpr (IsQuantized(S::kFormat)) {
      for (LineRange& r : pf_quant_) r = LineRange{};
      RowDots(n, s);
    } else {
      ZeroKeyLanes(n);
      LaneDotsAllRows<KvFormat::kF32>(k_scratch, s);
    }
  }

  // Writes normalised rows (softmax) or sums (sigmoid) and the rows' lse.
  void Finish(float* const* out_row, float* lse_row_base, int lse_stride) const {
    for (int r = 0; r < rows; ++r) {
      const float l = Simd::ReduceAdd(l_lanes[r]);
      const float inv = S::kReduction == Reduction::kSigmoid ? 1.0f : (l > 0 ? 1.0f / l : 0.0f);
      for (int i = 0; i < HD; ++i) out_row[r][i] = o[r * HD + i] * inv;
      if (lse_row_base != nullptr) {
        lse_row_base[r * lse_stride] = S::kReduction == Reduction::kSigmoid ? 0.0f
                                       : l > 0 ? m[r] + std::log(l) : kNegInf;
      }
    }
  }
};

// Probability of a logit given its row's lse (softmax) or alone (sigmoid); 0 when masked.
template <class S>
inline float Probability(float s, float lse) {
  if (s == kNegInf) return 0.0f;
  if constexpr (S::kReduction == Reduction::kSoftmax) return std::exp(s - lse);
  else return 1.0f / (1.0f + std::exp(-s));
}

// The probabilities of n logits of one row in place, given the row's lse (softmax) or alone
// (sigmoid); softmax takes kW at a time through Simd::Exp (LeanKV's importance scores: a scalar
// exp per logit was 3.4% of serving at c=16 with kv.mode leankv).
template <class S>
inline void Probabilities(float* s, int64_t n, float lse) {
  int64_t j = 0;
  if constexpr (S::kReduction == Reduction::kSoftmax) {
    if (lse == kNegInf) {  // nothing admitted: every logit is −inf
      std::fill(s, s + n, 0.0f);
      return;
    }
    const typename Simd::Vec l = Simd::Set1(lse);
    for (; j + Simd::kW <= n; j += Simd::kW) Simd::Store(s + j, Simd::Exp(Simd::Sub(Simd::Load(s + j), l)));
  }
  for (float *p = s + j, *end = s + n; p < end; ++p) *p = Probability<S>(*p, lse);
}

// --- decode: one query, a split of the history ---------------------------------------------
template <class S>
void DecodePartial(const DecodeArgs& a) {
  RowBlock<S> b;
  b.rows = S::kGroup;
  for (int g = 0; g < S::kGroup; ++g) {
    b.q_row[g] = a.q + g * S::kHeadDim;
    b.g_row[g] = g;
    b.pos_row[g] = a.q_pos;
  }
  b.Reset();
  int64_t begin = a.kv_begin, end = std::min(a.kv_end, a.kv_len);
  const int64_t split_len = std::max<int64_t>(0, end - begin);
  if (a.head_probs != nullptr) std::fill(a.head_probs, a.head_probs + S::kGroup * split_len, kNegInf);
  ClampRange<S>(a.q_pos, a.q_pos, a.params, &begin, &end);
  float* raw = a.head_probs != nullptr ? a.head_probs + (begin - a.kv_begin) : nullptr;
  if (begin < end) b.Run(a.spans, a.num_spans, begin, end, a.params, raw, split_len);
  float* out_rows[S::kGroup];
  for (int g = 0; g < S::kGroup; ++g) out_rows[g] = a.out + g * S::kHeadDim;
  float lse[S::kGroup];
  b.Finish(out_rows, lse, 1);
  if (a.lse != nullptr) std::copy(lse, lse + S::kGroup, a.lse);
  if (a.head_probs != nullptr) {
    for (int g = 0; g < S::kGroup; ++g) Probabilities<S>(a.head_probs + g * split_len, split_len, lse[g]);
  }
}

template <class S>
void CombineDecode(const CombineArgs& a) {
  constexpr int HD = S::kHeadDim, G = S::kGroup;
  float total[G];
  for (int g = 0; g < G; ++g) {
    if constexpr (S::kReduction == Reduction::kSoftmax) {
      float mx = kNegInf;
      for (int i = 0; i < a.num_splits; ++i) mx = std::max(mx, a.lse_parts[i * G + g]);
      float sum = 0;
      if (mx != kNegInf) {
        for (int i = 0; i < a.num_splits; ++i) sum += std::exp(a.lse_parts[i * G + g] - mx);
      }
      total[g] = mx == kNegInf ? kNegInf : mx + std::log(sum);
    } else {
      total[g] = 0.0f;
    }
    float acc[HD] = {};
    for (int i = 0; i < a.num_splits; ++i) {
      float w = 1.0f;
      if constexpr (S::kReduction == Reduction::kSoftmax) {
        const float li = a.lse_parts[i * G + g];
        w = li == kNegInf ? 0.0f : std::exp(li - total[g]);
      }
      if (w == 0.0f) continue;
      const float* part = a.out_parts + (i * G + g) * HD;
      for (int d = 0; d < HD; ++d) acc[d] += w * part[d];
    }
    std::copy(acc, acc + HD, a.out + g * HD);
    if (a.lse != nullptr) a.lse[g] = total[g];
  }
  if (a.probs == nullptr) return;
  for (int i = 0; i < a.num_splits; ++i) {
    const int64_t b0 = a.split_begin[i], n = a.split_begin[i + 1] - b0;
    float w[G];
    for (int g = 0; g < G; ++g) {
      w[g] = 1.0f;
      if constexpr (S::kReduction == Reduction::kSoftmax) {
        const float li = a.lse_parts[i * G + g];
        w[g] = li == kNegInf ? 0.0f : std::exp(li - total[g]);
      }
    }
    const float* hp = a.head_probs[i];
    for (int64_t j = 0; j < n; ++j) {
      float best = 0.0f;
      for (int g = 0; g < G; ++g) best = std::max(best, hp[g * n + j] * w[g]);
      a.probs[b0 + j] += best;
    }
  }
}

// --- prefill: a chunk of queries over the whole history ------------------------------------
template <class S>
void Prefill(const PrefillArgs& a) {
  constexpr int G = S::kGroup;
  constexpr int kTokensPerBlock = RowBlock<S>::kMaxRows / G > 0 ? RowBlock<S>::kMaxRows / G : 1;
  static_assert(kTokensPerBlock * G <= RowBlock<S>::kMaxRows, "row block overflow");
  RowBlock<S> b;
  for (int64_t t0 = 0; t0 < a.num_q; t0 += kTokensPerBlock) {
    const int nt = static_cast<int>(std::min<int64_t>(kTokensPerBlock, a.num_q - t0));
    b.rows = nt * G;
    float* out_rows[RowBlock<S>::kMaxRows];
    for (int t = 0; t < nt; ++t) {
      for (int g = 0; g < G; ++g) {
        const int r = t * G + g;
        b.q_row[r] = a.q + (t0 + t) * a.q_stride + g * S::kHeadDim;
        b.g_row[r] = g;
        b.pos_row[r] = a.q_pos0 + t0 + t;
        out_rows[r] = a.out + (t0 + t) * a.out_stride + g * S::kHeadDim;
      }
    }
    const int64_t q_lo = a.q_pos0 + t0, q_hi = q_lo + nt - 1;
    int64_t begin = 0, end = a.kv_len;
    ClampRange<S>(q_lo, q_hi, a.params, &begin, &end);
    float lse[RowBlock<S>::kMaxRows];
    // Histories longer than a.split_tokens: block by block as decode splits them (see
    // PrefillArgs::split_tokens), then merged per token as decode merges them.
    const int64_t split = a.split_tokens, blocks = split > 0 ? (q_hi + split) / split : 1;
    if (blocks <= 1) {
      b.Reset();
      if (begin < end) b.Run(a.spans, a.num_spans, begin, end, a.params);
      b.Finish(out_rows, lse, 1);
    } else {
      // part_out: [token][block][group head][head_dim]; part_lse: [token][block][group head].
      thread_local std::vector<float> part_out, part_lse;
      part_out.resize(static_cast<size_t>(nt * blocks * G * S::kHeadDim));
      part_lse.resize(static_cast<size_t>(nt * blocks * G));
      for (int64_t k = 0; k < blocks; ++k) {
        int64_t kb = k * split, ke = std::min(a.kv_len, (k + 1) * split);
        ClampRange<S>(q_lo, q_hi, a.params, &kb, &ke);
        b.Reset();
        if (kb < ke) b.Run(a.spans, a.num_spans, kb, ke, a.params);
        float* part_rows[RowBlock<S>::kMaxRows];
        float part_lse_rows[RowBlock<S>::kMaxRows];
        for (int r = 0; r < b.rows; ++r) part_rows[r] = &part_out[((r / G * blocks + k) * G + r % G) * S::kHeadDim];
        b.Finish(part_rows, part_lse_rows, 1);
        for (int r = 0; r < b.rows; ++r) part_lse[(r / G * blocks + k) * G + r % G] = part_lse_rows[r];
      }
      for (int t = 0; t < nt; ++t) {
        const int64_t splits = (q_lo + t + split) / split;  // decode's: ceil((position + 1) / split)
        float* out_t = a.out + (t0 + t) * a.out_stride;
        const float* parts = &part_out[t * blocks * G * S::kHeadDim];
        const float* lses = &part_lse[t * blocks * G];
        if (splits == 1) {  // decode writes its one split's result as it is
          std::copy(parts, parts + G * S::kHeadDim, out_t);
          std::copy(lses, lses + G, lse + t * G);
          continue;
        }
        CombineArgs c;
        c.num_splits = static_cast<int>(splits);
        c.out_parts = parts;
        c.lse_parts = lses;
        c.out = out_t;
        c.lse = lse + t * G;
        CombineDecode<S>(c);
      }
    }
    if (a.lse != nullptr) std::copy(lse, lse + b.rows, a.lse + t0 * G);
    if (a.probs == nullptr || t0 + nt <= a.probs_q_begin) continue;
    // Importance scores: a second pass over the admitted range with the final lse per row.
    RowBlock<S> pb;
    int first = static_cast<int>(std::max<int64_t>(0, a.probs_q_begin - t0));
    pb.rows = (nt - first) * G;
    for (int r = 0; r < pb.rows; ++r) {
      pb.q_row[r] = b.q_row[first * G + r];
      pb.g_row[r] = b.g_row[first * G + r];
      pb.pos_row[r] = b.pos_row[first * G + r];
    }
    const float* norm = a.probs_lse != nullptr ? a.probs_lse + t0 * G : lse;
    float s[RowBlock<S>::kMaxRows][kTile];
    int64_t span_start = 0;
    for (int si = 0; si < a.num_spans && span_start < end; span_start += a.spans[si].num_tokens, ++si) {
      const int64_t lo = std::max(begin, span_start), hi = std::min(end, span_start + a.spans[si].num_tokens);
      for (int64_t j = lo; j < hi; j += kTile) {
        const int n = static_cast<int>(std::min<int64_t>(kTile, hi - j));
        pb.Scores(a.spans[si], j - span_start, n, j, a.params, s);
        for (int tq = 0; tq < nt - first; ++tq) {
          float best[kTile] = {};  // the tile's lanes past n hold −inf logits: probability 0
          for (int g = 0; g < G; ++g) {
            const int r = tq * G + g;
            Probabilities<S>(s[r], kTile, norm[first * G + r]);
            for (int t = 0; t < kTile; ++t) best[t] = std::max(best[t], s[r][t]);
          }
          for (int t = 0; t < n; ++t) a.probs[j + t] += best[t];
        }
      }
    }
  }
}

}  // namespace peng::kernels::gen::PENG_GEN_ISA_NS
