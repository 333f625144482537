// Batched forward behaviour on the real SmolLM2 model (skipped when models/ lacks it): sequences
// batched together, chunked prefill and mixed prefill/decode steps give the logits each sequence
// gets alone; dropped layers are reported and come back identical.
#include "engine/forward.h"

#include <cmath>
#include <numeric>

#include "engine/simple_kv_cache.h"
#include "engine/testing/test_model.h"
#include "gtest/gtest.h"

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
