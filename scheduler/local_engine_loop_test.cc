// The engine loop end to end on SmolLM2 (skipped without the model): concurrent requests over
// the paged KV give the same greedy tokens as each request alone (batch invariance), aborts
// free the KV, and the bounded queue rejects.
#include "scheduler/local_engine_loop.h"

#include <condition_variable>
#include <functional>
#include <mutex>
#include <utility>

#include "engine/testing/test_model.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

class CollectingStream : public RequestStream {
 public:
  // Runs once, on the engine thread, when the first token arrives (before it is recorded).
  std::function<void()> on_first_token;

  void OnEvent(TokenEvent e) override {
    if (on_first_token && !e.token_ids.empty()) std::exchange(on_first_token, nullptr)();
    std::lock_guard<std::mutex> lock(mu_);
    tokens_.insert(tokens_.end(), e.token_ids.begin(), e.token_ids.end());
    text_ += e.text;
    if (e.finish_reason != FinishReason::kNone) {
      reason_ = e.finish_reason;
      done_ = true;
      cv_.notify_all();
    }
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  std::vector<int32_t> tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  FinishReason reason() {
    std::lock_guard<std::mutex> lock(mu_);
    return reason_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> tokens_;
  std::string text_;
  FinishReason reason_ = FinishReason::kNone;
  bool done_ = false;
};

class LocalEngineLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::SharedSmolLM2();
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 not in models/";
  }
  std::unique_ptr<GenerateRequest> Request(const std::string& id, const std::string& prompt, int max_tokens) {
    auto r = std::make_unique<GenerateRequest>();
    r->id = id;
    r->prompt = model_->tokenizer->Encode(prompt, true, true);
    r->sampling.temperature = 0;
    r->stop.max_tokens = max_tokens;
    return r;
  }
  static LocalEngineLoopOptions Options() {
    LocalEngineLoopOptions o;
    o.kv.budget_bytes = 32ull << 20;
    o.scheduler.max_num_batched_tokens = 64;  // forces chunked prefills in the batch
    return o;
  }
  Model* model_ = nullptr;
};

const char* kPrompts[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away, there lived a dragon who loved to read books about",
    "1, 2, 3, 4, 5,",
    "The three primary colors are",
    "Water boils at",
    "My favourite season is autumn because",
    "Translate to French: good morning",
};

TEST_F(LocalEngineLoopTest, BatchedGreedyTokensEqualEachRequestAlone) {
  std::vector<std::vector<int32_t>> alone;
  {
    LocalEngineLoop loop(*model_, Options(), nullptr);
    loop.Start();
    for (int i = 0; i < 8; ++i) {
      auto s = std::make_shared<CollectingStream>();
      ASSERT_TRUE(loop.Submit(Request("a" + std::to_string(i), kPrompts[i], 24), s).ok());
      s->Wait();
      alone.push_back(s->tokens());
    }
  }
  metrics::Registry registry;
  LocalEngineLoop loop(*model_, Options(), &registry);
  loop.Start();
  std::vector<std::shared_ptr<CollectingStream>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(std::make_shared<CollectingStream>());
    ASSERT_TRUE(loop.Submit(Request("b" + std::to_string(i), kPrompts[i], 24), streams.back()).ok());
  }
  for (int i = 0; i < 8; ++i) {
    streams[i]->Wait();
    EXPECT_EQ(streams[i]->tokens(), alone[i]) << kPrompts[i];
    EXPECT_FALSE(streams[i]->text().empty());
  }
  EXPECT_NE(registry.Render().find("peng:generation_tokens_total"), std::string::npos);
}

TEST_F(LocalEngineLoopTest, AbortFreesKvAndQueueBoundRejects) {
  LocalEngineLoopOptions o = Options();
  o.scheduler.max_waiting_requests = 2;
  o.scheduler.max_num_seqs = 1;
  LocalEngineLoop loop(*model_, o, nullptr);
  // Everything is submitted before the loop starts, so the queue bound is checked against a
  // known state: "long" and q0 fill the two waiting slots, q1 is rejected.
  auto running = std::make_shared<CollectingStream>();
  // The abort is queued while "long" is surely running (its first token is out) and is taken
  // at the next step, long before the request could reach its length limit.
  running->on_first_token = [&loop] { loop.Abort("long"); };
  std::unique_ptr<GenerateRequest> long_request = Request("long", "Tell me a very long story.", 1000);
  long_request->stop.ignore_eos = true;  // it must still be running when the abort is taken
  ASSERT_TRUE(loop.Submit(std::move(long_request), running).ok());
  std::vector<std::shared_ptr<CollectingStream>> queued;
  absl::Status rejected;
  for (int i = 0; i < 5 && rejected.ok(); ++i) {
    queued.push_back(std::make_shared<CollectingStream>());
    rejected = loop.Submit(Request("q" + std::to_string(i), "Hi", 4), queued.back());
  }
  EXPECT_EQ(rejected.code(), absl::StatusCode::kResourceExhausted);
  loop.Start();
  running->Wait();
  EXPECT_EQ(running->reason(), FinishReason::kAbort);
  for (size_t i = 0; i + 1 < queued.size(); ++i) queued[i]->Wait();
  loop.Drain(std::chrono::milliseconds(5000));
  EXPECT_EQ(loop.Stats().num_running, 0);
  EXPECT_EQ(loop.Stats().kv_usage, 0.0);
  EXPECT_EQ(loop.Submit(Request("late", "Hi", 2), std::make_shared<CollectingStream>()).code(),
            absl::StatusCode::kUnavailable);
}

// Runs the 8 prompts concurrently (greedy, 40 tokens, ignoring EOS) and returns their tokens.
std::vector<std::vector<int32_t>> RunAll(LocalEngineLoop& loop,
                                         const std::function<std::unique_ptr<GenerateRequest>(int)>& request) {
  loop.Start();
  std::vector<std::shared_ptr<CollectingStream>> streams;
  std::vector<std::vector<int32_t>> tokens;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(std::make_shared<CollectingStream>());
    const absl::Status submitted = loop.Submit(request(i), streams.back());
    EXPECT_TRUE(submitted.ok()) << submitted;
    if (!submitted.ok()) streams.pop_back();
  }
  for (auto& s : streams) {
    s->Wait();
    tokens.push_back(s->tokens());
  }
  loop.Drain(std::chrono::milliseconds(5000));
  return tokens;
}

TEST_F(LocalEngineLoopTest, LeanKvWithoutCompressionEqualsOneQuantizedTier) {
  const auto request = [&](int i) {
    auto r = Request("r" + std::to_string(i), kPrompts[i], 40);
    r->stop.ignore_eos = true;
    return r;
  };
  LocalEngineLoopOptions quantized = Options();
  quantized.kv.format = kernels::KvFormat::kK8V4;
  quantized.kv.enable_prefix_caching = false;
  LocalEngineLoop q_loop(*model_, quantized, nullptr);
  const auto want = RunAll(q_loop, request);

  LocalEngineLoopOptions lean = Options();
  lean.kv.leankv = true;
  lean.kv.lean.alpha_prune = 0;
  lean.kv.lean.alpha_quant = 0;
  lean.kv.lean.window = 4;
  LocalEngineLoop l_loop(*model_, lean, nullptr);
  EXPECT_EQ(RunAll(l_loop, request), want);
  EXPECT_EQ(l_loop.Stats().kv_usage, 0.0);
}

TEST_F(LocalEngineLoopTest, LeanKvCompressesServesAndFreesEverything) {
  LocalEngineLoopOptions o = Options();
  o.kv.leankv = true;
  o.kv.lean.alpha_prune = 0.5;
  o.kv.lean.alpha_quant = 1.0;
  o.kv.lean.window = 4;
  o.kv.lean.score_queries = 8;
  metrics::Registry registry;
  LocalEngineLoop loop(*model_, o, &registry);
  const auto tokens = RunAll(loop, [&](int i) {
    auto r = Request("r" + std::to_string(i), kPrompts[i], 40);
    r->stop.ignore_eos = true;
    return r;
  });
  for (const auto& t : tokens) EXPECT_EQ(t.size(), 40u);
  const memory::LeanKvStats st = loop.kv().lean()->stats();
  EXPECT_GT(st.tokens_pruned, 0);
  EXPECT_GT(st.tokens_demoted, 0);
  EXPECT_EQ(st.pages, 0);
  EXPECT_EQ(loop.Stats().kv_usage, 0.0);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("peng:kv_tokens_pruned_total"), std::string::npos);
  EXPECT_NE(text.find("peng:kv_head_sparsity_bucket"), std::string::npos);
}

TEST_F(LocalEngineLoopTest, LeanKvUnderMemoryPressurePreemptsAndFinishesEverything) {
  LocalEngineLoopOptions o = Options();
  o.kv.leankv = true;
  o.kv.lean.window = 8;
  // 2 MiB holds ~1,130 pages of ~1.8 KB; a request of 60+ tokens needs 90 pages per 16 tokens
  // plus 90 of headroom, so only two or three of the 8 fit at once.
  o.kv.budget_bytes = 2 << 20;
  metrics::Registry registry;
  LocalEngineLoop loop(*model_, o, &registry);
  const auto tokens = RunAll(loop, [&](int i) {
    auto r = Request("p" + std::to_string(i), kPrompts[i], 60);
    r->stop.ignore_eos = true;
    return r;
  });
  ASSERT_EQ(tokens.size(), 8u);
  for (const auto& t : tokens) EXPECT_EQ(t.size(), 60u);
  EXPECT_EQ(loop.Stats().kv_usage, 0.0);
  const std::string text = registry.Render();
  const std::string name = "\npeng:num_preemptions_total ";
  const size_t at = text.find(name);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GT(std::stod(text.substr(at + name.size())), 0) << text.substr(at, 40);
}

}  // namespace
}  // namespace peng
