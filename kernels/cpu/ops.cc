#include "kernels/cpu/ops.h"

#include <cmath>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace peng::kernels {
namespace {

#if defined(__AVX512F__)
// e^x for 16 floats: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial
// (truncation < 1e-8 relative, below float rounding), times 2^n via scalef. Inputs below
// ln(FLT_MIN) = -87.34 (and NaN) give exactly 0, never a denormal: each denormal result or
// input costs a microcode assist on these cores, and a sampled row whose banned tokens are
// -inf (a JSON constraint's mask) took 231 µs instead of 13. Inputs above 88.7 are clamped.
inline __m512 Exp16(__m512 x) {
  const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365478515625f), _CMP_GE_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3365478515625f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(normal, p, n);
}
#endif

}  // namespace

void RmsNormRow(const float* x, const float* weight, float eps, int64_t n, float* y) {
  // Eight independent double sums (one vector of lanes): a single running sum is a chain of
  // dependent adds, ~4 cycles per element.
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane[k] += static_cast<double>(x[i + k]) * x[i + k];
  }
  for (; i < n; ++i) lane[0] += static_cast<double>(x[i]) * x[i];
  double ss = 0;
  for (double v : lane) ss += v;
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * weight[i];
}

void RopeInvFreq(int rot_dim, float base, float linear_scale, float* inv_freq) {
  for (int i = 0; i < rot_dim / 2; ++i) {
    inv_freq[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / rot_dim) /
                                      linear_scale);
  }
}

void RopeAngles(int rot_dim, int64_t pos, const float* inv_freq, float* cs, float* sn) {
  for (int i = 0; i < rot_dim / 2; ++i) {
    const double theta = static_cast<double>(pos) * inv_freq[i];
    cs[i] = static_cast<float>(std::cos(theta));
    sn[i] = static_cast<float>(std::sin(theta));
  }
}

void RopeRotate(float* x, int n_heads, int head_dim, int rot_dim, const float* cs, const float* sn,
                RopeStyle style) {
  const int half = rot_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = style == RopeStyle::kInterleaved ? 2 * i : i;
      const int b = style == RopeStyle::kInterleaved ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * cs[i] - x1 * sn[i];
      v[b] = x0 * sn[i] + x1 * cs[i];
    }
  }
}

void SiluMulRow(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // g / (1 + e) as g · r, r = 1 / (1 + e) from vrcp14ps and one Newton step (relative error
  // ~2^-23, within a rounding of the quotient): a 512-bit divide occupies its port for ~10
  // cycles per vector, more than the rest of this loop (SiLU was 3% of serving at c=16).
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 d = _mm512_add_ps(one, Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, two));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_mul_ps(g, r), _mm512_loadu_ps(up + i)));
  }
#endif
  for (; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

namespace {

// Max of x[0, n), NaN entries passed over (-inf when there is nothing else). A scalar max is a
// chain of dependent compares (~50 µs over a 49K vocabulary).
float MaxOf(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 vm = _mm512_set1_ps(m);
  for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(_mm512_loadu_ps(x + i), vm);  // NaN lanes keep vm
  m = _mm512_reduce_max_ps(vm);
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Max of x, then sum of exp(x - max); with kStore, out[i] = exp(x[i] - max) (out may be x).
template <bool kStore>
double SumExp(const float* x, int64_t n, float* out, float* max_out) {
  const float m = MaxOf(x, n);
  double sum = 0;
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 mv = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
    if constexpr (kStore) _mm512_storeu_ps(out + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    if constexpr (kStore) out[i] = e;
    sum += e;
  }
  *max_out = m;
  return sum;
}

}  // namespace

float SoftmaxRow(float* x, int64_t n) {
  float m;
  const double sum = SumExp<true>(x, n, x, &m);
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  return m + static_cast<float>(std::log(sum));
}

double ExpShiftedRow(const float* x, int64_t n, float* out, float* max_out) {
  return SumExp<true>(x, n, out, max_out);
}

int64_t SelectAtLeast(const float* x, int64_t n, float threshold, int32_t* ids, double* sum) {
  int64_t count = 0, i = 0;
  double total = 0;
#if defined(__AVX512F__)
  const __m512 t = _mm512_set1_ps(threshold);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16, idx = _mm512_add_epi32(idx, step)) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __mmask16 keep = _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ);
    if (keep == 0) continue;
    _mm512_mask_compressstoreu_epi32(ids + count, keep, idx);
    acc = _mm512_mask_add_ps(acc, keep, acc, v);
    count += __builtin_popcount(keep);
  }
  total = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    if (x[i] >= threshold) {
      ids[count++] = static_cast<int32_t>(i);
      total += x[i];
    }
  }
  if (sum != nullptr) *sum = total;
  return count;
}

float LogSumExp(const float* x, int64_t n, float* max_out) {
  float m;
  const double sum = SumExp<false>(x, n, nullptr, &m);
  if (max_out != nullptr) *max_out = m;
  return m + static_cast<float>(std::log(sum));
}

int64_t ArgMax(const float* x, int64_t n) {
  const float m = MaxOf(x, n);
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 target = _mm512_set1_ps(m);
  for (; i + 16 <= n; i += 16) {
    const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), target, _CMP_EQ_OQ);
    if (hit != 0) return i + __builtin_ctz(hit);
  }
#endif
  for (; i < n; ++i) {
    if (x[i] == m) return i;
  }
  return 0;
}

}  // namespace peng::kernels
