#include "kernels/cpu/amx_attention.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernels/cpu/amx.h"
#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/fp16.h"

#if PENG_AMX
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,f16c,fma,amx-tile,amx-bf16")
// The vector kernels' exp (the same polynomial as the generated attention's AVX-512 path).
#define PENG_GEN_ISA 3
#include "kernels/gen/templates/simd_cpu.h"
#endif

namespace peng::kernels {

size_t AmxHistoryBytes(int64_t kv_len, int head_dim) {
  const int64_t padded = (kv_len + kAmxKeyBlock - 1) / kAmxKeyBlock * kAmxKeyBlock;
  return static_cast<size_t>(padded) * head_dim * 4;
}

#if PENG_AMX
namespace {

using amx::MemoryBarrier;
using amx::PackPair;
using Simd = gen::isa_avx512::Simd;

constexpr size_t kTileBytes = 1024;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The converted history: key tiles first, then value tiles.
//   Key tile (16 keys from 16·kg, 32 dims from 32·dc), at (kg·HD/32 + dc)·1 KB: row i holds
//   dims 32·dc + 2i and + 2i + 1 of the 16 keys (a B operand of q·kᵀ).
//   Value tile (32 keys from 32·vb, 16 dims from 16·db), at the value base + (vb·HD/16 + db)·1 KB:
//   row i holds keys 32·vb + 2i and + 2i + 1 of the 16 dims (a B operand of p·v).
struct HistoryLayout {
  int hd;
  int64_t padded;
  size_t KeyTile(int64_t kg, int dc) const { return (static_cast<size_t>(kg) * (hd / 32) + dc) * kTileBytes; }
  size_t ValueTile(int64_t vb, int db) const {
    return static_cast<size_t>(padded) * hd * 2 + (static_cast<size_t>(vb) * (hd / 16) + db) * kTileBytes;
  }
};

// 16 consecutive elements of a dense format from element i of p, as floats.
template <KvFormat F>
inline __m512 Load16(const void* p, size_t i) {
  if constexpr (F == KvFormat::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
    if constexpr (F == KvFormat::kF16) return _mm512_cvtph_ps(h);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <KvFormat F>
inline float Element(const void* p, size_t i) {
  if constexpr (F == KvFormat::kF32) return static_cast<const float*>(p)[i];
  else if constexpr (F == KvFormat::kF16) return Fp16ToFp32(static_cast<const uint16_t*>(p)[i]);
  else return Bf16ToFp32(static_cast<const uint16_t*>(p)[i]);
}

// Where position j of the history lies: span si, token t of it.
struct SpanCursor {
  const KvSpan* spans;
  int num_spans;
  int si = 0;
  int64_t start = 0;  // position of span si's first token
  bool Seek(int64_t j, int64_t* t) {
    if (j < start) si = 0, start = 0;
    while (si < num_spans && start + spans[si].num_tokens <= j) start += spans[si++].num_tokens;
    if (si == num_spans) return false;
    *t = j - start;
    return true;
  }
};

template <KvFormat F, int HD>
void ConvertRange(const KvSpan* spans, int num_spans, int64_t kv_len, int64_t begin, int64_t end, uint8_t* history) {
  const HistoryLayout lay{HD, (kv_len + kAmxKeyBlock - 1) / kAmxKeyBlock * kAmxKeyBlock};
  const int64_t stop = end >= kv_len ? lay.padded : end;  // the padding goes with the last range
  SpanCursor cur{spans, num_spans};
  // Keys, 16 at a time.
  for (int64_t j = begin; j < stop; j += 16) {
    int64_t t = 0;
    const int valid = static_cast<int>(std::clamp<int64_t>(kv_len - j, 0, 16));
    const bool found = valid > 0 && cur.Seek(j, &t);
    const KvSpan* sp = found ? &spans[cur.si] : nullptr;
    if (sp != nullptr && sp->key_lanes == 16 && t % 16 == 0) {
      // A key-lane block as stored: dimension d of the 16 keys is 16 consecutive elements.
      const size_t block = KeyElement(16, HD, t, 0);
      const int n = static_cast<int>(std::min<int64_t>(valid, sp->num_tokens - t));
      const __mmask16 live = static_cast<__mmask16>((1u << n) - 1);
      for (int dc = 0; dc < HD / 32; ++dc) {
        __m512i* tile = reinterpret_cast<__m512i*>(history + lay.KeyTile(j / 16, dc));
        for (int i = 0; i < 16; ++i) {
          const int d = 32 * dc + 2 * i;
          const __m512 even = _mm512_maskz_mov_ps(live, Load16<F>(sp->k, block + static_cast<size_t>(d) * 16));
          const __m512 odd = _mm512_maskz_mov_ps(live, Load16<F>(sp->k, block + static_cast<size_t>(d + 1) * 16));
          _mm512_store_si512(tile + i, PackPair(even, odd));
        }
      }
      continue;
    }
    // Any other layout (token rows, pages under 16 tokens, the padding): key by key.
    alignas(64) float k[16][HD];
    for (int l = 0; l < 16; ++l) {
      int64_t tl = 0;
      if (l < valid && cur.Seek(j + l, &tl)) {
        const KvSpan& s = spans[cur.si];
        for (int d = 0; d < HD; ++d) k[l][d] = Element<F>(s.k, KeyElement(s.key_lanes, HD, tl, d));
      } else {
        std::fill(k[l], k[l] + HD, 0.0f);
      }
    }
    for (int dc = 0; dc < HD / 32; ++dc) {
      __m512i* tile = reinterpret_cast<__m512i*>(history + lay.KeyTile(j / 16, dc));
      for (int i = 0; i < 16; ++i) {
        const int d = 32 * dc + 2 * i;
        alignas(64) float even[16], odd[16];
        for (int l = 0; l < 16; ++l) even[l] = k[l][d], odd[l] = k[l][d + 1];
        _mm512_store_si512(tile + i, PackPair(_mm512_load_ps(even), _mm512_load_ps(odd)));
      }
    }
  }
  // Values, 32 keys at a time: a row pointer per key (null past the history).
  for (int64_t j = begin; j < stop; j += kAmxKeyBlock) {
    const void* row[kAmxKeyBlock];
    for (int l = 0; l < kAmxKeyBlock; ++l) {
      int64_t t = 0;
      row[l] = j + l < kv_len && cur.Seek(j + l, &t) ? static_cast<const uint8_t*>(spans[cur.si].v) +
                                                            static_cast<size_t>(t) * HD * KvFormatBytes(F)
                                                      : nullptr;
    }
    for (int db = 0; db < HD / 16; ++db) {
      __m512i* tile = reinterpret_cast<__m512i*>(history + lay.ValueTile(j / kAmxKeyBlock, db));
      for (int i = 0; i < 16; ++i) {
        const void* a = row[2 * i];
        const void* b = row[2 * i + 1];
        const __m512 even = a != nullptr ? Load16<F>(a, 16 * db) : _mm512_setzero_ps();
        const __m512 odd = b != nullptr ? Load16<F>(b, 16 * db) : _mm512_setzero_ps();
        _mm512_store_si512(tile + i, PackPair(even, odd));
      }
    }
  }
}

// Accumulator tile `c` += A tile `a` x B tile `b`, each a literal tile number.
#define PENG_DP(c, a, b) _tile_dpbf16ps(c, a, b)

// p·v of one key block for the 16 rows: the bf16 probabilities in `p` (16 x 32), into `pv`
// [16 x HD] floats (4 accumulator tiles at a time: tmm0-3; tmm7 the probabilities, tmm6 values).
template <int HD>
inline void ProbsTimesValues(const uint16_t* p, const uint8_t* history, const HistoryLayout& lay, int64_t vb,
                             float* pv) {
  for (int db = 0; db < HD / 16; db += 4) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(7, p, 64);
    _tile_loadd(6, history + lay.ValueTile(vb, db), 64);
    PENG_DP(0, 7, 6);
    _tile_loadd(6, history + lay.ValueTile(vb, db + 1), 64);
    PENG_DP(1, 7, 6);
    _tile_loadd(6, history + lay.ValueTile(vb, db + 2), 64);
    PENG_DP(2, 7, 6);
    _tile_loadd(6, history + lay.ValueTile(vb, db + 3), 64);
    PENG_DP(3, 7, 6);
    _tile_stored(0, pv + 16 * db, HD * sizeof(float));
    _tile_stored(1, pv + 16 * (db + 1), HD * sizeof(float));
    _tile_stored(2, pv + 16 * (db + 2), HD * sizeof(float));
    _tile_stored(3, pv + 16 * (db + 3), HD * sizeof(float));
  }
}

template <int HD>
void PrefillRows(const AmxPrefillArgs& a) {
  static_assert(HD % 64 == 0, "value tiles go four at a time");
  static const amx::TileConfig kConfig = amx::FullTiles();
  const HistoryLayout lay{HD, (a.kv_len + kAmxKeyBlock - 1) / kAmxKeyBlock * kAmxKeyBlock};
  alignas(64) uint16_t qb[16 * HD];  // the rows' queries in bfloat16
  alignas(64) float s[16 * 32];      // one key block's scores
  alignas(64) uint16_t pb[16 * 32];  // its probabilities in bfloat16
  alignas(64) float pv[16 * HD];
  alignas(64) float o[16 * HD];
  float m[16], l[16], alpha[16];
  int64_t pos[16];
  bool live[16];
  const __m512 scale = _mm512_set1_ps(a.scale);
  amx::LoadConfig(kConfig);
  for (int64_t r0 = a.row_begin; r0 < a.row_end; r0 += 16) {
    const int nr = static_cast<int>(std::min<int64_t>(16, a.row_end - r0));
    int64_t q_hi = 0;
    for (int i = 0; i < 16; ++i) {
      uint16_t* dst = qb + i * HD;
      if (i >= nr) {
        std::fill(dst, dst + HD, uint16_t{0});
        pos[i] = -1;
        continue;
      }
      const int64_t r = r0 + i, t = r / a.group;
      const float* src = a.q + t * a.q_stride + (r % a.group) * HD;
      for (int d = 0; d < HD; d += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + d));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + d), reinterpret_cast<const __m256i&>(h));
      }
      pos[i] = a.q_pos0 + t;
      q_hi = std::max(q_hi, pos[i]);
    }
    std::fill(m, m + 16, kNegInf);
    std::fill(l, l + 16, 0.0f);
    std::fill(o, o + 16 * HD, 0.0f);
    for (int64_t vb = 0; vb * kAmxKeyBlock <= q_hi; ++vb) {
      const int64_t j0 = vb * kAmxKeyBlock;
      // Scores of the 32 keys: tmm0 keys 0-15, tmm1 keys 16-31 (tmm4 queries, tmm6-7 keys).
      MemoryBarrier();
      _tile_zero(0);
      _tile_zero(1);
      for (int dc = 0; dc < HD / 32; ++dc) {
        _tile_loadd(4, qb + 32 * dc, HD * sizeof(uint16_t));
        _tile_loadd(6, a.history + lay.KeyTile(2 * vb, dc), 64);
        PENG_DP(0, 4, 6);
        _tile_loadd(7, a.history + lay.KeyTile(2 * vb + 1, dc), 64);
        PENG_DP(1, 4, 7);
      }
      _tile_stored(0, s, 32 * sizeof(float));
      _tile_stored(1, s + 16, 32 * sizeof(float));
      MemoryBarrier();
      // The online softmax, row by row (each row's arithmetic its own).
      for (int i = 0; i < 16; ++i) {
        const int64_t admitted = pos[i] - j0 + 1;
        live[i] = pos[i] >= 0 && admitted > 0;
        if (!live[i]) {
          _mm512_store_si512(pb + 32 * i, _mm512_setzero_si512());
          continue;
        }
        __m512 x0 = _mm512_mul_ps(_mm512_load_ps(s + 32 * i), scale);
        __m512 x1 = _mm512_mul_ps(_mm512_load_ps(s + 32 * i + 16), scale);
        if (admitted < 32) {
          const __mmask32 keep = static_cast<__mmask32>((uint64_t{1} << admitted) - 1);
          x0 = _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), static_cast<__mmask16>(keep), x0);
          x1 = _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), static_cast<__mmask16>(keep >> 16), x1);
        }
        const __m512 mx = _mm512_max_ps(x0, x1);
        const bool settled = m[i] != kNegInf && _mm512_cmp_ps_mask(mx, _mm512_set1_ps(m[i]), _CMP_GT_OQ) == 0;
        const float m_new = settled ? m[i] : std::max(m[i], _mm512_reduce_max_ps(mx));
        alpha[i] = m[i] == kNegInf ? 0.0f : m_new == m[i] ? 1.0f : std::exp(m[i] - m_new);
        const __m512 mv = _mm512_set1_ps(m_new);
        const __m512 e0 = Simd::Exp(_mm512_sub_ps(x0, mv)), e1 = Simd::Exp(_mm512_sub_ps(x1, mv));
        const __m512i p = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0));  // keys 0-15 low
        _mm512_store_si512(pb + 32 * i, p);
        // The denominator sums the probabilities as rounded.
        const __m512 p0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(p)), 16));
        const __m512 p1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(p, 1)), 16));
        const float sum = _mm512_reduce_add_ps(_mm512_add_ps(p0, p1));
        l[i] = alpha[i] == 1.0f ? l[i] + sum : l[i] * alpha[i] + sum;
        m[i] = m_new;
      }
      MemoryBarrier();
      ProbsTimesValues<HD>(pb, a.history, lay, vb, pv);
      MemoryBarrier();
      for (int i = 0; i < 16; ++i) {
        if (!live[i]) continue;
        float* orow = o + i * HD;
        const float* prow = pv + i * HD;
        const __m512 al = _mm512_set1_ps(alpha[i]);
        for (int d = 0; d < HD; d += 16) {
          const __m512 x = _mm512_load_ps(prow + d);
          _mm512_store_ps(orow + d, alpha[i] == 1.0f ? _mm512_add_ps(_mm512_load_ps(orow + d), x)
                                                     : _mm512_fmadd_ps(_mm512_load_ps(orow + d), al, x));
        }
      }
    }
    for (int i = 0; i < nr; ++i) {
      const int64_t r = r0 + i, t = r / a.group;
      float* dst = a.out + t * a.out_stride + (r % a.group) * HD;
      const __m512 inv = _mm512_set1_ps(l[i] > 0 ? 1.0f / l[i] : 0.0f);
      for (int d = 0; d < HD; d += 16) _mm512_storeu_ps(dst + d, _mm512_mul_ps(_mm512_load_ps(o + i * HD + d), inv));
    }
  }
  amx::ReleaseTiles();
}
#undef PENG_DP

template <int HD>
void ConvertFor(KvFormat format, const KvSpan* spans, int num_spans, int64_t kv_len, int64_t begin, int64_t end,
                uint8_t* history) {
  switch (format) {
    case KvFormat::kF32: return ConvertRange<KvFormat::kF32, HD>(spans, num_spans, kv_len, begin, end, history);
    case KvFormat::kF16: return ConvertRange<KvFormat::kF16, HD>(spans, num_spans, kv_len, begin, end, history);
    default: return ConvertRange<KvFormat::kBF16, HD>(spans, num_spans, kv_len, begin, end, history);
  }
}

}  // namespace

bool AmxAttentionSupports(KvFormat format, int head_dim) {
  const bool dense = format == KvFormat::kF32 || format == KvFormat::kF16 || format == KvFormat::kBF16;
  return dense && (head_dim == 64 || head_dim == 128) && HasAmxBf16();
}

void AmxConvertHistory(const KvSpan* spans, int num_spans, KvFormat format, int head_dim, int64_t kv_len,
                       int64_t begin, int64_t end, uint8_t* history) {
  if (head_dim == 64) return ConvertFor<64>(format, spans, num_spans, kv_len, begin, end, history);
  ConvertFor<128>(format, spans, num_spans, kv_len, begin, end, history);
}

void AmxPrefillAttention(const AmxPrefillArgs& a) {
  if (a.head_dim == 64) return PrefillRows<64>(a);
  PrefillRows<128>(a);
}

#else  // no AMX in this build

bool AmxAttentionSupports(KvFormat, int) { return false; }
void AmxConvertHistory(const KvSpan*, int, KvFormat, int, int64_t, int64_t, int64_t, uint8_t*) {
  std::abort();  // invariant: callers check AmxAttentionSupports()
}
void AmxPrefillAttention(const AmxPrefillArgs&) { std::abort(); }

#endif

}  // namespace peng::kernels

#if PENG_AMX
#pragma GCC pop_options
#endif
