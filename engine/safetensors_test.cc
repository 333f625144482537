#include "engine/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

// 8-byte little-endian header length, the header, then the data section.
std::string BuildFile(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

// Exactly what python `safetensors.numpy.save` wrote for
// {"a": float32 [1.0, -2.5], "b": int16 [[7, -1]]}, metadata {"format": "pt"}: the header is
// padded with spaces to a multiple of 8.
std::string GoldenFile() {
  return BuildFile(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I16","shape":[1,2],"data_offsets":[8,12]}}   )",
      Bytes({0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, 0x07, 0x00, 0xff, 0xff}));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> ParseString(const std::string& s) {
  return SafetensorsFile::ParseBuffer(
      "buf", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / absl::StrCat("peng_st_", info->name(), "_", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary).write(bytes.data(), bytes.size());
    return p.string();
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, ReadsFileWrittenByPythonSafetensors) {
  std::string bytes = GoldenFile();
  ASSERT_EQ(bytes.size(), 164u);
  auto st = SafetensorsFile::Open(Write("golden.safetensors", bytes));
  ASSERT_TRUE(st.ok()) << st.status();
  const auto& f = **st;
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "a");  // data-offset order
  EXPECT_THAT(f.metadata(), ElementsAre(std::pair<std::string, std::string>("format", "pt")));

  const SafetensorsTensor* a = f.Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, "F32");
  EXPECT_THAT(a->shape, ElementsAre(2));
  ASSERT_EQ(a->nbytes, 8u);
  float af[2];
  std::memcpy(af, a->data, sizeof(af));
  EXPECT_EQ(af[0], 1.0f);
  EXPECT_EQ(af[1], -2.5f);

  const SafetensorsTensor* b = f.Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, "I16");
  EXPECT_THAT(b->shape, ElementsAre(1, 2));
  EXPECT_EQ(b->num_elements(), 2);
  int16_t bi[2];
  std::memcpy(bi, b->data, sizeof(bi));
  EXPECT_EQ(bi[0], 7);
  EXPECT_EQ(bi[1], -1);
  EXPECT_EQ(f.Find("c"), nullptr);
}

TEST_F(SafetensorsTest, ScalarsEmptyTensorsAndNoMetadata) {
  std::string header =
      R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},)"
      R"("e":{"dtype":"F16","shape":[0,5],"data_offsets":[2,2]}})";
  auto st = ParseString(BuildFile(header, Bytes({0x80, 0x3f})));
  ASSERT_TRUE(st.ok()) << st.status();
  const SafetensorsTensor* s = (*st)->Find("s");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->num_elements(), 1);
  EXPECT_EQ(s->nbytes, 2u);
  const SafetensorsTensor* e = (*st)->Find("e");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->num_elements(), 0);
  EXPECT_EQ(e->nbytes, 0u);
  EXPECT_TRUE((*st)->metadata().empty());
}

TEST_F(SafetensorsTest, DtypeSizes) {
  EXPECT_EQ(*SafetensorsDtypeSize("F32"), 4u);
  EXPECT_EQ(*SafetensorsDtypeSize("BF16"), 2u);
  EXPECT_EQ(*SafetensorsDtypeSize("F8_E4M3"), 1u);
  EXPECT_EQ(*SafetensorsDtypeSize("I64"), 8u);
  EXPECT_FALSE(SafetensorsDtypeSize("F4").ok());
}

struct BadCase {
  const char* what;
  std::string file;
  const char* message;  // a substring the error must contain
};

TEST_F(SafetensorsTest, RejectsInvalidHeadersWithTheTensorAndField) {
  auto one = [](const std::string& entry, const std::string& data = std::string(8, '\0')) {
    return BuildFile(absl::StrCat(R"({"w":)", entry, "}"), data);
  };
  std::string huge_len(8, '\xff');
  std::vector<BadCase> cases = {
      {"short", "abc", "shorter than the 8-byte header length"},
      {"length past file", huge_len + "{}", "header length"},
      {"bad json", BuildFile("{\"w\":", ""), "header JSON"},
      {"not object", BuildFile("[1,2]", ""), "not a JSON object"},
      {"entry not object", one("3"), "tensor 'w'"},
      {"no dtype", one(R"({"shape":[2],"data_offsets":[0,8]})"), "field 'dtype'"},
      {"unknown dtype", one(R"({"dtype":"F99","shape":[2],"data_offsets":[0,8]})"), "F99"},
      {"no shape", one(R"({"dtype":"F32","data_offsets":[0,8]})"), "field 'shape'"},
      {"negative dim", one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
       "field 'shape[0]'"},
      {"float dim", one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"),
       "field 'shape[0]'"},
      {"dim too big", one(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]})"),
       "out of range"},
      {"count overflow",
       one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
       "overflows"},
      {"bytes overflow", one(R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})"),
       "overflows"},
      {"offsets not pair", one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"),
       "field 'data_offsets'"},
      {"offset negative", one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
       "field 'data_offsets[0]'"},
      {"begin after end", one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"),
       "begin 8 > end 0"},
      {"end past data", one(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"),
       "past the data section"},
      {"huge end", one(R"({"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615]})"),
       "past the data section"},
      {"size mismatch", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
       "shape x dtype is 12 bytes"},
      {"overlap",
       BuildFile(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                 std::string(8, '\0')),
       "overlaps tensor 'x'"},
      {"metadata not strings", BuildFile(R"({"__metadata__":{"k":1}})", ""), "__metadata__.k"},
  };
  for (const BadCase& c : cases) {
    auto st = ParseString(c.file);
    ASSERT_FALSE(st.ok()) << c.what;
    EXPECT_THAT(std::string(st.status().message()), HasSubstr(c.message)) << c.what;
  }
}

TEST_F(SafetensorsTest, EveryTruncationIsAnErrorAndNeverCrashes) {
  const std::string full = GoldenFile();
  for (size_t len = 0; len < full.size(); ++len) {
    auto st = SafetensorsFile::Open(Write(absl::StrCat("t", len), full.substr(0, len)));
    EXPECT_FALSE(st.ok()) << "truncated to " << len << " bytes";
  }
}

TEST_F(SafetensorsTest, RandomHeaderByteFlipsNeverCrashOrEscapeTheBuffer) {
  const std::string full = GoldenFile();
  const size_t header_end = full.size() - 12;
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    std::string s = full;
    int flips = 1 + iter % 3;
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % header_end;
      s[pos] = static_cast<char>(iter % 2 ? rng() & 0xff : s[pos] ^ (1 << (rng() % 8)));
    }
    auto st = ParseString(s);
    if (!st.ok()) continue;
    ++parsed;
    const uint8_t* lo = reinterpret_cast<const uint8_t*>(s.data());
    for (const SafetensorsTensor& t : (*st)->tensors()) {
      ASSERT_GE(t.data, lo);
      ASSERT_LE(t.data + t.nbytes, lo + s.size()) << t.name;
      ASSERT_EQ(static_cast<uint64_t>(t.num_elements()) * *SafetensorsDtypeSize(t.dtype),
                t.nbytes);
    }
  }
  EXPECT_LT(parsed, 5000);  // most flips break something
}

TEST_F(SafetensorsTest, DeeplyNestedHeaderIsAnError) {
  std::string header(200000, '[');
  auto st = ParseString(BuildFile(header, ""));
  EXPECT_FALSE(st.ok());
}

TEST_F(SafetensorsTest, ModelFromSingleFile) {
  Write("m/model.safetensors", GoldenFile());
  auto m = SafetensorsModel::Open((dir_ / "m").string());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ((*m)->tensors().size(), 2u);
  EXPECT_EQ((*m)->tensors()[1]->name, "b");
  ASSERT_NE((*m)->Find("a"), nullptr);
  EXPECT_EQ((*m)->Find("a")->dtype, "F32");
  // A bare file path works as a one-shard model too.
  auto bare = SafetensorsModel::Open((dir_ / "m/model.safetensors").string());
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_NE((*bare)->Find("b"), nullptr);
}

std::string OneTensorFile(const std::string& name, float value) {
  std::string data(4, '\0');
  std::memcpy(data.data(), &value, 4);
  return BuildFile(absl::StrCat(R"({")", name, R"(":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})"),
                   data);
}

TEST_F(SafetensorsTest, ModelFromShardsFindsTensorsAcrossShards) {
  Write("m/model-00001-of-00002.safetensors", OneTensorFile("x", 1.5f));
  Write("m/model-00002-of-00002.safetensors", OneTensorFile("y", -3.0f));
  Write("m/model.safetensors.index.json",
        R"({"metadata":{"total_size":8},"weight_map":{"x":"model-00001-of-00002.safetensors",)"
        R"("y":"model-00002-of-00002.safetensors"}})");
  auto m = SafetensorsModel::Open((dir_ / "m").string());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->files().size(), 2u);
  ASSERT_EQ((*m)->tensors().size(), 2u);
  const SafetensorsTensor* y = (*m)->Find("y");
  ASSERT_NE(y, nullptr);
  float v;
  std::memcpy(&v, y->data, 4);
  EXPECT_EQ(v, -3.0f);
}

TEST_F(SafetensorsTest, ModelErrors) {
  auto open = [&](const std::string& sub) { return SafetensorsModel::Open((dir_ / sub).string()); };
  auto missing = open("nothing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  Write("a/s1.safetensors", OneTensorFile("x", 1.0f));
  Write("a/model.safetensors.index.json", R"({"weight_map":{"x":"s1.safetensors","z":"s1.safetensors"}})");
  auto absent = open("a");
  ASSERT_FALSE(absent.ok());
  EXPECT_THAT(std::string(absent.status().message()), HasSubstr("'z'"));

  Write("b/s1.safetensors", OneTensorFile("x", 1.0f));
  Write("b/s2.safetensors", OneTensorFile("x", 2.0f));
  Write("b/model.safetensors.index.json", R"({"weight_map":{"x":"s1.safetensors","y":"s2.safetensors"}})");
  auto dup = open("b");
  ASSERT_FALSE(dup.ok());
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("two shards"));

  Write("c/model.safetensors.index.json", R"({"weight_map":{"x":"../a/s1.safetensors"}})");
  auto escape = open("c");
  ASSERT_FALSE(escape.ok());
  EXPECT_THAT(std::string(escape.status().message()), HasSubstr("bad shard name"));

  Write("d/model.safetensors.index.json", R"({"weight_map":[1]})");
  EXPECT_FALSE(open("d").ok());
  Write("e/model.safetensors.index.json", "{not json");
  EXPECT_FALSE(open("e").ok());

  Write("f/model.safetensors.index.json", R"({"weight_map":{"x":"gone.safetensors"}})");
  auto gone = open("f");
  ASSERT_FALSE(gone.ok());
  EXPECT_THAT(std::string(gone.status().message()), HasSubstr("gone.safetensors"));
}

}  // namespace
}  // namespace peng
