// Scheduler: the step function of the engine loop over explicit state. Requests become
// sequences (one per choice); each Schedule() returns a plain-data StepPlan — which sequences
// run how many tokens this step — after growing their KV through the KvManager; Update()
// applies the sampled tokens, checks stops and emits TokenEvents. Progress is vLLM v1's:
// num_computed closes on the sequence's token count under a token budget, so chunked prefill,
// prefix-cache hits and recompute after preemption are the same arithmetic.
//
// Policies: running sequences first (decodes and unfinished prefills), in (priority, arrival)
// order; then waiting ones, with at most `max_long_prefills` long prompts prefilling at once.
// When KV runs out, a running sequence is preempted (recompute): the least important one with
// the fewest preemptions so far, so no request is preempted again and again while others never
// are. No new admissions in a step that preempted. Owned by the engine loop thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "engine/json_constraint.h"
#include "engine/tool_call_grammar.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "memory/kv_manager.h"
#include "scheduler/request.h"
#include "scheduler/stop_checker.h"

namespace peng {

struct SchedulerOptions {
  int max_num_seqs = 64;                  // running sequences
  int max_num_batched_tokens = 512;       // tokens per step
  int max_long_prefills = 1;              // long prompts prefilling concurrently
  int long_prefill_threshold = 256;       // a prompt this long (tokens to compute) is "long"
  int max_waiting_requests = 256;         // bounded queue: requests ...
  int64_t max_waiting_tokens = 262144;    // ... and their prompt tokens
  int64_t max_model_len = 8192;           // prompt + generated, per sequence
  int vocab_size = 0;                     // logits width (for the samplers)
  // Prompts this long compute their prompt positions on other kernels than generated tokens
  // (ForwardBackend::PromptPathMinTokens; 0: never). Their KV is cached apart, so a prefix hit
  // never hands a sequence KV that a cold run would have computed differently.
  int64_t prompt_path_min_tokens = 0;
};

using Clock = std::chrono::steady_clock;

// One choice of a request.
struct Sequence {
  memory::SeqId id = 0;
  std::shared_ptr<const GenerateRequest> request;
  std::shared_ptr<RequestStream> stream;
  int choice = 0;
  std::vector<int32_t> tokens;            // prompt, then generated
  int64_t prompt_len = 0;
  int64_t num_computed = 0;               // tokens whose KV is in the cache
  int64_t cached_prompt_tokens = 0;       // from the prefix cache at first admission
  int num_preemptions = 0;
  uint64_t order = 0;                     // arrival order (ties within a priority)
  bool running = false;
  std::optional<Sampler> sampler;
  std::optional<StopChecker> stop;
  Clock::time_point first_scheduled{}, first_token{}, last_token{};
  // Prompt logprobs (request->prompt_logprobs >= 0): entry i is prompt token i + 1's,
  // collected as the prefill chunks compute their logits; sent with the first event.
  std::vector<TokenLogprob> prompt_logprobs;
  bool prompt_logprobs_sent = false;

  bool wants_prompt_logits() const { return request->prompt_logprobs >= 0 && !prompt_logprobs_sent; }
  int64_t num_generated() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
};

struct ScheduledChunk {
  memory::SeqId seq = 0;
  int64_t start = 0;        // first position computed this step
  int64_t num_tokens = 0;
  bool sample = false;      // the chunk reaches the end of the sequence: sample its next token
  bool all_logits = false;  // logits at every position (prompt logprobs), not just the last
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;
  std::vector<memory::SeqId> preempted;
  bool empty() const { return chunks.empty(); }
  int64_t num_tokens() const;
  int64_t num_samples() const;
};

// Timing and counting hooks for metrics; every method has a no-op default.
class SchedulerListener {
 public:
  virtual ~SchedulerListener() = default;
  virtual void OnScheduled(const Sequence& seq, double queue_seconds) {}
  // Once per sequence, when its whole prompt has been computed (before its first token, or
  // when a scoring-only request is done).
  virtual void OnPromptComputed(const Sequence& seq) {}
  virtual void OnToken(const Sequence& seq, bool first, double seconds_since_previous) {}
  virtual void OnPreempted(const Sequence& seq) {}
  virtual void OnFinished(const Sequence& seq, FinishReason reason) {}
};

class Scheduler {
 public:
  // Prefill chunk cap for sequences that collect prompt logprobs: their logits are
  // [chunk x vocab] floats (25 MB for a 49k vocabulary at 128 tokens).
  static constexpr int64_t kPromptLogitsChunk = 128;

  Scheduler(SchedulerOptions options, memory::KvManager* kv, const Tokenizer* tokenizer,
            SchedulerListener* listener = nullptr);

  // Admission checks that need no queue state: the request can ever fit (context and KV).
  absl::Status CheckFits(const GenerateRequest& request) const;
  // Queues a request (n sequences). ResourceExhausted when the waiting queue is full, unless
  // the caller already enforced the bounds (the engine loop does, at Submit).
  absl::Status Add(std::shared_ptr<const GenerateRequest> request,
                   std::shared_ptr<RequestStream> stream, bool enforce_queue_bounds = true);
  // Ends every sequence of the request in whatever state, with FinishReason::kAbort.
  void Abort(const std::string& request_id);
  // Ends everything (drain timeout, shutdown).
  void AbortAll();

  StepPlan Schedule();
  // `sampled` holds one token per chunk with sample = true, in chunk order.
  void Update(const StepPlan& plan, std::span<const SampledToken> sampled);
  // For a chunk with all_logits, before Update: records the prompt logprobs its rows give.
  // Row j (logits at position start + j) predicts token start + j + 1; logprob_at(j, token)
  // returns that token's entry. Positions already recorded (before a preemption) are skipped.
  void CollectPromptLogprobs(const ScheduledChunk& c,
                             const std::function<TokenLogprob(int64_t row, int32_t token)>& logprob_at);
  // Fails every sequence of the plan with an error event (the worker failed the step).
  void FailStep(const StepPlan& plan, const std::string& message);

  Sequence& sequence(memory::SeqId id) { return *seqs_.at(id); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_waiting_requests() const;
  int64_t num_waiting_tokens() const { return waiting_tokens_; }
  int64_t num_preemptions() const { return num_preemptions_; }
  bool idle() const { return running_.empty() && waiting_.empty(); }

 private:
  void Preempt(memory::SeqId id);
  // The sequence's first positions on the prompt path (SchedulerOptions::prompt_path_min_tokens).
  int64_t PromptPath(const Sequence& s) const;
  // Tokens of `s` to compute this step within `budget`, and its chunk.
  static int64_t ChunkLength(const Sequence& s, int64_t budget);
  static ScheduledChunk Chunk(const Sequence& s, int64_t n);
  // An event of `s` with its prompt counts (and, once, its prompt logprobs).
  static TokenEvent PromptEvent(Sequence& s);
  void Finish(memory::SeqId id, FinishReason reason, const std::string& text,
              const std::string& error = "");
  void SortWaiting();
  bool Before(const Sequence& a, const Sequence& b) const;

  SchedulerOptions options_;
  memory::KvManager* kv_;
  const Tokenizer* tokenizer_;
  // Built at the first constrained request, with the masks its kinds of grammar share.
  std::shared_ptr<const JsonVocabulary> json_vocabulary_;
  std::shared_ptr<SharedMasks<JsonGrammar>> json_masks_;
  std::shared_ptr<SharedMasks<SchemaGrammar>> schema_masks_;
  std::shared_ptr<SharedMasks<ToolCallBlockGrammar>> tool_call_masks_;
  std::shared_ptr<SharedMasks<ChoiceGrammar>> choice_masks_;
  std::shared_ptr<SharedMasks<RegexGrammar>> regex_masks_;
  SchedulerListener* listener_;
  SchedulerListener no_listener_;
  std::unordered_map<memory::SeqId, std::unique_ptr<Sequence>> seqs_;
  std::unordered_multimap<std::string, memory::SeqId> by_request_;
  std::vector<memory::SeqId> running_;
  std::vector<memory::SeqId> waiting_;
  int64_t waiting_tokens_ = 0;
  memory::SeqId next_seq_ = 1;
  uint64_t next_order_ = 0;
  int64_t num_preemptions_ = 0;
};

}  // namespace peng
