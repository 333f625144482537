// The scheduler as a step function: driven with fabricated sampled tokens and no model.
#include "scheduler/scheduler.h"

#include <functional>
#include <map>

#include "gtest/gtest.h"

namespace peng {
namespace {

class RecordingStream : public RequestStream {
 public:
  void OnEvent(TokenEvent e) override { events.push_back(std::move(e)); }
  bool finished() const { return !events.empty() && events.back().finish_reason != FinishReason::kNone; }
  std::vector<int32_t> tokens() const {
    std::vector<int32_t> t;
    for (const auto& e : events) t.insert(t.end(), e.token_ids.begin(), e.token_ids.end());
    return t;
  }
  std::vector<TokenEvent> events;
};

class SchedulerTest : public ::testing::Test {
 protected:
  // 2 layers x 1 kv-head, 4 tokens per page: a 4-token block takes 2 pages.
  void Init(int64_t pages, SchedulerOptions opts = {}) {
    memory::KvManagerOptions ko;
    ko.format = kernels::KvFormat::kF32;
    ko.tokens_per_page = 4;
    ko.budget_bytes = static_cast<size_t>(pages) * 2 * 4 * 4 * sizeof(float);
    kv_ = std::make_unique<memory::KvManager>(memory::KvShape{2, 1, 4}, ko);
    opts.vocab_size = 100;
    if (opts.max_model_len == 8192) opts.max_model_len = 256;
    sched_ = std::make_unique<Scheduler>(opts, kv_.get(), nullptr, &listener_);
  }
  // Counts the listener calls the tests look at.
  struct CountingListener : SchedulerListener {
    std::map<std::string, int> prompts_computed;  // by request id
    void OnPromptComputed(const Sequence& seq) override { ++prompts_computed[seq.request->id]; }
  };
  CountingListener listener_;
  std::shared_ptr<RecordingStream> Add(const std::string& id, int prompt_len, int max_tokens,
                                       int priority = 0, int first_token = 10) {
    return AddRequest(id, Ids(prompt_len, first_token), max_tokens,
                      [&](GenerateRequest& r) { r.priority = priority; });
  }
  // A request of `prompt` and `max_tokens` (greedy); `edit` sets anything else first.
  std::shared_ptr<RecordingStream> AddRequest(const std::string& id, std::vector<int32_t> prompt,
                                              int max_tokens,
                                              const std::function<void(GenerateRequest&)>& edit = nullptr) {
    auto r = std::make_shared<GenerateRequest>();
    r->id = id;
    r->prompt = std::move(prompt);
    r->stop.max_tokens = max_tokens;
    r->sampling.temperature = 0;
    if (edit) edit(*r);
    auto stream = std::make_shared<RecordingStream>();
    EXPECT_TRUE(sched_->Add(r, stream).ok());
    return stream;
  }
  static std::vector<int32_t> Ids(int n, int first) {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back(first + i % 50);
    return ids;
  }
  // Runs one step, "sampling" token 42 + step index for every sampled chunk.
  StepPlan Step() {
    StepPlan plan = sched_->Schedule();
    std::vector<SampledToken> sampled;
    for (const auto& c : plan.chunks) {
      if (c.all_logits) {  // fabricated: logprob = -(position predicted)
        sched_->CollectPromptLogprobs(c, [&](int64_t j, int32_t token) {
          return TokenLogprob{token, -static_cast<float>(c.start + j + 1), {}};
        });
      }
      if (c.sample) sampled.push_back({static_cast<int32_t>(42 + steps_ % 7), 0.f, {}});
    }
    ++steps_;
    sched_->Update(plan, sampled);
    return plan;
  }
  int RunToIdle(int max_steps = 1000) {
    int n = 0;
    while (!sched_->idle() && n < max_steps) {
      Step();
      ++n;
    }
    return n;
  }
  std::unique_ptr<memory::KvManager> kv_;
  std::unique_ptr<Scheduler> sched_;
  int steps_ = 0;
};

TEST_F(SchedulerTest, ChunkedPrefillUnderTheTokenBudgetThenDecodesToMaxTokens) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 8;
  o.long_prefill_threshold = 1000;
  Init(64, o);
  auto s = Add("a", 20, 3);
  StepPlan p1 = Step();
  ASSERT_EQ(p1.chunks.size(), 1u);
  EXPECT_EQ(p1.chunks[0].num_tokens, 8);
  EXPECT_FALSE(p1.chunks[0].sample);
  EXPECT_EQ(Step().chunks[0].num_tokens, 8);
  StepPlan p3 = Step();
  EXPECT_EQ(p3.chunks[0].num_tokens, 4);
  EXPECT_TRUE(p3.chunks[0].sample);
  EXPECT_EQ(s->tokens().size(), 1u);
  Step();
  Step();
  ASSERT_TRUE(s->finished());
  EXPECT_EQ(s->events.back().finish_reason, FinishReason::kLength);
  EXPECT_EQ(s->events.back().completion_tokens, 3);
  EXPECT_EQ(s->events.back().prompt_tokens, 20);
  EXPECT_TRUE(sched_->idle());
  EXPECT_EQ(kv_->free_pages(), kv_->total_pages());
}

TEST_F(SchedulerTest, DecodesAndPrefillsShareAStepWithinTheBudget) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 6;
  Init(64, o);
  auto a = Add("a", 3, 10);
  Step();  // a prefills and samples its first token
  auto b = Add("b", 10, 10);
  StepPlan p = Step();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[0].num_tokens, 1);  // a's decode comes first
  EXPECT_EQ(p.chunks[1].num_tokens, 5);  // b's prefill gets the rest of the budget
  EXPECT_EQ(p.num_tokens(), 6);
}

TEST_F(SchedulerTest, StopTokenIdsFinishWithStop) {
  Init(64);
  auto r = std::make_shared<GenerateRequest>();
  r->id = "s";
  r->prompt = {1, 2, 3};
  r->stop.max_tokens = 50;
  r->stop.stop_token_ids = {44};
  auto stream = std::make_shared<RecordingStream>();
  ASSERT_TRUE(sched_->Add(r, stream).ok());
  RunToIdle();
  ASSERT_TRUE(stream->finished());
  EXPECT_EQ(stream->events.back().finish_reason, FinishReason::kStop);
  EXPECT_EQ(stream->tokens().back(), 44);  // 42, 43, 44
  EXPECT_EQ(stream->tokens().size(), 3u);
}

TEST_F(SchedulerTest, KvExhaustionPreemptsAndEveryRequestStillCompletes) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 64;
  Init(12, o);  // 6 blocks = 24 tokens in all
  std::vector<std::shared_ptr<RecordingStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(Add("r" + std::to_string(i), 5, 12));
  RunToIdle(2000);
  for (auto& s : streams) {
    ASSERT_TRUE(s->finished());
    EXPECT_EQ(s->events.back().finish_reason, FinishReason::kLength);
    EXPECT_EQ(s->tokens().size(), 12u);
  }
  EXPECT_GT(sched_->num_preemptions(), 0);
  EXPECT_EQ(kv_->free_pages(), kv_->total_pages());
}

TEST_F(SchedulerTest, PreemptionIsSpreadAcrossRequests) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 64;
  Init(16, o);
  std::map<memory::SeqId, int> preempted;
  std::vector<std::shared_ptr<RecordingStream>> streams;
  for (int i = 0; i < 6; ++i) streams.push_back(Add("r" + std::to_string(i), 6, 20));
  for (int step = 0; step < 3000 && !sched_->idle(); ++step) {
    StepPlan p = Step();
    for (auto id : p.preempted) ++preempted[id];
  }
  for (auto& s : streams) EXPECT_TRUE(s->finished());
  int max_count = 0;
  for (auto [id, n] : preempted) max_count = std::max(max_count, n);
  // With the fewest-preemptions-first rule no single sequence absorbs them all.
  EXPECT_LE(max_count, static_cast<int>(sched_->num_preemptions()) / 2 + 1);
}

TEST_F(SchedulerTest, AbortInEveryStateFreesKvAndEmitsAbort) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 4;
  o.max_num_seqs = 1;
  Init(64, o);
  auto running = Add("run", 10, 10);
  auto waiting = Add("wait", 3, 10);
  Step();  // "run" is prefilling, "wait" still queued
  EXPECT_EQ(sched_->num_running(), 1);
  EXPECT_EQ(sched_->num_waiting(), 1);
  sched_->Abort("wait");
  sched_->Abort("run");
  EXPECT_EQ(running->events.back().finish_reason, FinishReason::kAbort);
  EXPECT_EQ(waiting->events.back().finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(sched_->idle());
  EXPECT_EQ(kv_->free_pages(), kv_->total_pages());
  sched_->Abort("unknown");  // harmless
}

TEST_F(SchedulerTest, BoundedQueueRejectsWhenFull) {
  SchedulerOptions o;
  o.max_waiting_requests = 2;
  Init(64, o);
  Add("a", 3, 2);
  Add("b", 3, 2);
  auto r = std::make_shared<GenerateRequest>();
  r->id = "c";
  r->prompt = {1, 2};
  r->stop.max_tokens = 2;
  EXPECT_EQ(sched_->Add(r, std::make_shared<RecordingStream>()).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SchedulerTest, RequestsThatCanNeverFitAreRejectedUpFront) {
  Init(8);  // 4 blocks = 16 tokens
  GenerateRequest r;
  r.id = "x";
  r.prompt.assign(10, 5);
  r.stop.max_tokens = 10;
  const absl::Status kv = sched_->CheckFits(r);
  EXPECT_EQ(kv.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kv.message().find("KV"), std::string::npos);
  r.stop.max_tokens = 300;
  const absl::Status ctx = sched_->CheckFits(r);
  EXPECT_NE(ctx.message().find("maximum context length is 256"), std::string::npos) << ctx;
  EXPECT_NE(ctx.message().find("310"), std::string::npos);
}

TEST_F(SchedulerTest, PrefixCacheHitSkipsComputedBlocks) {
  Init(64);
  auto a = Add("a", 13, 1);
  RunToIdle();
  auto b = Add("b", 13, 1);
  StepPlan p = Step();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start, 12);  // three full 4-token blocks came from the cache
  EXPECT_EQ(p.chunks[0].num_tokens, 1);
  EXPECT_EQ(b->events.back().cached_prompt_tokens, 12);
  EXPECT_EQ(kv_->prefix_cache_stats().hits, 12);
}

TEST_F(SchedulerTest, APromptWaitingForRoomIsNotCountedAsAPrefixLookupEachStep) {
  Init(16);  // 8 blocks: while a (12 + 8 tokens) runs, b's 16-token prompt has no room
  auto a = Add("a", 12, 8, 0, 10);
  Step();
  EXPECT_EQ(kv_->prefix_cache_stats().queries, 12);
  auto b = Add("b", 16, 8, 0, 60);
  for (int i = 0; i < 4; ++i) {
    Step();
    ASSERT_EQ(sched_->num_waiting_requests(), 1);  // b's lookup was undone: no room
    EXPECT_EQ(kv_->prefix_cache_stats().queries, 12);
  }
  RunToIdle();
  EXPECT_TRUE(a->finished() && b->finished());
  EXPECT_GE(kv_->prefix_cache_stats().queries, 28);  // b counted once it was admitted
}

TEST_F(SchedulerTest, APreemptedRequestsResumptionIsNotCountedAsAPrefixLookup) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 64;
  Init(12, o);  // 6 blocks = 24 tokens in all: four 5 + 12-token requests preempt each other
  std::vector<std::shared_ptr<RecordingStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(Add("r" + std::to_string(i), 5, 12, 0, 10 * i));
  RunToIdle(2000);
  for (auto& s : streams) ASSERT_TRUE(s->finished());
  ASSERT_GT(sched_->num_preemptions(), 0);
  EXPECT_EQ(kv_->prefix_cache_stats().queries, 4 * 5);  // each prompt once
  EXPECT_LE(kv_->prefix_cache_stats().hits, kv_->prefix_cache_stats().queries);
}

TEST_F(SchedulerTest, APromptCountsAsComputedOnceAndNotWhenAbortedBeforeItRan) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 64;
  Init(12, o);  // preemption recomputes prompts: they still count once
  std::vector<std::shared_ptr<RecordingStream>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(Add("r" + std::to_string(i), 5, 12, 0, 10 * i));
  auto queued = Add("queued", 5, 4, 0, 70);
  sched_->Abort("queued");  // never scheduled
  RunToIdle(2000);
  ASSERT_GT(sched_->num_preemptions(), 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(listener_.prompts_computed["r" + std::to_string(i)], 1);
  EXPECT_EQ(listener_.prompts_computed.count("queued"), 0u);
  EXPECT_TRUE(queued->finished());
}

TEST_F(SchedulerTest, LowerPriorityValueIsServedFirst) {
  SchedulerOptions o;
  o.max_num_seqs = 1;
  Init(64, o);
  auto late = Add("late", 3, 1, /*priority=*/5);
  auto urgent = Add("urgent", 3, 1, /*priority=*/0);
  Step();
  EXPECT_TRUE(urgent->finished());
  EXPECT_FALSE(late->finished());
}

TEST_F(SchedulerTest, AtMostOneLongPrefillAtATime) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 64;
  o.long_prefill_threshold = 16;
  o.max_long_prefills = 1;
  Init(256, o);
  Add("long1", 40, 1);
  Add("long2", 40, 1);
  auto short1 = Add("short", 4, 1);
  StepPlan p = Step();
  ASSERT_EQ(p.chunks.size(), 2u);  // long1 (up to budget) and short; long2 waits
  EXPECT_EQ(p.chunks[0].num_tokens, 40);
  EXPECT_EQ(p.chunks[1].num_tokens, 4);
}

TEST_F(SchedulerTest, NChoicesAreSeparateSequencesWithTheirOwnEvents) {
  Init(64);
  auto stream = AddRequest("n", {1, 2, 3, 4, 5}, 4, [](GenerateRequest& r) { r.n = 3; });
  RunToIdle();
  std::map<int, int> finished;
  for (const auto& e : stream->events) {
    if (e.finish_reason != FinishReason::kNone) ++finished[e.choice];
  }
  EXPECT_EQ(finished, (std::map<int, int>{{0, 1}, {1, 1}, {2, 1}}));
}

TEST_F(SchedulerTest, PromptLogprobsSkipThePrefixCacheAndArriveWithTheFirstToken) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 512;
  o.long_prefill_threshold = 1000;
  o.max_model_len = 512;
  Init(256, o);
  Add("warm", 300, 1);  // fills the prefix cache with the same prompt
  RunToIdle();
  const std::vector<int32_t> prompt = Ids(300, 10);
  auto stream = AddRequest("score", prompt, 2, [](GenerateRequest& r) { r.prompt_logprobs = 0; });
  std::vector<int64_t> chunks;
  while (!stream->finished()) {
    StepPlan p = Step();
    ASSERT_EQ(p.chunks.size(), 1u);
    if (p.chunks[0].all_logits) chunks.push_back(p.chunks[0].num_tokens);
  }
  // No cache hit, and the logits come in chunks of at most kPromptLogitsChunk.
  EXPECT_EQ(chunks, (std::vector<int64_t>{128, 128, 44}));
  ASSERT_EQ(stream->events.size(), 2u);
  EXPECT_EQ(stream->events[0].cached_prompt_tokens, 0);
  const std::vector<TokenLogprob>& lp = stream->events[0].prompt_logprobs;
  ASSERT_EQ(lp.size(), 299u);
  for (size_t i = 0; i < lp.size(); ++i) {
    EXPECT_EQ(lp[i].id, prompt[i + 1]);
    EXPECT_EQ(lp[i].logprob, -static_cast<float>(i + 1));
  }
  EXPECT_TRUE(stream->events[1].prompt_logprobs.empty());  // once per choice
  EXPECT_EQ(stream->tokens().size(), 2u);
}

TEST_F(SchedulerTest, ZeroMaxTokensScoresThePromptAndGeneratesNothing) {
  Init(64);
  auto stream = AddRequest("echo", {5, 6, 7, 8, 9}, 0, [](GenerateRequest& r) {
    r.prompt_logprobs = 2;
    r.n = 2;
    r.sampling.temperature = 1;
  });
  RunToIdle();
  ASSERT_EQ(stream->events.size(), 2u);  // one per choice
  for (const TokenEvent& e : stream->events) {
    EXPECT_EQ(e.finish_reason, FinishReason::kLength);
    EXPECT_TRUE(e.token_ids.empty());
    EXPECT_EQ(e.completion_tokens, 0);
    ASSERT_EQ(e.prompt_logprobs.size(), 4u);
    EXPECT_EQ(e.prompt_logprobs[3].id, 9);
  }
  EXPECT_EQ(kv_->free_pages(), kv_->total_pages());
}

TEST_F(SchedulerTest, PromptLogprobsSurvivePreemptionMidPrompt) {
  SchedulerOptions o;
  o.max_num_batched_tokens = 2;
  Init(12, o);  // 6 blocks = 24 tokens
  // "other" decodes ahead of the scoring request and outgrows the pool while "score" (admitted
  // because its whole prompt fit then) is still prefilling its 12-token prompt a token per step:
  // "score" is preempted mid-prompt and recomputed from the start once "other" is done.
  auto other = Add("other", 4, 10, /*priority=*/-1);
  Step();
  auto stream = AddRequest("score", Ids(12, 20), 1, [](GenerateRequest& r) { r.prompt_logprobs = 0; });
  RunToIdle();
  EXPECT_GT(sched_->num_preemptions(), 0);
  ASSERT_TRUE(stream->finished());
  ASSERT_EQ(stream->events[0].prompt_logprobs.size(), 11u);
  for (size_t i = 0; i < 11; ++i) {
    EXPECT_EQ(stream->events[0].prompt_logprobs[i].id, 21 + static_cast<int>(i));
    EXPECT_EQ(stream->events[0].prompt_logprobs[i].logprob, -static_cast<float>(i + 1));
  }
  EXPECT_TRUE(other->finished());
}

}  // namespace
}  // namespace peng
