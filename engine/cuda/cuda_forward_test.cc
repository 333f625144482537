// CudaForward against the CPU worker (LlamaForward) on SmolLM2 (or the model file named by
// PENG_CUDA_TEST_MODEL, e.g. tests/fixtures/tiny_model.py's tiny-Q8_0.gguf): the same mixed
// batches (prefills, kAll rows, decodes, a history across many pages) must give the same logits
// up to bf16 GEMM rounding and the same top token. Skips without a GPU (then only the factory's
// no-device error is checked) or without the model file.
#include "engine/cuda/cuda_forward.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/cuda/cuda_kv_cache.h"
#include "engine/forward.h"
#include "engine/forward_factory.h"
#include "engine/simple_kv_cache.h"
#include "engine/testing/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

// The model under test: PENG_CUDA_TEST_MODEL when set, else the shared SmolLM2 (null: absent).
Model* TestModel(std::string* path) {
  const char* env = std::getenv("PENG_CUDA_TEST_MODEL");
  if (env == nullptr || *env == '\0') {
    *path = testing::SmolLM2Path();
    return testing::SharedSmolLM2();
  }
  *path = env;
  static Model* model = [&] {
    auto m = LoadModel(env);
    return m.ok() ? std::move(*m).release() : nullptr;
  }();
  return model;
}

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CudaForwardTest, WithoutAGpuTheFactoryNamesTheProblem) {
  if (HaveGpu()) GTEST_SKIP() << "a GPU is present; the no-device error cannot be observed";
  Model empty;
  BackendOptions options;
  options.device = Device::kCuda;
  auto forward = MakeForward(empty, options);
  ASSERT_FALSE(forward.ok());
  EXPECT_EQ(forward.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(forward.status().message(),
              ::testing::HasSubstr("CUDA worker requested but no CUDA device was found (cudaGetDeviceCount"));
  auto kv = MakeKvCache(empty.config, options, 16);
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kFailedPrecondition);
}

std::vector<int32_t> Tokens(int n, int salt, int vocab) {  // deterministic ids in [0, vocab)
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + salt * 104729 + 17) % vocab);
  return t;
}

// Tests that need a GPU and the model: skipped (with the reason) when either is missing.
class CudaWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: the CUDA worker runs in scripts/device-check.sh";
    std::string path;
    model_ = TestModel(&path);
    if (model_ == nullptr) GTEST_SKIP() << "model not found or not loadable: " << path;
  }
  Model* model_ = nullptr;
};

void ExpectSameLogits(const ForwardOutput& cpu, const ForwardOutput& gpu, const char* step) {
  ASSERT_EQ(cpu.vocab_size, gpu.vocab_size);
  ASSERT_EQ(cpu.rows(), gpu.rows()) << step;
  for (int64_t r = 0; r < cpu.rows(); ++r) {
    const auto a = cpu.row(r), b = gpu.row(r);
    float max_abs = 0, max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      max_abs = std::max(max_abs, std::fabs(a[i]));
      max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
    }
    // bf16 weights and GEMM inputs: ~3 significant digits.
    EXPECT_LE(max_diff, 0.03f * max_abs + 0.05f) << step << " row " << r;
    const size_t top_cpu = std::max_element(a.begin(), a.end()) - a.begin();
    const size_t top_gpu = std::max_element(b.begin(), b.end()) - b.begin();
    if (top_cpu != top_gpu) {  // allowed only for a near tie
      EXPECT_LT(std::fabs(a[top_cpu] - a[top_gpu]), 0.05f * max_abs) << step << " row " << r;
    }
  }
}

TEST_F(CudaWorkerTest, MatchesTheCpuWorkerOnMixedBatches) {
  Model* model = model_;
  const ModelConfig& c = model->config;

  for (const kernels::KvFormat format : {kernels::KvFormat::kF16, kernels::KvFormat::kBF16}) {
    SCOPED_TRACE(kernels::KvFormatName(format));
    auto gpu = CudaForward::Create(*model, {.device = 0, .kv_format = format});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    auto gpu_kv = cuda::CudaKvCache::Create({.num_layers = c.num_layers,
                                             .num_kv_heads = c.num_kv_heads,
                                             .head_dim = c.head_dim,
                                             .max_tokens = 1024,
                                             .max_seqs = 4,
                                             .format = format});
    ASSERT_TRUE(gpu_kv.ok()) << gpu_kv.status();
    // Float activations: the CUDA worker does not round them to int8.
    LlamaForward cpu(*model, ForwardOptions{.num_threads = 2, .int8_activations = false});
    SimpleKvCache cpu_kv(c.num_layers, c.num_kv_heads, c.head_dim, 1024);

    const auto a = Tokens(12, 1, c.vocab_size), b = Tokens(7, 2, c.vocab_size);
    const int long_len = std::min(300, c.context_length - 8);  // the tiny model's context is 256
    const auto long_prompt = Tokens(long_len, 3, c.vocab_size), e = Tokens(5, 4, c.vocab_size);
    const auto one = Tokens(3, 5, c.vocab_size);
    using L = SequenceChunk::Logits;
    std::vector<ForwardBatch> steps(4);
    steps[0].chunks = {{.seq = 0, .start_pos = 0, .tokens = a, .logits = L::kLast},
                       {.seq = 1, .start_pos = 0, .tokens = b, .logits = L::kAll},
                       {.seq = 2, .start_pos = 0, .tokens = long_prompt, .logits = L::kLast}};
    // Decodes mixed with a new prefill (prefill phase), and a chunk with no logits.
    steps[1].chunks = {{.seq = 0, .start_pos = 12, .tokens = {&one[0], 1}, .logits = L::kLast},
                       {.seq = 3, .start_pos = 0, .tokens = e, .logits = L::kNone},
                       {.seq = 2, .start_pos = long_len, .tokens = {&one[1], 1}, .logits = L::kLast}};
    // Decodes only (decode phase, split-KV over the long history).
    steps[2].chunks = {{.seq = 0, .start_pos = 13, .tokens = {&one[2], 1}},
                       {.seq = 1, .start_pos = 7, .tokens = {&one[0], 1}},
                       {.seq = 2, .start_pos = long_len + 1, .tokens = {&one[1], 1}},
                       {.seq = 3, .start_pos = 5, .tokens = {&one[2], 1}}};
    // A chunked-prefill continuation.
    steps[3].chunks = {{.seq = 1, .start_pos = 8, .tokens = a, .logits = L::kAll}};
    for (size_t s = 0; s < steps.size(); ++s) {
      ForwardOutput want, got;
      ASSERT_TRUE(cpu.Forward(steps[s], cpu_kv, &want).ok());
      const absl::Status status = (*gpu)->Forward(steps[s], **gpu_kv, &got);
      ASSERT_TRUE(status.ok()) << status;
      ExpectSameLogits(want, got, ("step " + std::to_string(s)).c_str());
    }
  }
}

// Decode steps replay a graph per shape: the results must be those of launching every kernel
// directly (the same kernels and arguments: bitwise), step after step, while histories grow
// across pages and across a power-of-two page-table width, and when the batch size changes.
TEST_F(CudaWorkerTest, DecodeGraphsMatchDirectLaunches) {
  Model* model = model_;
  const ModelConfig& c = model->config;
  const cuda::CudaKvCacheOptions kv_options{.num_layers = c.num_layers,
                                            .num_kv_heads = c.num_kv_heads,
                                            .head_dim = c.head_dim,
                                            .max_tokens = 256,
                                            .max_seqs = 3,
                                            .tokens_per_page = 8};
  auto graphed = CudaForward::Create(*model, {.device = 0, .graphs = true});
  auto direct = CudaForward::Create(*model, {.device = 0, .graphs = false});
  ASSERT_TRUE(graphed.ok()) << graphed.status();
  ASSERT_TRUE(direct.ok()) << direct.status();
  auto graphed_kv = cuda::CudaKvCache::Create(kv_options);
  auto direct_kv = cuda::CudaKvCache::Create(kv_options);
  ASSERT_TRUE(graphed_kv.ok() && direct_kv.ok());
  LlamaForward cpu(*model, ForwardOptions{.num_threads = 2, .int8_activations = false});
  SimpleKvCache cpu_kv(c.num_layers, c.num_kv_heads, c.head_dim, 256);

  // Prompts of 5, 14 and 30 tokens (8-token pages), then 30 decode steps: the longest history
  // grows from 4 to 8 pages; steps 10-13 leave sequence 1 out (another batch size).
  const int lens[] = {5, 14, 30};
  std::vector<std::vector<int32_t>> prompts;
  ForwardBatch prefill;
  for (int s = 0; s < 3; ++s) prompts.push_back(Tokens(lens[s], 10 + s, c.vocab_size));
  for (int s = 0; s < 3; ++s) prefill.chunks.push_back({.seq = s, .start_pos = 0, .tokens = prompts[s]});
  std::vector<ForwardBatch> steps = {prefill};
  const auto next = Tokens(30, 20, c.vocab_size);
  int64_t pos[] = {lens[0], lens[1], lens[2]};
  for (int step = 0; step < 30; ++step) {
    ForwardBatch b;
    for (int s = 0; s < 3; ++s) {
      if (s == 1 && step >= 10 && step < 14) continue;
      b.chunks.push_back({.seq = s, .start_pos = pos[s]++, .tokens = {&next[step], 1}});
    }
    steps.push_back(b);
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    const std::string step = "step " + std::to_string(s);
    ForwardOutput want, got, ref;
    ASSERT_TRUE((*direct)->Forward(steps[s], **direct_kv, &want).ok()) << step;
    const absl::Status status = (*graphed)->Forward(steps[s], **graphed_kv, &got);
    ASSERT_TRUE(status.ok()) << step << ": " << status;
    ASSERT_EQ(want.logits.size(), got.logits.size()) << step;
    const auto diff = std::mismatch(want.logits.begin(), want.logits.end(), got.logits.begin());
    ASSERT_TRUE(diff.first == want.logits.end())
        << step << ": logit " << (diff.first - want.logits.begin()) << " is " << *diff.second
        << " through the graph, " << *diff.first << " launched directly";
    ASSERT_TRUE(cpu.Forward(steps[s], cpu_kv, &ref).ok());
    ExpectSameLogits(ref, got, step.c_str());
  }
}

TEST_F(CudaWorkerTest, RejectsAHostKvCache) {
  Model* model = model_;
  auto gpu = CudaForward::Create(*model, {});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const ModelConfig& c = model->config;
  SimpleKvCache host_kv(c.num_layers, c.num_kv_heads, c.head_dim, 64);
  const std::vector<int32_t> t = {1, 2, 3};
  ForwardBatch batch;
  batch.chunks.push_back({.seq = 0, .start_pos = 0, .tokens = t});
  ForwardOutput out;
  const absl::Status s = (*gpu)->Forward(batch, host_kv, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("device memory"));
}

}  // namespace
}  // namespace peng
