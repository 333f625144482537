#include "kernels/cpu/ops.h"

#include <cmath>

namespace peng::kernels {

void RmsNormRow(const float* x, const float* weight, float eps, int64_t n, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * weight[i];
}

void RopeInvFreq(int rot_dim, float base, float linear_scale, float* inv_freq) {
  for (int i = 0; i < rot_dim / 2; ++i) {
    inv_freq[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / rot_dim) /
                                      linear_scale);
  }
}

void RopeApply(float* x, int n_heads, int head_dim, int rot_dim, int64_t pos,
               const float* inv_freq, RopeStyle style) {
  const int half = rot_dim / 2;
  float cs[256], sn[256];  // rot_dim <= 512 is checked at model load
  for (int i = 0; i < half; ++i) {
    const double theta = static_cast<double>(pos) * inv_freq[i];
    cs[i] = static_cast<float>(std::cos(theta));
    sn[i] = static_cast<float>(std::sin(theta));
  }
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
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

float SoftmaxRow(float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  return m + static_cast<float>(std::log(sum));
}

}  // namespace peng::kernels
