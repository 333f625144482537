#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace peng::kernels {
namespace {

TEST(AttentionTest, SpansEqualOneContiguousHistoryAndDoubleReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int hd = 64;
  const int64_t len = 45;
  std::vector<float> k(len * hd), v(len * hd), q(hd);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  const float scale = 1.0f / 8.0f;

  // Reference in double.
  std::vector<double> s(len), ref(hd, 0.0);
  double m = -1e300, sum = 0;
  for (int64_t j = 0; j < len; ++j) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * k[j * hd + i];
    s[j] = d * scale;
    m = std::max(m, s[j]);
  }
  for (int64_t j = 0; j < len; ++j) sum += std::exp(s[j] - m);
  for (int64_t j = 0; j < len; ++j) {
    for (int i = 0; i < hd; ++i) ref[i] += std::exp(s[j] - m) / sum * v[j * hd + i];
  }

  // Split the history into uneven spans (pages) with extra unused tokens at the end.
  KvSpan spans[3] = {{k.data(), v.data(), 16}, {k.data() + 16 * hd, v.data() + 16 * hd, 7},
                     {k.data() + 23 * hd, v.data() + 23 * hd, 30}};
  std::vector<float> out(hd, NAN), scores(len);
  AttendOne(q.data(), spans, 3, len, hd, scale, out.data(), scores.data());
  for (int i = 0; i < hd; ++i) EXPECT_NEAR(out[i], ref[i], 1e-5);
}

TEST(AttentionTest, HalfPrecisionPagesMatchFloatWithinRounding) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  const int hd = 64;
  const int64_t len = 33;
  std::vector<float> k(len * hd), v(len * hd), q(hd);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  std::vector<float> ref(hd), scores(len);
  KvSpan f32{k.data(), v.data(), len, KvFormat::kF32};
  AttendOne(q.data(), &f32, 1, len, hd, 0.125f, ref.data(), scores.data());
  for (KvFormat f : {KvFormat::kF16, KvFormat::kBF16}) {
    std::vector<uint16_t> kh(len * hd), vh(len * hd);
    StoreKvRow(k.data(), f, len * hd, kh.data());
    StoreKvRow(v.data(), f, len * hd, vh.data());
    KvSpan half{kh.data(), vh.data(), len, f};
    std::vector<float> out(hd, NAN);
    AttendOne(q.data(), &half, 1, len, hd, 0.125f, out.data(), scores.data());
    const float tol = f == KvFormat::kF16 ? 5e-3f : 4e-2f;
    for (int i = 0; i < hd; ++i) EXPECT_NEAR(out[i], ref[i], tol) << KvFormatName(f) << " " << i;
  }
}

}  // namespace
}  // namespace peng::kernels

namespace peng::kernels {
namespace {

TEST(OpsTest, VectorExpMatchesLibmInSoftmaxAndSilu) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-30.f, 30.f);
  for (int64_t n : {1, 15, 16, 17, 100, 1000}) {
    std::vector<float> x(n), ref(n);
    for (auto& v : x) v = u(rng);
    double m = -1e300, sum = 0;
    for (float v : x) m = std::max<double>(m, v);
    for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - m);
    for (int64_t i = 0; i < n; ++i) ref[i] = static_cast<float>(std::exp(double(x[i]) - m) / sum);
    SoftmaxRow(x.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(x[i], ref[i], 1e-5f * ref[i] + 1e-12f) << n << " " << i;
  }
  std::vector<float> g(1000), up(1000), gc;
  for (auto& v : g) v = u(rng);
  for (auto& v : up) v = u(rng);
  gc = g;
  SiluMulRow(g.data(), up.data(), 1000);
  for (int i = 0; i < 1000; ++i) {
    const double want = gc[i] / (1 + std::exp(-double(gc[i]))) * up[i];
    ASSERT_NEAR(g[i], want, 1e-5 * std::fabs(want) + 1e-6) << i;
  }
}

}  // namespace
}  // namespace peng::kernels
