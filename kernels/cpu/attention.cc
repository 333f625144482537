#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/ops.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {
namespace {

inline float Dot(const float* a, const float* b, int n) {
#if defined(__AVX512F__)
  if (n % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void Axpy(float a, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

void AttendOne(const float* q, const KvSpan* spans, int num_spans, int64_t kv_len, int head_dim,
               float scale, float* out, float* scores) {
  int64_t j = 0;
  for (int s = 0; s < num_spans && j < kv_len; ++s) {
    const int64_t n = std::min(spans[s].num_tokens, kv_len - j);
    for (int64_t t = 0; t < n; ++t) scores[j + t] = scale * Dot(q, spans[s].k + t * head_dim, head_dim);
    j += n;
  }
  SoftmaxRow(scores, kv_len);
  std::memset(out, 0, sizeof(float) * head_dim);
  j = 0;
  for (int s = 0; s < num_spans && j < kv_len; ++s) {
    const int64_t n = std::min(spans[s].num_tokens, kv_len - j);
    for (int64_t t = 0; t < n; ++t) Axpy(scores[j + t], spans[s].v + t * head_dim, out, head_dim);
    j += n;
  }
}

}  // namespace peng::kernels
