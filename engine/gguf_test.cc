#include "engine/gguf.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/testing/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

// Writes a small but complete GGUF v3 image: every metadata type, nested arrays, two tensors.
class GgufBuilder {
 public:
  template <typename T>
  void Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  std::vector<uint8_t> Build() {
    bytes_.clear();
    Put<uint32_t>(0x46554747);
    Put<uint32_t>(3);
    Put<uint64_t>(2);   // tensors
    Put<uint64_t>(15);  // kv
    auto key = [&](const std::string& k, GgufType t) { PutString(k); Put<uint32_t>(uint32_t(t)); };
    key("u8", GgufType::kUint8); Put<uint8_t>(200);
    key("i8", GgufType::kInt8); Put<int8_t>(-5);
    key("u16", GgufType::kUint16); Put<uint16_t>(60000);
    key("i16", GgufType::kInt16); Put<int16_t>(-300);
    key("u32", GgufType::kUint32); Put<uint32_t>(4000000000u);
    key("i32", GgufType::kInt32); Put<int32_t>(-70000);
    key("f32", GgufType::kFloat32); Put<float>(1.5f);
    key("bool", GgufType::kBool); Put<uint8_t>(1);
    key("str", GgufType::kString); PutString("héllo");
    key("u64", GgufType::kUint64); Put<uint64_t>(1ull << 40);
    key("i64", GgufType::kInt64); Put<int64_t>(-(1ll << 40));
    key("f64", GgufType::kFloat64); Put<double>(2.25);
    key("strs", GgufType::kArray); Put<uint32_t>(uint32_t(GgufType::kString)); Put<uint64_t>(3);
    PutString("a"); PutString(""); PutString("<|im_end|>");
    key("floats", GgufType::kArray); Put<uint32_t>(uint32_t(GgufType::kFloat32)); Put<uint64_t>(2);
    Put<float>(-1.0f); Put<float>(0.5f);
    key("nested", GgufType::kArray); Put<uint32_t>(uint32_t(GgufType::kArray)); Put<uint64_t>(1);
    Put<uint32_t>(uint32_t(GgufType::kInt32)); Put<uint64_t>(2); Put<int32_t>(7); Put<int32_t>(8);
    // Tensor infos: an F32 [4, 2] and a Q8_0 [32, 1].
    PutString("a.weight"); Put<uint32_t>(2); Put<int64_t>(4); Put<int64_t>(2);
    Put<uint32_t>(0); Put<uint64_t>(0);
    PutString("b.weight"); Put<uint32_t>(1); Put<int64_t>(32);
    Put<uint32_t>(8); Put<uint64_t>(32);
    while (bytes_.size() % 32) bytes_.push_back(0);
    for (int i = 0; i < 8; ++i) Put<float>(float(i));
    while (bytes_.size() % 32) bytes_.push_back(0);
    Put<uint16_t>(0x3c00);  // d = 1.0
    for (int i = 0; i < 32; ++i) Put<int8_t>(int8_t(i - 16));
    return bytes_;
  }

 private:
  std::vector<uint8_t> bytes_;
};

TEST(GgufTest, ParsesEveryValueType) {
  std::vector<uint8_t> img = GgufBuilder().Build();
  auto g = GgufFile::ParseBuffer("mem", img);
  ASSERT_TRUE(g.ok()) << g.status();
  const GgufFile& f = **g;
  EXPECT_EQ(*f.GetInt("u8"), 200);
  EXPECT_EQ(*f.GetInt("i8"), -5);
  EXPECT_EQ(*f.GetInt("u16"), 60000);
  EXPECT_EQ(*f.GetInt("i16"), -300);
  EXPECT_EQ(*f.GetInt("u32"), 4000000000ll);
  EXPECT_EQ(*f.GetInt("i32"), -70000);
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_TRUE(*f.GetBool("bool"));
  EXPECT_EQ(*f.GetString("str"), "héllo");
  EXPECT_EQ(*f.GetInt("u64"), 1ll << 40);
  EXPECT_EQ(*f.GetInt("i64"), -(1ll << 40));
  EXPECT_EQ(*f.GetFloat("f64"), 2.25);
  EXPECT_EQ(*f.GetStringArray("strs"), (std::vector<std::string>{"a", "", "<|im_end|>"}));
  EXPECT_EQ(*f.GetFloatArray("floats"), (std::vector<float>{-1.0f, 0.5f}));
  EXPECT_EQ(f.Find("nested")->array[0].array[1].i, 8);
  EXPECT_FALSE(f.GetString("u8").ok());  // wrong type is an error, not a crash
  EXPECT_EQ(f.GetInt("missing").status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensor* a = f.FindTensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->nbytes, 32u);
  EXPECT_EQ(reinterpret_cast<const float*>(a->data)[7], 7.0f);
  EXPECT_EQ(f.FindTensor("b.weight")->nbytes, 34u);
}

TEST(GgufTest, EveryTruncationIsAnErrorNotACrash) {
  std::vector<uint8_t> img = GgufBuilder().Build();
  for (size_t len = 0; len < img.size(); ++len) {
    auto g = GgufFile::ParseBuffer("mem", std::span<const uint8_t>(img.data(), len));
    EXPECT_FALSE(g.ok()) << "length " << len;
    if (!g.ok()) {
      EXPECT_FALSE(g.status().message().empty());
    }
  }
}

TEST(GgufTest, RandomMutationsNeverCrash) {
  std::vector<uint8_t> img = GgufBuilder().Build();
  std::mt19937 rng(1234);
  int failures = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<uint8_t> m = img;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<uint8_t>(rng());
    auto g = GgufFile::ParseBuffer("mem", m);
    if (!g.ok()) {
      ++failures;
      continue;
    }
    // A file that parses must have in-bounds tensor views.
    for (const GgufTensor& t : (*g)->tensors()) {
      ASSERT_LE(t.nbytes, m.size());
      volatile uint8_t sink = t.nbytes ? t.data[t.nbytes - 1] : 0;
      (void)sink;
    }
  }
  EXPECT_GT(failures, 1000);  // most mutations must be detected
}

// The offset of `name`'s tensor info in an image (just past its name), for tests that corrupt it.
size_t TensorInfoOffset(const std::vector<uint8_t>& img, const std::string& name) {
  auto it = std::search(img.begin(), img.end(), name.begin(), name.end());
  EXPECT_NE(it, img.end()) << name;
  return static_cast<size_t>(it - img.begin()) + name.size();
}

// No byte of an error message is a control character or beyond ASCII: names read from a corrupt
// file are escaped.
bool IsPrintable(absl::string_view message) {
  return std::all_of(message.begin(), message.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
}

TEST(GgufTest, AFileCutInsideTheHeaderSaysItIsTruncated) {
  std::vector<uint8_t> img = GgufBuilder().Build();
  for (size_t len : {24, 100}) {
    auto g = GgufFile::ParseBuffer("cut.gguf", std::span<const uint8_t>(img.data(), len));
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), absl::StatusCode::kDataLoss);
    const std::string msg(g.status().message());
    EXPECT_THAT(msg, ::testing::StartsWith("cut.gguf: truncated file")) << len;
    EXPECT_THAT(msg, ::testing::Not(::testing::HasSubstr("implausible"))) << len;
  }
  std::vector<uint8_t> huge = img;
  const uint64_t count = uint64_t{1} << 40;
  std::memcpy(huge.data() + 8, &count, 8);  // the tensor count
  EXPECT_THAT(std::string(GgufFile::ParseBuffer("huge", huge).status().message()),
              ::testing::HasSubstr("implausible tensor count"));
}

TEST(GgufTest, ABadKeyLengthIsReportedWithoutRawBytes) {
  const std::vector<uint8_t> img = GgufBuilder().Build();
  // The first key, "u8", at offset 24: one byte longer takes in the type's first (zero) byte.
  std::vector<uint8_t> longer = img;
  longer[24] = 3;
  auto g = GgufFile::ParseBuffer("key.gguf", longer);
  ASSERT_FALSE(g.ok());
  std::string msg(g.status().message());
  EXPECT_THAT(msg, ::testing::HasSubstr("metadata key #0 at offset 24 is not a valid key (3 bytes: \"u8\\x00\")"));
  EXPECT_TRUE(IsPrintable(msg)) << msg;
  // A length beyond the file: said so, and the bytes are not printed at all.
  std::vector<uint8_t> huge = img;
  const uint64_t n = 1u << 20;
  std::memcpy(huge.data() + 24, &n, 8);
  msg = std::string(GgufFile::ParseBuffer("key.gguf", huge).status().message());
  EXPECT_THAT(msg, ::testing::HasSubstr("metadata key #0: a string of 1048576 bytes at offset 32 exceeds the file"));
  EXPECT_TRUE(IsPrintable(msg)) << msg;
}

TEST(GgufTest, OverlappingOrOverlongTensorsAreRejected) {
  const std::vector<uint8_t> img = GgufBuilder().Build();
  // a.weight F32 [4, 2] holds data bytes [0, 32); b.weight starts at 32. As [4, 4] it would
  // cover b's bytes, as a wrong type in a tensor table does.
  std::vector<uint8_t> overlap = img;
  const size_t a = TensorInfoOffset(overlap, "a.weight");
  const int64_t rows = 4;
  std::memcpy(overlap.data() + a + 4 + 8, &rows, 8);  // after n_dims and dim 0
  auto g = GgufFile::ParseBuffer("overlap.gguf", overlap);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(g.status().message()),
              ::testing::HasSubstr("overlap.gguf: tensor a.weight (F32, data-section bytes [0, 64)) overlaps "
                                   "tensor b.weight (from byte 32): a wrong type or shape in the tensor table"));
  // b.weight (the last tensor) as F32 instead of Q8_0 runs past the end of the data.
  std::vector<uint8_t> overlong = img;
  const size_t b = TensorInfoOffset(overlong, "b.weight");
  const uint32_t f32 = 0;
  std::memcpy(overlong.data() + b + 4 + 8, &f32, 4);  // after n_dims and its one dim
  g = GgufFile::ParseBuffer("overlong.gguf", overlong);
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(std::string(g.status().message()),
              ::testing::HasSubstr("overlong.gguf: tensor b.weight (F32) needs bytes [544, 672) but the file has 578: "
                                   "a truncated file, or a wrong type or shape in the tensor table"));
}

std::string RealModelPath() { return testing::SmolLM2Path(); }

TEST(GgufTest, RealModelParsesAndItsMutatedHeaderNeverCrashes) {
  std::ifstream in(RealModelPath(), std::ios::binary);
  if (!in) GTEST_SKIP() << "model not present: " << RealModelPath();
  auto full = GgufFile::Open(RealModelPath());
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(*(*full)->GetString("general.architecture"), "llama");
  EXPECT_EQ((*full)->tensors().size(), 272u);
  // The header (metadata + tensor infos) is the first ~2 MB; mutate and truncate within it.
  std::vector<uint8_t> head(4 << 20);
  in.read(reinterpret_cast<char*>(head.data()), head.size());
  head.resize(in.gcount());
  std::mt19937 rng(99);
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<uint8_t> m(head.begin(), head.begin() + rng() % head.size());
    if (iter % 2 == 0 && !m.empty()) {
      for (int k = 0; k < 8; ++k) m[rng() % std::min<size_t>(m.size(), 1 << 21)] = static_cast<uint8_t>(rng());
    }
    auto g = GgufFile::ParseBuffer("mutated", m);
    EXPECT_FALSE(g.ok());  // the tensor data is cut off in every case
  }
}

}  // namespace
}  // namespace peng
