#include "kernels/attention/reference.h"

#include <cmath>
#include <limits>

namespace peng::kernels {

ReferenceAttentionOutput ReferenceAttention(const ReferenceAttentionInput& in) {
  const AttentionVariant& v = in.variant;
  const int hd = v.head_dim, G = v.group;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const AttentionParams& p = in.params;
  ReferenceAttentionOutput r;
  r.out.assign(in.num_q * G * hd, 0.0);
  r.lse.assign(in.num_q * G, v.reduction == Reduction::kSoftmax ? neg_inf : 0.0);
  r.probs.assign(in.num_q * G * in.kv_len, 0.0);
  std::vector<double> s(in.kv_len);
  for (int64_t t = 0; t < in.num_q; ++t) {
    const int64_t qp = in.q_pos0 + t;
    for (int g = 0; g < G; ++g) {
      const float* q = in.q + (t * G + g) * hd;
      const int64_t row = t * G + g;
      for (int64_t j = 0; j < in.kv_len; ++j) {
        bool admit = true;
        switch (v.mask_mod) {
          case MaskMod::kCausal: admit = j <= qp; break;
          case MaskMod::kSlidingWindow: admit = j <= qp && j > qp - p.window; break;
          case MaskMod::kFull: admit = true; break;
          case MaskMod::kHeadSubset: admit = (p.head_subset[g * p.subset_words + j / 64] >> (j % 64)) & 1; break;
        }
        if (!admit) {
          s[j] = neg_inf;
          continue;
        }
        double dot = 0;
        for (int i = 0; i < hd; ++i) dot += static_cast<double>(q[i]) * in.k[j * hd + i];
        switch (v.score_mod) {
          case ScoreMod::kNone: break;
          case ScoreMod::kScale: dot *= p.scale; break;
          case ScoreMod::kSoftcap: dot = p.softcap * std::tanh(dot * p.scale / p.softcap); break;
          case ScoreMod::kAlibi: dot = dot * p.scale + static_cast<double>(p.alibi_slopes[g]) * (j - qp); break;
        }
        s[j] = dot;
      }
      double* prob = r.probs.data() + row * in.kv_len;
      if (v.reduction == Reduction::kSoftmax) {
        double m = neg_inf;
        for (double x : s) m = std::max(m, x);
        if (m == neg_inf) continue;
        double sum = 0;
        for (int64_t j = 0; j < in.kv_len; ++j) sum += s[j] == neg_inf ? 0.0 : std::exp(s[j] - m);
        r.lse[row] = m + std::log(sum);
        for (int64_t j = 0; j < in.kv_len; ++j) prob[j] = s[j] == neg_inf ? 0.0 : std::exp(s[j] - r.lse[row]);
      } else {
        for (int64_t j = 0; j < in.kv_len; ++j) prob[j] = s[j] == neg_inf ? 0.0 : 1.0 / (1.0 + std::exp(-s[j]));
      }
      double* o = r.out.data() + row * hd;
      for (int64_t j = 0; j < in.kv_len; ++j) {
        for (int i = 0; i < hd; ++i) o[i] += prob[j] * in.v[j * hd + i];
      }
    }
  }
  return r;
}

}  // namespace peng::kernels
