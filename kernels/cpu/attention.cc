#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/ops.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {
namespace {

// Loads 16 elements of a KV row as floats.
template <KvFormat F>
inline void Load16(const void* row, int i, float* out) {
  if constexpr (F == KvFormat::kF32) {
    std::memcpy(out, static_cast<const float*>(row) + i, 16 * sizeof(float));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + i;
    for (int j = 0; j < 16; ++j) out[j] = F == KvFormat::kF16 ? Fp16ToFp32(p[j]) : Bf16ToFp32(p[j]);
  }
}

#if defined(__AVX512F__)
template <KvFormat F>
inline __m512 Load16v(const void* row, int i) {
  if constexpr (F == KvFormat::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  } else if constexpr (F == KvFormat::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i)));
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
}
#endif

template <KvFormat F>
inline float Dot(const float* q, const void* krow, int n) {
#if defined(__AVX512F__)
  if (n % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), Load16v<F>(krow, i), acc);
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s = 0, buf[16];
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    Load16<F>(krow, i, buf);
    for (int j = 0; j < 16; ++j) s += q[i + j] * buf[j];
  }
  for (; i < n; ++i) {
    const void* p = krow;
    s += q[i] * (F == KvFormat::kF32 ? static_cast<const float*>(p)[i]
                 : F == KvFormat::kF16 ? Fp16ToFp32(static_cast<const uint16_t*>(p)[i])
                                       : Bf16ToFp32(static_cast<const uint16_t*>(p)[i]));
  }
  return s;
}

template <KvFormat F>
inline void Axpy(float a, const void* vrow, float* y, int n) {
#if defined(__AVX512F__)
  if (n % 16 == 0) {
    const __m512 av = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
      _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, Load16v<F>(vrow, i), _mm512_loadu_ps(y + i)));
    }
    return;
  }
#endif
  for (int i = 0; i < n; ++i) {
    const float v = F == KvFormat::kF32 ? static_cast<const float*>(vrow)[i]
                    : F == KvFormat::kF16 ? Fp16ToFp32(static_cast<const uint16_t*>(vrow)[i])
                                          : Bf16ToFp32(static_cast<const uint16_t*>(vrow)[i]);
    y[i] += a * v;
  }
}

template <KvFormat F>
void Attend(const float* q, const KvSpan* spans, int num_spans, int64_t kv_len, int head_dim,
            float scale, float* out, float* scores) {
  const size_t row_bytes = KvFormatBytes(F) * head_dim;
  int64_t j = 0;
  for (int s = 0; s < num_spans && j < kv_len; ++s) {
    const int64_t n = std::min(spans[s].num_tokens, kv_len - j);
    const auto* k = static_cast<const uint8_t*>(spans[s].k);
    for (int64_t t = 0; t < n; ++t) scores[j + t] = scale * Dot<F>(q, k + t * row_bytes, head_dim);
    j += n;
  }
  SoftmaxRow(scores, kv_len);
  std::memset(out, 0, sizeof(float) * head_dim);
  j = 0;
  for (int s = 0; s < num_spans && j < kv_len; ++s) {
    const int64_t n = std::min(spans[s].num_tokens, kv_len - j);
    const auto* v = static_cast<const uint8_t*>(spans[s].v);
    for (int64_t t = 0; t < n; ++t) Axpy<F>(scores[j + t], v + t * row_bytes, out, head_dim);
    j += n;
  }
}

}  // namespace

void AttendOne(const float* q, const KvSpan* spans, int num_spans, int64_t kv_len, int head_dim,
               float scale, float* out, float* scores) {
  // All spans of one head share a format (one page pool format per worker).
  switch (num_spans > 0 ? spans[0].format : KvFormat::kF32) {
    case KvFormat::kF32: return Attend<KvFormat::kF32>(q, spans, num_spans, kv_len, head_dim, scale, out, scores);
    case KvFormat::kF16: return Attend<KvFormat::kF16>(q, spans, num_spans, kv_len, head_dim, scale, out, scores);
    case KvFormat::kBF16: return Attend<KvFormat::kBF16>(q, spans, num_spans, kv_len, head_dim, scale, out, scores);
  }
}

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

}  // namespace peng::kernels
