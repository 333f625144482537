#include "kernels/cpu/kv_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"

namespace peng::kernels {
namespace {

// Every quantized (bits, groups) pair for keys and values is a format with a name that parses
// back to it; the presets keep their short names; malformed names are refused.
TEST(KvFormatTest, EveryBitsAndGroupsComboIsAFormatWithARoundTrippingName) {
  int count = 0;
  for (int kb : {1, 2, 4, 8}) {
    for (int kg : {1, 2, 4}) {
      for (int vb : {1, 2, 4, 8}) {
        for (int vg : {1, 2, 4}) {
          const KvQuant q{kb, kg, vb, vg};
          ASSERT_TRUE(ValidKvQuant(q));
          const KvFormat f = QuantFormat(q);
          EXPECT_TRUE(IsQuantized(f));
          EXPECT_EQ(QuantOf(f), q);
          KvFormat back = KvFormat::kF32;
          ASSERT_TRUE(ParseKvFormat(KvFormatName(f), &back)) << KvFormatName(f);
          EXPECT_EQ(back, f) << KvFormatName(f);
          ++count;
        }
      }
    }
  }
  EXPECT_EQ(count, 144);
  EXPECT_STREQ(KvFormatName(KvFormat::kK8V4), "k8v4");
  EXPECT_STREQ(KvFormatName(KvFormat::kK4V2), "k4v2");
  EXPECT_STREQ(KvFormatName(QuantFormat({8, 2, 4, 4})), "k8g2v4g4");
  KvFormat f = KvFormat::kF32;
  ASSERT_TRUE(ParseKvFormat("k8g1v4g2", &f));
  EXPECT_EQ(f, KvFormat::kK8V4);
  ASSERT_TRUE(ParseKvFormat("k2v1", &f));
  EXPECT_EQ(QuantOf(f), (KvQuant{2, 4, 1, 4}));
  for (const char* bad : {"", "k", "k8", "k8v", "k3v4", "k8v4x", "k8g3v4", "k8g2v4g", "v4k8", "k16v8", "fp16",
                          "k08v4g2g2", "quant-any"}) {
    EXPECT_FALSE(ParseKvFormat(bad, &f)) << bad;
  }
  EXPECT_FALSE(IsQuantized(KvFormat::kF16));
  EXPECT_FALSE(ValidKvQuant({8, 3, 4, 2}));
  EXPECT_FALSE(ValidKvQuant({5, 1, 4, 2}));
}

TEST(KvStoreTest, QuantizedRowsRoundTripWithinHalfAStepOfTheirGroup) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (auto [bits, groups] : {std::pair{8, 1}, {4, 2}, {2, 4}, {8, 4}, {4, 1}, {1, 4}, {1, 1}, {2, 2}}) {
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

// The vector packing and unpacking (groups of a multiple of 16 values) against the layout's
// definition, element by element: code i at bit i·bits, value fma(code, scale, zero). Rows of
// 80 values take the scalar loops for groups of 20 and 40.
TEST(KvStoreTest, PackedCodesAndValuesMatchTheLayoutElementByElement) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int n : {64, 80, 128}) {
    for (int bits : {1, 2, 4, 8}) {
      for (int groups : {1, 2, 4}) {
        std::vector<float> x(n), y(n);
        for (float& e : x) e = nd(rng);
        std::vector<uint16_t> codes((n * bits + 15) / 16), meta(2 * groups);
        QuantizeKvRow(x.data(), n, bits, groups, codes.data(), meta.data());
        DequantizeKvRow(codes.data(), meta.data(), n, bits, groups, y.data());
        const int per_group = n / groups;
        for (int i = 0; i < n; ++i) {
          const int g = i / per_group;
          const float scale = Fp16ToFp32(meta[2 * g]), zero = Fp16ToFp32(meta[2 * g + 1]);
          const float inv = scale > 0 ? 1.0f / scale : 0.0f;
          const int want = std::clamp(static_cast<int>(std::lrint((x[i] - zero) * inv)), 0, (1 << bits) - 1);
          const int got = (codes[i * bits / 16] >> (i * bits % 16)) & ((1 << bits) - 1);
          ASSERT_EQ(got, want) << "n " << n << " bits " << bits << " groups " << groups << " i " << i;
          ASSERT_EQ(y[i], std::fma(static_cast<float>(want), scale, zero)) << "n " << n << " bits " << bits << " i " << i;
        }
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
                     KvFormat::kK4V2, QuantFormat({1, 4, 2, 1}), QuantFormat({4, 4, 8, 2})}) {
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

TEST(KvStoreTest, DenseKeysLieInKeyLaneBlocks) {
  const int hd = 24;
  for (KvFormat f : {KvFormat::kF32, KvFormat::kF16, KvFormat::kBF16}) {
    for (const int tpp : {1, 4, 16, 64}) {
      const int lanes = KeyLanes(f, tpp);
      EXPECT_EQ(lanes, std::min(tpp, 16));
      const KvPageSegments s = PageSegmentsOf(f, hd, tpp);
      const size_t bytes = KvFormatBytes(f);
      std::vector<uint8_t> page(s.page_bytes, 0);
      std::vector<float> k(hd), v(hd), k2(hd), v2(hd), one(1);
      for (int slot = 0; slot < tpp; ++slot) {
        for (int d = 0; d < hd; ++d) {
          k[d] = 0.5f * slot + 0.25f * d;  // exact in bf16 for these ranges
          v[d] = -k[d];
        }
        StoreKvToken(f, hd, tpp, k.data(), v.data(), slot, slot, page.data());
      }
      for (int slot = 0; slot < tpp; ++slot) {
        LoadKvToken(f, hd, tpp, page.data(), slot, k2.data(), v2.data());
        for (int d = 0; d < hd; ++d) {
          ASSERT_EQ(k2[d], 0.5f * slot + 0.25f * d) << KvFormatName(f) << " tpp " << tpp;
          ASSERT_EQ(v2[d], -k2[d]);
          // Key (slot, d) at ((slot / L) * hd + d) * L + slot % L; values in token rows.
          const size_t at = ((static_cast<size_t>(slot) / lanes) * hd + d) * lanes + slot % lanes;
          LoadKvRow(page.data() + s.k + at * bytes, f, 1, one.data());
          ASSERT_EQ(one[0], k2[d]) << KvFormatName(f) << " tpp " << tpp << " slot " << slot << " d " << d;
        }
      }
    }
  }
  // Quantized pages keep token rows of codes.
  EXPECT_EQ(KeyLanes(KvFormat::kK8V4, 16), 0);
}

}  // namespace
}  // namespace peng::kernels
