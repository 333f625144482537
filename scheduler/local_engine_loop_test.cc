// The engine loop end to end on SmolLM2 (skipped without the model): concurrent requests over
// the paged KV give the same greedy tokens as each request alone (batch invariance), aborts
// free the KV, and the bounded queue rejects.
#include "scheduler/local_engine_loop.h"

#include <condition_variable>
#include <mutex>

#include "engine/testing/test_model.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

class CollectingStream : public RequestStream {
 public:
  void OnEvent(TokenEvent e) override {
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
  loop.Start();
  auto running = std::make_shared<CollectingStream>();
  ASSERT_TRUE(loop.Submit(Request("long", "Tell me a very long story.", 1000), running).ok());
  std::vector<std::shared_ptr<CollectingStream>> queued;
  absl::Status rejected;
  for (int i = 0; i < 5 && rejected.ok(); ++i) {
    queued.push_back(std::make_shared<CollectingStream>());
    rejected = loop.Submit(Request("q" + std::to_string(i), "Hi", 4), queued.back());
  }
  EXPECT_EQ(rejected.code(), absl::StatusCode::kResourceExhausted);
  loop.Abort("long");
  running->Wait();
  EXPECT_EQ(running->reason(), FinishReason::kAbort);
  for (size_t i = 0; i + 1 < queued.size(); ++i) queued[i]->Wait();
  loop.Drain(std::chrono::milliseconds(5000));
  EXPECT_EQ(loop.Stats().num_running, 0);
  EXPECT_EQ(loop.Stats().kv_usage, 0.0);
  EXPECT_EQ(loop.Submit(Request("late", "Hi", 2), std::make_shared<CollectingStream>()).code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace peng
