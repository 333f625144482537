#include "kernels/cpu/ops.h"

#include <cmath>
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

}  // namespace
}  // namespace peng::kernels
