// Batched forward behaviour on the real SmolLM2 model (skipped when models/ lacks it): sequences
// batched together, chunked prefill and mixed prefill/decode steps give the logits each sequence
// gets alone; dropped layers are reported and come back identical.
#include "engine/forward.h"

#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/simple_kv_cache.h"
#include "engine/testing/test_model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/amx.h"

namespace peng {
namespace {

class ForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::SharedSmolLM2();
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 not in models/ (run make model)";
  }
  std::unique_ptr<SimpleKvCache> NewKv() {
    const ModelConfig& c = model_->config;
    return std::make_unique<SimpleKvCache>(c.num_layers, c.num_kv_heads, c.head_dim, 512, 16);
  }
  static std::vector<int32_t> Tokens(int n, int salt) {
    std::vector<int32_t> t(n);
    for (int i = 0; i < n; ++i) t[i] = 100 + (i * 131 + salt * 977) % 40000;
    return t;
  }
  // Logits of every position of `tokens` run alone, in one chunk.
  std::vector<float> Alone(const std::vector<int32_t>& tokens) {
    auto kv = NewKv();
    LlamaForward fwd(*model_, {});
    ForwardBatch b;
    b.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = tokens, .logits = SequenceChunk::Logits::kAll});
    ForwardOutput out;
    EXPECT_TRUE(fwd.Forward(b, *kv, &out).ok());
    return out.logits;
  }
  static double RelErr(std::span<const float> a, std::span<const float> b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += double(b[i]) * b[i];
    }
    return std::sqrt(num / den);
  }
  Model* model_ = nullptr;
};

TEST_F(ForwardTest, BatchedSequencesMatchEachAlone) {
  const auto a = Tokens(7, 1), b = Tokens(3, 2), c = Tokens(12, 3);
  auto kv = NewKv();
  LlamaForward fwd(*model_, {});
  ForwardBatch batch;
  for (auto [seq, toks] : {std::pair{10, &a}, {11, &b}, {12, &c}}) {
    batch.chunks.push_back({.seq = seq, .start_pos = 0, .tokens = *toks, .logits = SequenceChunk::Logits::kAll});
  }
  ForwardOutput out;
  ASSERT_TRUE(fwd.Forward(batch, *kv, &out).ok());
  ASSERT_EQ(out.rows(), 22);
  const int64_t v = out.vocab_size;
  int64_t row = 0;
  for (const auto* toks : {&a, &b, &c}) {
    const std::vector<float> ref = Alone(*toks);
    for (size_t i = 0; i < toks->size(); ++i, ++row) {
      EXPECT_LT(RelErr(out.row(row), {ref.data() + i * v, size_t(v)}), 1e-4) << "row " << row;
    }
  }
}

TEST_F(ForwardTest, ChunkedPrefillAndMixedDecodeStepsMatchOneShot) {
  const auto a = Tokens(40, 4), b = Tokens(9, 5);
  const std::vector<float> ref_a = Alone(a), ref_b = Alone(b);
  const int64_t v = model_->config.vocab_size;
  auto kv = NewKv();
  LlamaForward fwd(*model_, {});
  ForwardOutput out;
  // Step 1: a's first 33 tokens (BLAS path) with b's first 5 (one batch of 38).
  ForwardBatch s1;
  s1.chunks.push_back({.seq = 1, .start_pos = 0, .tokens = {a.data(), 33}, .logits = SequenceChunk::Logits::kLast});
  s1.chunks.push_back({.seq = 2, .start_pos = 0, .tokens = {b.data(), 5}, .logits = SequenceChunk::Logits::kLast});
  ASSERT_TRUE(fwd.Forward(s1, *kv, &out).ok());
  EXPECT_LT(RelErr(out.row(0), {ref_a.data() + 32 * v, size_t(v)}), 1e-3);
  EXPECT_LT(RelErr(out.row(1), {ref_b.data() + 4 * v, size_t(v)}), 1e-3);
  // Then a decodes one token per step while b prefills the rest in small chunks (fused path).
  int64_t pa = 33, pb = 5;
  while (pa < 40 || pb < 9) {
    ForwardBatch s;
    if (pa < 40) s.chunks.push_back({.seq = 1, .start_pos = pa, .tokens = {a.data() + pa, 1}});
    const int64_t nb = std::min<int64_t>(2, 9 - pb);
    if (nb > 0) s.chunks.push_back({.seq = 2, .start_pos = pb, .tokens = {b.data() + pb, size_t(nb)}});
    ASSERT_TRUE(fwd.Forward(s, *kv, &out).ok());
    int64_t r = 0;
    if (pa < 40) {
      EXPECT_LT(RelErr(out.row(r++), {ref_a.data() + pa * v, size_t(v)}), 1e-3) << "a@" << pa;
    }
    if (nb > 0) {
      EXPECT_LT(RelErr(out.row(r), {ref_b.data() + (pb + nb - 1) * v, size_t(v)}), 1e-3) << "b@" << pb;
    }
    pa = std::min<int64_t>(40, pa + 1);
    pb += nb;
  }
}

// Long prompts' rows run on the AMX kernel (bfloat16 activations), everything else on the int8
// kernel. A row's result must still not depend on the batch: a prompt chunked the same way gives
// bitwise the same logits alone and mixed with other prompts and decodes (in any order, so the
// rows of each kernel are not contiguous), and so do the decodes. The AMX rows stay as close to
// float activations as the int8 rows do.
TEST_F(ForwardTest, AmxPromptRowsAreBatchInvariant) {
  if (!kernels::HasAmxBf16()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  const auto a = Tokens(100, 8), b = Tokens(70, 9), c = Tokens(12, 10);
  const int64_t v = model_->config.vocab_size;
  using L = SequenceChunk::Logits;
  // a in chunks of 60 and 40 alone; c's prompt (short: int8 kernel) then 3 decodes alone.
  std::vector<float> a_alone, c_alone;
  {
    auto kv = NewKv();
    LlamaForward fwd(*model_, {});
    ForwardOutput out;
    for (auto [start, len] : {std::pair<int64_t, int64_t>{0, 60}, {60, 40}}) {
      ForwardBatch s;
      s.chunks.push_back({.seq = 1, .start_pos = start, .tokens = {a.data() + start, size_t(len)},
                          .logits = L::kAll, .prompt_len = 100});
      ASSERT_TRUE(fwd.Forward(s, *kv, &out).ok());
      a_alone.insert(a_alone.end(), out.logits.begin(), out.logits.end());
    }
    for (int64_t pos = 0; pos < 12; ++pos) {
      ForwardBatch s;
      s.chunks.push_back({.seq = 3, .start_pos = pos, .tokens = {c.data() + pos, pos < 9 ? size_t(9) : size_t(1)},
                          .prompt_len = 9});
      if (pos < 9) pos = 8;
      ASSERT_TRUE(fwd.Forward(s, *kv, &out).ok());
      c_alone.insert(c_alone.end(), out.logits.begin(), out.logits.end());
    }
  }
  // The same chunks of a and c, mixed with b's prompt (one chunk) in every step.
  std::vector<float> a_mixed, c_mixed;
  {
    auto kv = NewKv();
    LlamaForward fwd(*model_, {});
    ForwardOutput out;
    ForwardBatch s0;
    s0.chunks.push_back({.seq = 3, .start_pos = 0, .tokens = {c.data(), 9}, .prompt_len = 9});
    s0.chunks.push_back({.seq = 1, .start_pos = 0, .tokens = {a.data(), 60}, .logits = L::kAll, .prompt_len = 100});
    ASSERT_TRUE(fwd.Forward(s0, *kv, &out).ok());
    c_mixed.insert(c_mixed.end(), out.logits.begin(), out.logits.begin() + v);
    a_mixed.insert(a_mixed.end(), out.logits.begin() + v, out.logits.end());
    ForwardBatch s1;  // a prompt chunk, a decode, another prompt: kernels A, int8, A
    s1.chunks.push_back({.seq = 1, .start_pos = 60, .tokens = {a.data() + 60, 40}, .logits = L::kAll, .prompt_len = 100});
    s1.chunks.push_back({.seq = 3, .start_pos = 9, .tokens = {c.data() + 9, 1}, .prompt_len = 9});
    s1.chunks.push_back({.seq = 2, .start_pos = 0, .tokens = b, .prompt_len = 70});
    ASSERT_TRUE(fwd.Forward(s1, *kv, &out).ok());
    a_mixed.insert(a_mixed.end(), out.logits.begin(), out.logits.begin() + 40 * v);
    c_mixed.insert(c_mixed.end(), out.logits.begin() + 40 * v, out.logits.begin() + 41 * v);
    for (int64_t pos = 10; pos < 12; ++pos) {
      ForwardBatch s;
      s.chunks.push_back({.seq = 2, .start_pos = 70 + pos - 10, .tokens = {&b[pos], 1}, .prompt_len = 70});
      s.chunks.push_back({.seq = 3, .start_pos = pos, .tokens = {c.data() + pos, 1}, .prompt_len = 9});
      ASSERT_TRUE(fwd.Forward(s, *kv, &out).ok());
      c_mixed.insert(c_mixed.end(), out.logits.begin() + v, out.logits.end());
    }
  }
  ASSERT_EQ(a_mixed.size(), a_alone.size());
  EXPECT_EQ(std::memcmp(a_mixed.data(), a_alone.data(), a_alone.size() * sizeof(float)), 0);
  ASSERT_EQ(c_mixed.size(), c_alone.size());
  EXPECT_EQ(std::memcmp(c_mixed.data(), c_alone.data(), c_alone.size() * sizeof(float)), 0);

  // Against float activations, the AMX rows are no further off than the int8 kernel's.
  const auto logits = [&](const ForwardOptions& o, int64_t prompt_len) {
    auto kv = NewKv();
    LlamaForward fwd(*model_, o);
    ForwardBatch s;
    s.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = a, .logits = L::kAll, .prompt_len = prompt_len});
    ForwardOutput out;
    EXPECT_TRUE(fwd.Forward(s, *kv, &out).ok());
    return out.logits;
  };
  const std::vector<float> f32 = logits({.int8_activations = false}, 0), int8 = logits({}, 0), amx = logits({}, 100);
  const double int8_err = RelErr(int8, f32), amx_err = RelErr(amx, f32);
  std::printf("relative error against float activations: int8 %.4f, AMX bf16 %.4f\n", int8_err, amx_err);
  EXPECT_GT(amx_err, 0);  // the AMX kernel did run
  EXPECT_LT(amx_err, int8_err);
}

// A long prompt's tokens take the AMX kernels (matmuls and attention) in any chunking: one chunk,
// or chunks of any sizes down to a last token alone (what a prefix-cache hit leaves), give
// bitwise the same logits.
TEST_F(ForwardTest, AmxPromptIsBitwiseTheSameHoweverItIsChunked) {
  if (!kernels::HasAmxBf16()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  const auto a = Tokens(100, 11);
  using L = SequenceChunk::Logits;
  const auto chunked = [&](std::initializer_list<int64_t> sizes) {
    auto kv = NewKv();
    LlamaForward fwd(*model_, {});
    std::vector<float> logits;
    int64_t start = 0;
    for (const int64_t n : sizes) {
      ForwardBatch s;
      s.chunks.push_back({.seq = 0, .start_pos = start, .tokens = {a.data() + start, size_t(n)}, .logits = L::kAll,
                          .prompt_len = 100});
      ForwardOutput out;
      EXPECT_TRUE(fwd.Forward(s, *kv, &out).ok());
      logits.insert(logits.end(), out.logits.begin(), out.logits.end());
      start += n;
    }
    return logits;
  };
  const std::vector<float> whole = chunked({100});
  for (const auto& pieces : {chunked({37, 1, 50, 11, 1}), chunked({64, 35, 1}), chunked({16, 16, 16, 16, 16, 16, 4})}) {
    ASSERT_EQ(pieces.size(), whole.size());
    EXPECT_EQ(std::memcmp(pieces.data(), whole.data(), whole.size() * sizeof(float)), 0);
  }
  // The attention took the AMX kernel: without it the logits differ.
  auto kv = NewKv();
  LlamaForward vector_attention(*model_, {.amx_attention = false});
  ForwardBatch s;
  s.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = a, .logits = L::kAll, .prompt_len = 100});
  ForwardOutput out;
  ASSERT_TRUE(vector_attention.Forward(s, *kv, &out).ok());
  EXPECT_NE(std::memcmp(out.logits.data(), whole.data(), whole.size() * sizeof(float)), 0);
}

TEST_F(ForwardTest, DroppedLayerIsAnErrorAndReloadRestoresIt) {
  const auto a = Tokens(5, 6);
  const std::vector<float> before = Alone(a);
  model_->weights.DropLayer(3);
  auto kv = NewKv();
  LlamaForward fwd(*model_, {});
  ForwardBatch b;
  b.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = a, .logits = SequenceChunk::Logits::kAll});
  ForwardOutput out;
  const absl::Status s = fwd.Forward(b, *kv, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("layer 3"), std::string::npos);
  ASSERT_TRUE(model_->weights.ReloadLayer(3).ok());
  EXPECT_EQ(Alone(a), before);
}

TEST_F(ForwardTest, BadInputIsAnErrorNotACrash) {
  auto kv = NewKv();
  LlamaForward fwd(*model_, {});
  ForwardOutput out;
  const std::vector<int32_t> bad = {1, 2, 1 << 30};
  ForwardBatch b;
  b.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = bad});
  EXPECT_EQ(fwd.Forward(b, *kv, &out).code(), absl::StatusCode::kInvalidArgument);
  const auto many = Tokens(600, 7);  // the cache holds 512 tokens
  ForwardBatch big;
  big.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = many});
  EXPECT_EQ(fwd.Forward(big, *kv, &out).code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace peng
