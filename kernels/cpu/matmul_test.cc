#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/interleaved.h"

namespace peng::kernels {
namespace {

// Random but well-formed blocks: finite fp16 scales, arbitrary code bytes.
std::vector<uint8_t> RandomRows(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> data(rows * row_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  const GgmlTypeTraits& tr = Traits(type);
  auto set_half = [&](uint8_t* p) {
    const uint16_t h = Fp32ToFp16(scale(rng));
    __builtin_memcpy(p, &h, 2);
  };
  for (size_t blk = 0; blk < data.size() / tr.block_bytes; ++blk) {
    uint8_t* p = data.data() + blk * tr.block_bytes;
    switch (type) {
      case GgmlType::kF32: {
        const float f = scale(rng);
        __builtin_memcpy(p, &f, 4);
        break;
      }
      case GgmlType::kF16: case GgmlType::kBF16: set_half(p); if (type == GgmlType::kBF16) { p[0] = 0; } break;
      case GgmlType::kQ4_1: case GgmlType::kQ5_1: case GgmlType::kQ4_K: case GgmlType::kQ5_K:
        set_half(p); set_half(p + 2); break;
      case GgmlType::kQ6_K: case GgmlType::kQ3_K: set_half(p + tr.block_bytes - 2); break;
      case GgmlType::kQ2_K: set_half(p + tr.block_bytes - 4); set_half(p + tr.block_bytes - 2); break;
      default: set_half(p); break;
    }
  }
  return data;
}

class MatMulTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(MatMulTest, MatchesDequantizedDoubleReference) {
  const GgmlType type = GetParam();
  std::mt19937 rng(42);
  const int64_t rows = 37, cols = 512, tokens = 6;
  std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
  MatrixView w{type, rows, cols, data.data(), RowBytes(type, cols)};
  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);

  std::vector<float> dense(rows * cols);
  DequantizeRows(w, 0, rows, dense.data());
  std::vector<float> y(tokens * rows, NAN), scratch(cols);
  MatMulRows(w, x.data(), cols, tokens, y.data(), rows, 0, rows, scratch.data());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += double(dense[r * cols + c]) * x[t * cols + c];
        mag += std::fabs(double(dense[r * cols + c]) * x[t * cols + c]);
      }
      ASSERT_NEAR(y[t * rows + r], ref, 1e-5 * mag + 1e-6) << Traits(type).name << " t=" << t << " r=" << r;
    }
  }
}

TEST_P(MatMulTest, EveryBatchSizeGivesBitwiseTheSameRow) {
  const GgmlType type = GetParam();
  std::mt19937 rng(7);
  const int64_t rows = 19, cols = 256, tokens = 13;
  std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
  MatrixView w{type, rows, cols, data.data(), RowBytes(type, cols)};
  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<float> scratch(cols), alone(tokens * rows), batched(tokens * rows);
  for (int64_t t = 0; t < tokens; ++t) {
    MatMulRows(w, x.data() + t * cols, cols, 1, alone.data() + t * rows, rows, 0, rows, scratch.data());
  }
  for (int64_t n : {2, 5, 13}) {  // decode-style, panel with a token remainder, panel
    std::fill(batched.begin(), batched.end(), NAN);
    for (int64_t t0 = 0; t0 < tokens; t0 += n) {
      const int64_t m = std::min(n, tokens - t0);
      MatMulRows(w, x.data() + t0 * cols, cols, m, batched.data() + t0 * rows, rows, 0, rows, scratch.data());
    }
    for (size_t i = 0; i < alone.size(); ++i) {
      ASSERT_EQ(std::memcmp(&alone[i], &batched[i], sizeof(float)), 0)
          << Traits(type).name << " batch " << n << " element " << i << ": " << alone[i] << " vs " << batched[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTest,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16,
                                           GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,
                                           GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K,
                                           GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K, GgmlType::kIQ4_NL, GgmlType::kIQ4_XS),
                         [](const auto& info) { return std::string(Traits(info.param).name); });

class InterleavedTest : public ::testing::TestWithParam<GgmlType> {
 protected:
  // `cols` rounded up to whole blocks of the test's type (K-quants: super-blocks of 256).
  static int64_t Cols(int64_t cols) {
    const int64_t block = Traits(GetParam()).block_elems;
    return (cols + block - 1) / block * block;
  }
  // Random GGML rows of the test's type and their interleaved copy.
  struct Packed {
    std::vector<uint8_t> data, packed;
  };
  static Packed RandomPacked(int64_t rows, int64_t cols, std::mt19937& rng) {
    Packed p{RandomRows(GetParam(), rows, cols, rng), std::vector<uint8_t>(InterleavedBytes(GetParam(), rows, cols))};
    Interleave(GetParam(), p.data.data(), rows, cols, p.packed.data());
    return p;
  }
};

// The I16 layout gives the same products as the GGML layout (within float rounding), the same
// dequantized rows, and bitwise the same result for a token whatever the batch size.
TEST_P(InterleavedTest, MatchesGgmlLayoutAndIsBatchInvariant) {
  const GgmlType type = GetParam();
  std::mt19937 rng(5);
  const int64_t rows = 48, cols = Cols(192), tokens = 15;
  std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
  ASSERT_TRUE(CanInterleave(type, rows, cols));
  std::vector<uint8_t> packed(InterleavedBytes(type, rows, cols));
  Interleave(type, data.data(), rows, cols, packed.data());
  MatrixView plain{type, rows, cols, data.data(), RowBytes(type, cols)};
  MatrixView inter{type, rows, cols, packed.data(), RowBytes(type, cols), true};
  std::vector<float> a(rows * cols), b(rows * cols);
  DequantizeRows(plain, 0, rows, a.data());
  DequantizeRows(inter, 0, rows, b.data());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << i;  // decoded exactly

  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<float> scratch(cols), ref(tokens * rows), alone(tokens * rows), batched(tokens * rows);
  MatMulRows(plain, x.data(), cols, tokens, ref.data(), rows, 0, rows, scratch.data());
  for (int64_t t = 0; t < tokens; ++t) {
    MatMulRows(inter, x.data() + t * cols, cols, 1, alone.data() + t * rows, rows, 0, rows, scratch.data());
  }
  for (int64_t t = 0; t < tokens; ++t) {  // summed in another order: within rounding of the terms' size
    for (int64_t r = 0; r < rows; ++r) {
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(a[r * cols + c]) * x[t * cols + c]);
      ASSERT_NEAR(alone[t * rows + r], ref[t * rows + r], 1e-6 * mag + 1e-6) << "t=" << t << " r=" << r;
    }
  }
  for (int64_t n : {2, 6, 7, 15}) {
    for (int64_t t0 = 0; t0 < tokens; t0 += n) {
      const int64_t m = std::min(n, tokens - t0);
      // Two thread-like halves of the rows, as the forward splits them.
      MatMulRows(inter, x.data() + t0 * cols, cols, m, batched.data() + t0 * rows, rows, 0, 16, scratch.data());
      MatMulRows(inter, x.data() + t0 * cols, cols, m, batched.data() + t0 * rows, rows, 16, rows, scratch.data());
    }
    ASSERT_EQ(std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)), 0) << "batch " << n;
  }
}

// Deinterleave gives back the GGML rows byte for byte (the CUDA worker uploads those) for the
// types whose tiles keep them; the others' tiles hold decoded blocks.
TEST_P(InterleavedTest, DeinterleaveRestoresGgmlRows) {
  const GgmlType type = GetParam();
  if (!CanDeinterleave(type)) {
    EXPECT_NE(TileFormatOf(type), TileFormat::kQ4_1);
    EXPECT_NE(TileFormatOf(type), TileFormat::kQ8_0);
    GTEST_SKIP() << "tiles of decoded blocks";
  }
  std::mt19937 rng(11);
  const int64_t rows = 32, cols = 96;
  std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
  ASSERT_TRUE(CanInterleave(type, rows, cols));
  std::vector<uint8_t> packed(InterleavedBytes(type, rows, cols)), back(data.size(), 0xa5);
  Interleave(type, data.data(), rows, cols, packed.data());
  Deinterleave(type, packed.data(), rows, cols, back.data());
  EXPECT_EQ(back, data);
}

// Int8 activations: QuantizeActivations rounds each 32-column block to round(x / s) with
// s = max|x| / 127; the VNNI kernel then equals the float64 product of the dequantized weights and
// the rounded activations (integer dots are exact), bitwise the same for any batch size.
TEST(QuantizeActivationsTest, RoundsEachBlockSymmetrically) {
  std::mt19937 rng(3);
  const int64_t cols = 96, tokens = 3;
  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd(0, 2);
  for (auto& v : x) v = nd(rng);
  for (int c = 32; c < 64; ++c) x[cols + c] = 0;  // an all-zero block
  std::vector<int8_t> codes(tokens * cols);
  std::vector<float> scales(tokens * cols / 16);
  QuantizeActivations(x.data(), cols, tokens, cols, codes.data(), scales.data());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t b = 0; b < cols / 32; ++b) {
      float amax = 0;
      for (int c = 0; c < 32; ++c) amax = std::max(amax, std::fabs(x[t * cols + b * 32 + c]));
      const float s = scales[(t * (cols / 32) + b) * 2];
      EXPECT_FLOAT_EQ(s, amax / 127.0f);
      int sum = 0;
      for (int c = 0; c < 32; ++c) {
        const int q = codes[t * cols + b * 32 + c];
        sum += q;
        EXPECT_LE(std::abs(q), 127);
        EXPECT_LE(std::fabs(q * s - x[t * cols + b * 32 + c]), 0.5f * s * (1 + 1e-5f) + 1e-12f);
      }
      EXPECT_FLOAT_EQ(scales[(t * (cols / 32) + b) * 2 + 1], s * sum);
    }
  }
}

TEST_P(InterleavedTest, Int8KernelMatchesRoundedActivationsAndIsBatchInvariant) {
  if (!HasInt8MatMul()) GTEST_SKIP() << "built without AVX-512 VNNI";
  const GgmlType type = GetParam();
  std::mt19937 rng(11);
  const int64_t rows = 64, cols = Cols(256), tokens = 11;
  const auto [data, packed] = RandomPacked(rows, cols, rng);
  MatrixView plain{type, rows, cols, data.data(), RowBytes(type, cols)};
  std::vector<float> dense(rows * cols);
  DequantizeRows(plain, 0, rows, dense.data());
  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<int8_t> codes(tokens * cols);
  std::vector<float> scales(tokens * cols / 16);
  QuantizeActivations(x.data(), cols, tokens, cols, codes.data(), scales.data());

  std::vector<float> alone(tokens * rows, NAN), batched(tokens * rows, NAN);
  for (int64_t t = 0; t < tokens; ++t) {
    MatMulInterleavedInt8(type, packed.data(), cols, codes.data() + t * cols, scales.data() + t * cols / 16,
                          1, alone.data() + t * rows, rows, 0, rows);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double xr = double(codes[t * cols + c]) * scales[(t * cols + c) / 32 * 2];
        ref += double(dense[r * cols + c]) * xr;
        mag += std::fabs(double(dense[r * cols + c]) * xr);
      }
      ASSERT_NEAR(alone[t * rows + r], ref, 1e-5 * mag + 1e-6) << "t=" << t << " r=" << r;
    }
  }
  for (int64_t n : {2, 4, 5, 11}) {
    for (int64_t t0 = 0; t0 < tokens; t0 += n) {
      const int64_t m = std::min(n, tokens - t0);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 16}, {16, 48}, {48, rows}}) {
        MatMulInterleavedInt8(type, packed.data(), cols, codes.data() + t0 * cols, scales.data() + t0 * cols / 16,
                              m, batched.data() + t0 * rows, rows, r0, r1);
      }
    }
    ASSERT_EQ(std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)), 0) << "batch " << n;
  }
}

// The AMX kernel: weights d·u + m and activations rounded to bfloat16, products summed in
// float. It matches a float64 sum of those rounded operands, stays within bfloat16 rounding of
// the float product, and gives bitwise the same result for a token whatever the batch and the
// row split.
TEST_P(InterleavedTest, AmxKernelMatchesBf16OperandsAndIsBatchInvariant) {
  if (!HasAmxBf16()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  const GgmlType type = GetParam();
  std::mt19937 rng(13);
  const int64_t rows = 80, cols = Cols(192), tokens = 45;
  const auto [data, packed] = RandomPacked(rows, cols, rng);
  // The weights as the kernel rounds them: fma(u, d, m) in float (every type's dequantized
  // weight exactly: d·u is exact), then bfloat16.
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<float> dense(rows * cols);
  DequantizeRows(MatrixView{type, rows, cols, data.data(), row_bytes}, 0, rows, dense.data());
  std::vector<double> w16(rows * cols);
  for (size_t i = 0; i < w16.size(); ++i) w16[i] = Bf16ToFp32(Fp32ToBf16(dense[i]));
  std::vector<float> x(tokens * cols);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  const int64_t padded = (tokens + kAmxTokenBlock - 1) / kAmxTokenBlock * kAmxTokenBlock;
  std::vector<uint16_t> xb(padded * cols, 0xffff);
  ConvertToBf16(x.data(), cols, tokens, cols, xb.data());
  for (int64_t i = 0; i < tokens * cols; ++i) ASSERT_EQ(xb[i], Fp32ToBf16(x[i])) << i;
  for (int64_t i = tokens * cols; i < padded * cols; ++i) ASSERT_EQ(xb[i], 0xffff) << i;  // untouched

  std::vector<uint8_t> scratch_store(AmxScratchBytes(cols) + 64);
  uint8_t* scratch = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch_store.data()) + 63) & ~uintptr_t{63});
  std::vector<float> alone(tokens * rows, NAN), batched(tokens * rows, NAN);
  std::vector<uint16_t> one(kAmxTokenBlock * cols, 0xffff);  // rows 1.. hold NaNs: never read into row 0
  for (int64_t t = 0; t < tokens; ++t) {
    ConvertToBf16(x.data() + t * cols, cols, 1, cols, one.data());
    MatMulInterleavedAmx(type, packed.data(), cols, one.data(), 1, alone.data() + t * rows, rows, 0, rows, scratch);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, exact = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += w16[r * cols + c] * Bf16ToFp32(xb[t * cols + c]);
        exact += double(dense[r * cols + c]) * x[t * cols + c];
        mag += std::fabs(double(dense[r * cols + c]) * x[t * cols + c]);
      }
      ASSERT_NEAR(alone[t * rows + r], ref, 1e-5 * mag + 1e-6) << "t=" << t << " r=" << r;
      ASSERT_NEAR(alone[t * rows + r], exact, 1.0 / 128 * mag) << "t=" << t << " r=" << r;
    }
  }
  for (int64_t n : {2, 16, 17, 32, 33, 45}) {
    std::vector<uint16_t> part(padded * cols, 0x7f80);  // +inf beyond the call's rows
    for (int64_t t0 = 0; t0 < tokens; t0 += n) {
      const int64_t m = std::min(n, tokens - t0);
      ConvertToBf16(x.data() + t0 * cols, cols, m, cols, part.data());
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 16}, {16, 48}, {48, rows}}) {
        MatMulInterleavedAmx(type, packed.data(), cols, part.data(), m, batched.data() + t0 * rows, rows, r0, r1, scratch);
      }
    }
    ASSERT_EQ(std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)), 0) << "batch " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, InterleavedTest,
                         ::testing::Values(GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ5_0,
                                           GgmlType::kQ5_1, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K, GgmlType::kIQ4_NL, GgmlType::kIQ4_XS),
                         [](const auto& info) { return std::string(Traits(info.param).name); });

// A damaged row (every byte 0xff: NaN scales, or NaN values for the float types) is found by
// its index; random well-formed rows pass.
TEST(DequantizeTest, FirstNonFiniteRowFindsTheDamagedRow) {
  std::mt19937 rng(17);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
                        GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K, GgmlType::kQ3_K,
                        GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kIQ4_NL, GgmlType::kIQ4_XS}) {
    const int64_t rows = 5, cols = 512;
    std::vector<uint8_t> data = RandomRows(type, rows, cols, rng);
    EXPECT_EQ(FirstNonFiniteRow(type, data.data(), rows, cols), -1) << Traits(type).name;
    const size_t row_bytes = RowBytes(type, cols);
    std::fill(data.begin() + 3 * row_bytes, data.begin() + 4 * row_bytes, uint8_t{0xff});
    EXPECT_EQ(FirstNonFiniteRow(type, data.data(), rows, cols), 3) << Traits(type).name;
  }
}

TEST(DequantizeTest, Q4_1KnownBlock) {
  BlockQ4_1 b{};
  b.d = Fp32ToFp16(0.5f);
  b.m = Fp32ToFp16(-1.0f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  ASSERT_TRUE(DequantizeRow(GgmlType::kQ4_1, &b, y, 32));
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(y[j], 0.5f * j - 1.0f);
    EXPECT_FLOAT_EQ(y[j + 16], 0.5f * (15 - j) - 1.0f);
  }
}

TEST(Fp16Test, RoundTripsRepresentableValues) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(Fp16ToFp32(Fp32ToFp16(f)), f);
  }
}

}  // namespace
}  // namespace peng::kernels
