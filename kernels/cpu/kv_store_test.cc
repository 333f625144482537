#include "kernels/cpu/kv_store.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"

namespace peng::kernels {
namespace {

TEST(KvStoreTest, QuantizedRowsRoundTripWithinHalfAStepOfTheirGroup) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (auto [bits, groups] : {std::pair{8, 1}, {4, 2}, {2, 4}, {8, 4}, {4, 1}}) {
    const int n = 64;
    std::vector<float> x(n), y(n);
    for (float& e : x) e = nd(rng);
    std::vector<uint16_t> codes(n * bits / 16), meta(2 * groups);
    QuantizeKvRow(x.data(), n, bits, groups, codes.data(), meta.data());
    DequantizeKvRow(codes.data(), meta.data(), n, bits, groups, y.data());
    for (int g = 0; g < groups; ++g) {
      const float scale = Fp16ToFp32(meta[2 * g]);
      EXPECT_GT(scale, 0.0f);
      for (int i = g * n / groups; i < (g + 1) * n / groups; ++i) {
        // Half a quantization step, plus the fp16 rounding of zero and scale·code.
        EXPECT_LE(std::abs(x[i] - y[i]), 0.5f * scale + 2e-3f * (std::abs(x[i]) + 1.0f))
            << "bits " << bits << " groups " << groups << " i " << i;
      }
    }
  }
}

TEST(KvStoreTest, AConstantGroupIsExactAndCodesArePackedLittleEndian) {
  std::vector<float> x(16, 1.5f), y(16);
  x[1] = 3.5f;  // second group: scale (3.5 - 1.5) / 15 ... only x[1] is high
  std::vector<uint16_t> codes(4), meta(4);
  QuantizeKvRow(x.data(), 16, 4, 2, codes.data(), meta.data());
  DequantizeKvRow(codes.data(), meta.data(), 16, 4, 2, y.data());
  EXPECT_EQ((codes[0] >> 4) & 0xf, 15);  // element 1 is its group's max: code 15 at bits 4..7
  EXPECT_EQ(codes[0] & 0xf, 0);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(y[i], 1.5f);  // constant group: scale 0, exact
}

TEST(KvStoreTest, TokensLandInTheirSlotForEveryFormat) {
  for (KvFormat f : {KvFormat::kF32, KvFormat::kF16, KvFormat::kBF16, KvFormat::kK8V8, KvFormat::kK8V4,
                     KvFormat::kK4V2}) {
    const int hd = 64, tpp = 16;
    const KvPageSegments s = PageSegmentsOf(f, hd, tpp);
    std::vector<uint8_t> page(s.page_bytes, 0);
    std::vector<float> k(hd), v(hd), k2(hd), v2(hd);
    for (int i = 0; i < hd; ++i) {
      k[i] = 0.25f * i - 3.0f;
      v[i] = 2.0f - 0.125f * i;
    }
    StoreKvToken(f, hd, tpp, k.data(), v.data(), 1234, 7, page.data());
    LoadKvToken(f, hd, tpp, page.data(), 7, k2.data(), v2.data());
    // Half a quantization step of the whole row's range (k spans 15.75, v 7.875) bounds the error.
    const KvQuant q = QuantOf(f);
    const double k_tol = IsQuantized(f) ? 15.75 / ((1 << q.k_bits) - 1) / 2 + 0.02 : 0.02;
    const double v_tol = IsQuantized(f) ? 7.875 / ((1 << q.v_bits) - 1) / 2 + 0.02 : 0.02;
    for (int i = 0; i < hd; ++i) {
      EXPECT_NEAR(k2[i], k[i], k_tol) << KvFormatName(f);
      EXPECT_NEAR(v2[i], v[i], v_tol) << KvFormatName(f);
    }
    if (IsQuantized(f)) {
      int32_t pos;
      std::memcpy(&pos, page.data() + s.positions + 4 * 7, 4);
      EXPECT_EQ(pos, 1234);
      EXPECT_LE(s.positions + 4 * tpp, s.page_bytes);
    }
  }
  // LeanKV's accounting at head_dim 64 (fp16 256 B/token/head: K8V8 144, K8V4 112, K4V2 64
  // with one group each); Peng's default grouping (2 groups at 4 bits, 4 at 2) adds 4-12 B.
  EXPECT_DOUBLE_EQ(KvBytesPerToken(KvFormat::kF16, 64, 16), 256.0);
  EXPECT_LE(KvBytesPerToken(KvFormat::kK8V8, 64, 16), 144.0);
  EXPECT_LE(KvBytesPerToken(KvFormat::kK8V4, 64, 16), 116.0);
  EXPECT_LE(KvBytesPerToken(KvFormat::kK4V2, 64, 16), 80.0);
}

}  // namespace
}  // namespace peng::kernels
