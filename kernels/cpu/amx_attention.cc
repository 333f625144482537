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
// Pages are read and quantized ones dequantized by the generated kernels' own code (its
// AVX-512 instance).
#define PENG_GEN_ISA 3
#include "kernels/gen/templates/attention_cpu.h"
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

constexpr size_t kTileBytes = 1024;
constexpr int kValueTileKeys = 32;  // keys per value tile (its 16 rows hold pairs)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The converted history: key tiles first, then value tiles.
//   Key tile (16 keys from 16·kg, 32 dims from 32·dc), at (kg·HD/32 + dc)·1 KB: row i holds
//   dims 32·dc + 2i and + 2i + 1 of the 16 keys (a B operand of q·kᵀ).
//   Value tile (32 keys from 32·vt, 16 dims from 16·db), at the value base + (vt·HD/16 + db)·1 KB:
//   row i holds keys 32·vt + 2i and + 2i + 1 of the 16 dims (a B operand of p·v).
struct HistoryLayout {
  int hd;
  int64_t padded;
  size_t KeyTile(int64_t kg, int dc) const { return (static_cast<size_t>(kg) * (hd / 32) + dc) * kTileBytes; }
  size_t ValueTile(int64_t vt, int db) const {
    return static_cast<size_t>(padded) * hd * 2 + (static_cast<size_t>(vt) * (hd / 16) + db) * kTileBytes;
  }
};

// Dense elements as floats, 16 at a time or one: the generated kernels' own readers (AVX-512).
using gen::isa_avx512::DenseElement;
using gen::isa_avx512::LoadDense;

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

// Key tile group kg from 16 key rows as floats (row-major, head_dim each).
template <int HD>
void PackKeys(const float (*k)[HD], const HistoryLayout& lay, int64_t kg, uint8_t* history) {
  for (int dc = 0; dc < HD / 32; ++dc) {
    __m512i* tile = reinterpret_cast<__m512i*>(history + lay.KeyTile(kg, dc));
    for (int i = 0; i < 16; ++i) {
      const int d = 32 * dc + 2 * i;
      alignas(64) float even[16], odd[16];
      for (int l = 0; l < 16; ++l) even[l] = k[l][d], odd[l] = k[l][d + 1];
      _mm512_store_si512(tile + i, PackPair(_mm512_load_ps(even), _mm512_load_ps(odd)));
    }
  }
}

// Value tile vt from 32 rows of format F (null rows are zeros).
template <KvFormat F, int HD>
void PackValues(const void* const* rows, const HistoryLayout& lay, int64_t vt, uint8_t* history) {
  for (int db = 0; db < HD / 16; ++db) {
    __m512i* tile = reinterpret_cast<__m512i*>(history + lay.ValueTile(vt, db));
    for (int i = 0; i < 16; ++i) {
      const void* a = rows[2 * i];
      const void* b = rows[2 * i + 1];
      const __m512 even = a != nullptr ? LoadDense<F>(a, 16 * db) : _mm512_setzero_ps();
      const __m512 odd = b != nullptr ? LoadDense<F>(b, 16 * db) : _mm512_setzero_ps();
      _mm512_store_si512(tile + i, PackPair(even, odd));
    }
  }
}

// Dense pages: keys read in place when they are a whole key-lane block, else key by key.
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
          const __m512 even = _mm512_maskz_mov_ps(live, LoadDense<F>(sp->k, block + static_cast<size_t>(d) * 16));
          const __m512 odd = _mm512_maskz_mov_ps(live, LoadDense<F>(sp->k, block + static_cast<size_t>(d + 1) * 16));
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
        for (int d = 0; d < HD; ++d) k[l][d] = DenseElement<F>(s.k, KeyElement(s.key_lanes, HD, tl, d));
      } else {
        std::fill(k[l], k[l] + HD, 0.0f);
      }
    }
    PackKeys<HD>(k, lay, j / 16, history);
  }
  // Values, a tile's 32 keys at a time: a row pointer per key (null past the history).
  for (int64_t j = begin; j < stop; j += kValueTileKeys) {
    const void* row[kValueTileKeys];
    for (int l = 0; l < kValueTileKeys; ++l) {
      int64_t t = 0;
      row[l] = j + l < kv_len && cur.Seek(j + l, &t) ? static_cast<const uint8_t*>(spans[cur.si].v) +
                                                            static_cast<size_t>(t) * HD * KvFormatBytes(F)
                                                      : nullptr;
    }
    PackValues<F, HD>(row, lay, j / kValueTileKeys, history);
  }
}

// One row of quantized codes as floats, by the generated kernels' own dequantization.
template <int HD>
void DequantCodes(const void* codes, const void* meta, int64_t t, size_t row, size_t meta_row, int bits, int groups,
                  float* dst) {
  const uint8_t* c = static_cast<const uint8_t*>(codes) + t * row;
  const uint16_t* m = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(meta) + t * meta_row);
  switch (bits) {
    case 8: return gen::isa_avx512::DequantRow<HD, 8>(c, m, groups, dst);
    case 4: return gen::isa_avx512::DequantRow<HD, 4>(c, m, groups, dst);
    case 2: return gen::isa_avx512::DequantRow<HD, 2>(c, m, groups, dst);
    default: return gen::isa_avx512::DequantRow<HD, 1>(c, m, groups, dst);
  }
}

// Quantized pages (each span its own format): 32 tokens at a time dequantized, then packed.
template <int HD>
void ConvertQuantizedRange(const KvSpan* spans, int num_spans, int64_t kv_len, int64_t begin, int64_t end,
                           uint8_t* history) {
  const HistoryLayout lay{HD, (kv_len + kAmxKeyBlock - 1) / kAmxKeyBlock * kAmxKeyBlock};
  const int64_t stop = end >= kv_len ? lay.padded : end;
  SpanCursor cur{spans, num_spans};
  alignas(64) float k[kValueTileKeys][HD], v[kValueTileKeys][HD];
  for (int64_t j = begin; j < stop; j += kValueTileKeys) {
    const void* row[kValueTileKeys];
    for (int l = 0; l < kValueTileKeys; ++l) {
      int64_t t = 0;
      if (j + l >= kv_len || !cur.Seek(j + l, &t)) {
        std::fill(k[l], k[l] + HD, 0.0f);
        row[l] = nullptr;
        continue;
      }
      const KvSpan& s = spans[cur.si];
      const KvQuant q = QuantOf(s.format);
      const KvPageSegments seg = PageSegmentsOf(s.format, HD, 1);
      DequantCodes<HD>(s.k, s.k_meta, t, seg.k_row, seg.k_meta_row, q.k_bits, q.k_groups, k[l]);
      DequantCodes<HD>(s.v, s.v_meta, t, seg.v_row, seg.v_meta_row, q.v_bits, q.v_groups, v[l]);
      row[l] = v[l];
    }
    PackKeys<HD>(k, lay, j / 16, history);
    PackKeys<HD>(k + 16, lay, j / 16 + 1, history);
    PackValues<KvFormat::kF32, HD>(row, lay, j / kValueTileKeys, history);
  }
}

// 2^t for t ≤ 0: t = n + f with |f| ≤ 1/2, 2^f by its Taylor polynomial of degree 5 (relative
// error < 3e-6, far below the bfloat16 rounding of the probabilities that follows), scaled by
// 2^n. t below −125 (−inf, masked scores) gives 0, and nothing in between is computed as a
// denormal: on this core a denormal result costs a microcode assist, and the masked scores on
// the diagonal blocks made them common (short prompts ran at a third of their speed).
inline __m512 Exp2(__m512 t) {
  const __mmask16 normal = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-125.0f), _CMP_GE_OQ);
  t = _mm512_max_ps(t, _mm512_set1_ps(-125.0f));  // max(NaN, x) is x
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.3333558e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(normal, p, n);
}

// One tile of 16 query rows walking the history, 64 keys per block, software-pipelined so that
// neither unit waits on the other's stores: a tile load cannot take data from the store buffer,
// and the vector loads of a tile store wait for it. Block b's softmax (vector) runs, then block
// b − 1's output update (vector), then block b + 1's scores and block b's p·v (tiles).
//
// Tiles: scores in tmm0-3 (16 keys each; tmm4 queries, tmm6 keys); p·v in tmm0-3 (16 dims
// each; tmm7 probabilities, tmm6 values), and the rows' probability sums in tmm4 (times tmm5,
// all ones: the sum of each row's rounded probabilities, in every column).
template <int HD>
class RowTile {
 public:
  static constexpr int kKeys = static_cast<int>(kAmxKeyBlock);
  static_assert(kKeys == 4 * 16 && kKeys == 2 * kValueTileKeys, "four score tiles, two value tiles per block");

  RowTile(const AmxPrefillArgs& a, const HistoryLayout& lay)
      : a_(a), lay_(lay), scale_(_mm512_set1_ps(a.scale * 1.44269504088896341f)) {
    std::fill(ones_, ones_ + 16 * 32, uint16_t{0x3f80});  // bfloat16 1.0
  }

  // Rows [r0, r0 + n) of the call (n ≤ 16).
  void Run(int64_t r0, int n) {
    int64_t q_hi = 0;
    for (int i = 0; i < 16; ++i) {
      uint16_t* dst = qb_ + i * HD;
      if (i >= n) {
        std::fill(dst, dst + HD, uint16_t{0});
        pos_[i] = -1;
        continue;
      }
      const int64_t r = r0 + i, t = r / a_.group;
      const float* src = a_.q + t * a_.q_stride + (r % a_.group) * HD;
      for (int d = 0; d < HD; d += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + d));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + d), reinterpret_cast<const __m256i&>(h));
      }
      pos_[i] = a_.q_pos0 + t;
      q_hi = std::max(q_hi, pos_[i]);
    }
    m_ = _mm512_set1_ps(kNegInf);
    l_ = _mm512_setzero_ps();
    std::fill(o_, o_ + 16 * HD, 0.0f);
    MemoryBarrier();
    _tile_loadd(5, ones_, 64);
    const int64_t blocks = q_hi / kKeys + 1;
    Scores(0);
    for (int64_t vb = 0; vb < blocks; ++vb) {
      Softmax(vb);
      if (vb > 0) Update(vb - 1);
      if (vb + 1 < blocks) Scores(vb + 1);
      ProbsTimesValues(vb);
    }
    Update(blocks - 1);
    alignas(64) float l[16];
    _mm512_store_ps(l, l_);
    for (int i = 0; i < n; ++i) {
      const int64_t r = r0 + i, t = r / a_.group;
      float* dst = a_.out + t * a_.out_stride + (r % a_.group) * HD;
      const __m512 inv = _mm512_set1_ps(l[i] > 0 ? 1.0f / l[i] : 0.0f);
      for (int d = 0; d < HD; d += 16) _mm512_storeu_ps(dst + d, _mm512_mul_ps(_mm512_load_ps(o_ + i * HD + d), inv));
    }
  }

 private:
  // Scores of key block vb (q·k, in units of log2 e times the scale) into s_[vb & 1].
  void Scores(int64_t vb) {
    float* s = s_[vb & 1];
    MemoryBarrier();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int64_t kg = 4 * vb;
    for (int dc = 0; dc < HD / 32; ++dc) {
      _tile_loadd(4, qb_ + 32 * dc, HD * sizeof(uint16_t));
      _tile_loadd(6, a_.history + lay_.KeyTile(kg, dc), 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_loadd(6, a_.history + lay_.KeyTile(kg + 1, dc), 64);
      _tile_dpbf16ps(1, 4, 6);
      _tile_loadd(6, a_.history + lay_.KeyTile(kg + 2, dc), 64);
      _tile_dpbf16ps(2, 4, 6);
      _tile_loadd(6, a_.history + lay_.KeyTile(kg + 3, dc), 64);
      _tile_dpbf16ps(3, 4, 6);
    }
    _tile_stored(0, s, kKeys * sizeof(float));
    _tile_stored(1, s + 16, kKeys * sizeof(float));
    _tile_stored(2, s + 32, kKeys * sizeof(float));
    _tile_stored(3, s + 48, kKeys * sizeof(float));
    MemoryBarrier();
  }

  // The online softmax of block vb (base 2): probabilities into pb_, the rows' rescales into
  // alpha_[vb & 1]. Each row's arithmetic is its own; the rows' maxima and rescales are
  // computed 16 at a time, one row per lane.
  void Softmax(int64_t vb) {
    float* s = s_[vb & 1];
    const int64_t j0 = vb * kKeys;
    alignas(64) float bmax[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t admitted = pos_[i] - j0 + 1;  // ≤ 0 for rows past their position (or empty)
      float* row = s + kKeys * i;
      __m512 x[4];
      for (int k = 0; k < 4; ++k) x[k] = _mm512_mul_ps(_mm512_load_ps(row + 16 * k), scale_);
      if (admitted < kKeys) {
        const uint64_t keep = admitted > 0 ? (uint64_t{1} << admitted) - 1 : 0;
        for (int k = 0; k < 4; ++k) {
          x[k] = _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), static_cast<__mmask16>(keep >> (16 * k)), x[k]);
        }
      }
      for (int k = 0; k < 4; ++k) _mm512_store_ps(row + 16 * k, x[k]);
      bmax[i] = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(x[0], x[1]), _mm512_max_ps(x[2], x[3])));
    }
    // m' = max(m, block max); alpha = 2^(m − m'): 0 for a row's first block (m = −inf), 1
    // exactly while its maximum holds. A row with nothing admitted in this block (bmax −inf)
    // keeps its state as it is.
    const __m512 block_max = _mm512_load_ps(bmax);
    const __m512 m_new = _mm512_max_ps(m_, block_max);
    live_[vb & 1] = _mm512_cmp_ps_mask(block_max, _mm512_set1_ps(kNegInf), _CMP_NEQ_OQ);
    _mm512_store_ps(alpha_[vb & 1], Exp2(_mm512_sub_ps(m_, m_new)));
    m_ = m_new;
    alignas(64) float m[16];
    _mm512_store_ps(m, m_new);
    for (int i = 0; i < 16; ++i) {
      if (!((live_[vb & 1] >> i) & 1)) continue;  // its probabilities row is never read
      const __m512 mv = _mm512_set1_ps(m[i]);
      const float* row = s + kKeys * i;
      for (int h = 0; h < 2; ++h) {  // the two value tiles' halves: keys 32h .. 32h + 31
        const __m512 e0 = Exp2(_mm512_sub_ps(_mm512_load_ps(row + 32 * h), mv));
        const __m512 e1 = Exp2(_mm512_sub_ps(_mm512_load_ps(row + 32 * h + 16), mv));
        _mm512_store_si512(pb_[h] + 32 * i, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
      }
    }
  }

  // p·v of block vb into pv_[vb & 1], and the rows' sums of the rounded probabilities.
  void ProbsTimesValues(int64_t vb) {
    float* pv = pv_[vb & 1];
    MemoryBarrier();
    for (int db = 0; db < HD / 16; db += 4) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      if (db == 0) _tile_zero(4);
      for (int h = 0; h < 2; ++h) {
        const int64_t vt = 2 * vb + h;
        _tile_loadd(7, pb_[h], 64);
        _tile_loadd(6, a_.history + lay_.ValueTile(vt, db), 64);
        _tile_dpbf16ps(0, 7, 6);
        _tile_loadd(6, a_.history + lay_.ValueTile(vt, db + 1), 64);
        _tile_dpbf16ps(1, 7, 6);
        _tile_loadd(6, a_.history + lay_.ValueTile(vt, db + 2), 64);
        _tile_dpbf16ps(2, 7, 6);
        _tile_loadd(6, a_.history + lay_.ValueTile(vt, db + 3), 64);
        _tile_dpbf16ps(3, 7, 6);
        if (db == 0) _tile_dpbf16ps(4, 7, 5);
      }
      _tile_stored(0, pv + 16 * db, HD * sizeof(float));
      _tile_stored(1, pv + 16 * (db + 1), HD * sizeof(float));
      _tile_stored(2, pv + 16 * (db + 2), HD * sizeof(float));
      _tile_stored(3, pv + 16 * (db + 3), HD * sizeof(float));
      if (db == 0) _tile_stored(4, sums_[vb & 1], 16 * sizeof(float));
    }
    MemoryBarrier();
  }

  // Block vb's output update: o' = o·alpha + p·v and l' = l·alpha + Σp per row (alpha = 1
  // leaves o·alpha exact).
  void Update(int64_t vb) {
    const int slot = static_cast<int>(vb & 1);
    const float* alpha = alpha_[slot];
    // Row i's sum is in every column of row i: the diagonal, one row per lane.
    const __m512i diagonal = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi32(17));
    const __m512 sums = _mm512_i32gather_ps(diagonal, sums_[slot], 4);
    l_ = _mm512_mask_fmadd_ps(l_, live_[slot], _mm512_load_ps(alpha), sums);
    for (int i = 0; i < 16; ++i) {
      if (!((live_[slot] >> i) & 1)) continue;
      float* orow = o_ + i * HD;
      const float* prow = pv_[slot] + i * HD;
      const __m512 al = _mm512_set1_ps(alpha[i]);
      for (int d = 0; d < HD; d += 16) {
        _mm512_store_ps(orow + d, _mm512_fmadd_ps(_mm512_load_ps(orow + d), al, _mm512_load_ps(prow + d)));
      }
    }
  }

  const AmxPrefillArgs& a_;
  const HistoryLayout& lay_;
  const __m512 scale_;                       // the score scale times log2 e
  alignas(64) uint16_t qb_[16 * HD];         // the rows' queries in bfloat16
  alignas(64) uint16_t ones_[16 * 32];       // a B tile of bfloat16 ones
  alignas(64) float s_[2][16 * kKeys];       // two key blocks' scores
  alignas(64) uint16_t pb_[2][16 * 32];      // a block's probabilities in bfloat16, two A tiles
  alignas(64) float pv_[2][16 * HD];         // two blocks' p·v
  alignas(64) float sums_[2][16 * 16];       // two blocks' probability sums (every column)
  alignas(64) float o_[16 * HD];
  alignas(64) float alpha_[2][16];
  __mmask16 live_[2] = {0, 0};               // rows with a key admitted in the block
  __m512 m_, l_;                             // running max (base 2) and denominator, a row per lane
  int64_t pos_[16];
};

template <int HD>
void PrefillRows(const AmxPrefillArgs& a) {
  static_assert(HD % 64 == 0, "value tiles go four at a time");
  static const amx::TileConfig kConfig = amx::FullTiles();
  const HistoryLayout lay{HD, (a.kv_len + kAmxKeyBlock - 1) / kAmxKeyBlock * kAmxKeyBlock};
  RowTile<HD> tile(a, lay);
  amx::LoadConfig(kConfig);
  for (int64_t r0 = a.row_begin; r0 < a.row_end; r0 += 16) {
    tile.Run(r0, static_cast<int>(std::min<int64_t>(16, a.row_end - r0)));
  }
  amx::ReleaseTiles();
}

template <int HD>
void ConvertFor(KvFormat format, const KvSpan* spans, int num_spans, int64_t kv_len, int64_t begin, int64_t end,
                uint8_t* history) {
  switch (format) {
    case KvFormat::kF32: return ConvertRange<KvFormat::kF32, HD>(spans, num_spans, kv_len, begin, end, history);
    case KvFormat::kF16: return ConvertRange<KvFormat::kF16, HD>(spans, num_spans, kv_len, begin, end, history);
    case KvFormat::kBF16: return ConvertRange<KvFormat::kBF16, HD>(spans, num_spans, kv_len, begin, end, history);
    default: return ConvertQuantizedRange<HD>(spans, num_spans, kv_len, begin, end, history);
  }
}

}  // namespace

bool AmxAttentionSupports(KvFormat format, int head_dim) {
  const bool dense = format == KvFormat::kF32 || format == KvFormat::kF16 || format == KvFormat::kBF16;
  return (dense || IsQuantized(format)) && (head_dim == 64 || head_dim == 128) && HasAmxBf16();
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
