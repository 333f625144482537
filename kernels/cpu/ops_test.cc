#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace peng::kernels {
namespace {

// gate · sigmoid(gate) · up against float64, over the range activations take and the tails
// where exp under- or overflows; the vector body and the scalar tail (n % 16) both covered.
TEST(OpsTest, SiluMulRowMatchesDouble) {
  std::vector<float> gate, up;
  for (float g = -120.0f; g <= 120.0f; g += 0.37f) gate.push_back(g);
  for (float g : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, -88.0f, 89.0f, -89.0f, -104.0f}) gate.push_back(g);
  for (size_t i = 0; i < gate.size(); ++i) up.push_back(0.5f + 0.01f * static_cast<float>(i % 97));
  std::vector<float> out = gate;
  SiluMulRow(out.data(), up.data(), static_cast<int64_t>(out.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i], want = g / (1.0 + std::exp(-g)) * up[i];
    // Below g ≈ -87 exp(-g) is clamped (Exp16), so the result is tiny rather than tinier.
    EXPECT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-30) << "gate " << g;
  }
}

// The sampler's weights: exp(x - max) against float64, the maximum's weight exactly 1; then
// the ids at or above a threshold, ascending, and their sum. n = 1,003: vector body and tail.
TEST(OpsTest, ExpShiftedRowAndSelectAtLeastMatchScalarLoops) {
  std::vector<float> x(1003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.031f * static_cast<float>((i * 37) % 1003) - 20.0f;
  x[500] = 12.5f;
  std::vector<float> w(x.size());
  float max_x = 0;
  const double sum = ExpShiftedRow(x.data(), static_cast<int64_t>(x.size()), w.data(), &max_x);
  EXPECT_EQ(max_x, 12.5f);
  EXPECT_EQ(w[500], 1.0f);
  double want_sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i] - 12.5f));  // the float difference
    EXPECT_NEAR(w[i], want, 4e-7 * want + 1e-40) << "i " << i;
    want_sum += w[i];
  }
  EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum);
  for (float threshold : {1e-20f, 1e-12f, 1e-4f, 1.0f, 2.0f}) {
    std::vector<int32_t> ids(x.size());
    double picked_sum = 0;
    const int64_t n = SelectAtLeast(w.data(), static_cast<int64_t>(w.size()), threshold, ids.data(), &picked_sum);
    std::vector<int32_t> want_ids;
    double want_picked = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] >= threshold) {
        want_ids.push_back(static_cast<int32_t>(i));
        want_picked += w[i];
      }
    }
    ASSERT_EQ(n, static_cast<int64_t>(want_ids.size())) << "threshold " << threshold;
    EXPECT_TRUE(std::equal(want_ids.begin(), want_ids.end(), ids.begin())) << "threshold " << threshold;
    EXPECT_NEAR(picked_sum, want_picked, 1e-6 * want_picked + 1e-30) << "threshold " << threshold;
  }
}

}  // namespace
}  // namespace peng::kernels
