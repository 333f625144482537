#include "scheduler/scheduler.h"

#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status.h"

namespace peng {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int64_t StepPlan::num_tokens() const {
  int64_t n = 0;
  for (const auto& c : chunks) n += c.num_tokens;
  return n;
}

int64_t StepPlan::num_samples() const {
  int64_t n = 0;
  for (const auto& c : chunks) n += c.sample ? 1 : 0;
  return n;
}

Scheduler::Scheduler(SchedulerOptions options, memory::KvManager* kv, const Tokenizer* tokenizer,
                     SchedulerListener* listener)
    : options_(options), kv_(kv), tokenizer_(tokenizer), listener_(listener ? listener : &no_listener_) {}

absl::Status Scheduler::CheckFits(const GenerateRequest& r) const {
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  if (prompt == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (r.stop.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must not be negative");
  // Unsigned, so that max_tokens near 2^63 cannot wrap into a small total.
  const uint64_t requested = static_cast<uint64_t>(prompt) + static_cast<uint64_t>(r.stop.max_tokens);
  if (requested > static_cast<uint64_t>(options_.max_model_len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "This model's maximum context length is ", options_.max_model_len, " tokens. However, you requested ",
        requested, " tokens (", prompt, " in the messages, ", r.stop.max_tokens,
        " in the completion). Please reduce the length of the messages or completion."));
  }
  const int64_t total = static_cast<int64_t>(requested);
  if (total > kv_->max_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "The request needs ", total, " tokens of KV cache (", prompt, " prompt + ", r.stop.max_tokens,
        " completion) but the KV budget holds at most ", kv_->max_tokens(), " tokens per sequence."));
  }
  if (r.n < 1) return absl::InvalidArgumentError("n must be at least 1");
  if (prompt * r.n > options_.max_waiting_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "The request's ", prompt * r.n, " prompt tokens (", prompt, " x n=", r.n,
        ") exceed the waiting queue's limit of ", options_.max_waiting_tokens, " tokens."));
  }
  return absl::OkStatus();
}

int64_t Scheduler::num_waiting_requests() const {
  std::unordered_set<const GenerateRequest*> seen;
  for (memory::SeqId id : waiting_) seen.insert(seqs_.at(id)->request.get());
  return static_cast<int64_t>(seen.size());
}

absl::Status Scheduler::Add(std::shared_ptr<const GenerateRequest> request,
                            std::shared_ptr<RequestStream> stream, bool enforce_queue_bounds) {
  PENG_RETURN_IF_ERROR(CheckFits(*request));
  const int64_t new_tokens = static_cast<int64_t>(request->prompt.size()) * request->n;
  if (enforce_queue_bounds && (num_waiting_requests() + 1 > options_.max_waiting_requests ||
                               waiting_tokens_ + new_tokens > options_.max_waiting_tokens)) {
    return absl::ResourceExhaustedError("the waiting queue is full");
  }
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int c = 0; c < request->n; ++c) {
    auto s = std::make_unique<Sequence>();
    s->id = next_seq_++;
    s->request = request;
    s->stream = stream;
    s->choice = c;
    s->tokens = request->prompt;
    s->prompt_len = static_cast<int64_t>(request->prompt.size());
    s->order = next_order_;
    SamplingParams params = request->sampling;
    if (params.seed && c > 0) params.seed = *params.seed + c;  // distinct, reproducible choices
    auto sampler = Sampler::Create(params, options_.vocab_size, request->prompt);
    if (!sampler.ok()) return sampler.status();
    s->sampler.emplace(std::move(*sampler));
    if (request->stop.min_tokens > 0) {
      std::vector<int32_t> ids = request->stop.stop_token_ids;
      if (tokenizer_ != nullptr && !request->stop.ignore_eos) {
        ids.insert(ids.end(), tokenizer_->end_of_generation_ids().begin(), tokenizer_->end_of_generation_ids().end());
      }
      s->sampler->BanUntil(request->stop.min_tokens, std::move(ids));
    }
    if (request->ReplyConstrained() || request->tool_call_schema != nullptr) {
      if (tokenizer_ == nullptr) return absl::InvalidArgumentError("constrained output needs the model's tokenizer");
      if (json_vocabulary_ == nullptr) {
        json_vocabulary_ = JsonVocabulary::From(*tokenizer_);
        json_masks_ = std::make_shared<SharedMasks<JsonGrammar>>();
        schema_masks_ = std::make_shared<SharedMasks<SchemaGrammar>>();
        choice_masks_ = std::make_shared<SharedMasks<ChoiceGrammar>>();
        regex_masks_ = std::make_shared<SharedMasks<RegexGrammar>>();
        tool_call_masks_ = std::make_shared<SharedMasks<ToolCallBlockGrammar>>();
      }
      if (request->json_schema != nullptr) {
        s->sampler->SetConstraint(
            std::make_unique<SchemaConstraint>(json_vocabulary_, request->json_schema, schema_masks_));
      } else if (request->guided_choice != nullptr) {
        s->sampler->SetConstraint(
            std::make_unique<ChoiceConstraint>(json_vocabulary_, request->guided_choice, choice_masks_));
      } else if (request->guided_regex != nullptr) {
        s->sampler->SetConstraint(
            std::make_unique<RegexConstraint>(json_vocabulary_, request->guided_regex, regex_masks_));
      } else if (request->tool_call_schema != nullptr) {
        s->sampler->SetConstraint(
            std::make_unique<ToolCallTrigger>(json_vocabulary_, request->tool_call_schema, tool_call_masks_));
      } else {
        s->sampler->SetConstraint(std::make_unique<JsonConstraint>(json_vocabulary_, json_masks_));
      }
    }
    s->stop.emplace(tokenizer_, request->stop);
    seqs.push_back(std::move(s));
  }
  ++next_order_;
  for (auto& s : seqs) {
    by_request_.emplace(request->id, s->id);
    waiting_.push_back(s->id);
    waiting_tokens_ += s->prompt_len;
    seqs_.emplace(s->id, std::move(s));
  }
  return absl::OkStatus();
}

bool Scheduler::Before(const Sequence& a, const Sequence& b) const {
  if (a.request->priority != b.request->priority) return a.request->priority < b.request->priority;
  if (a.order != b.order) return a.order < b.order;
  return a.choice < b.choice;
}

void Scheduler::SortWaiting() {
  std::stable_sort(waiting_.begin(), waiting_.end(), [&](memory::SeqId x, memory::SeqId y) {
    return Before(*seqs_.at(x), *seqs_.at(y));
  });
}

void Scheduler::Preempt(memory::SeqId id) {
  Sequence& s = *seqs_.at(id);
  kv_->Free(id);
  s.num_computed = 0;
  s.running = false;
  ++s.num_preemptions;
  ++num_preemptions_;
  running_.erase(std::find(running_.begin(), running_.end(), id));
  waiting_.push_back(id);
  waiting_tokens_ += static_cast<int64_t>(s.tokens.size());
  listener_->OnPreempted(s);
}

int64_t Scheduler::PromptPath(const Sequence& s) const {
  const int64_t min = options_.prompt_path_min_tokens;
  return min > 0 && s.prompt_len >= min ? s.prompt_len : 0;
}

int64_t Scheduler::ChunkLength(const Sequence& s, int64_t budget) {
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(s.tokens.size()) - s.num_computed, budget);
  return s.wants_prompt_logits() ? std::min(n, kPromptLogitsChunk) : n;
}

ScheduledChunk Scheduler::Chunk(const Sequence& s, int64_t n) {
  return {.seq = s.id,
          .start = s.num_computed,
          .num_tokens = n,
          .sample = s.num_computed + n == static_cast<int64_t>(s.tokens.size()),
          .all_logits = s.wants_prompt_logits()};
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  std::vector<memory::Growth> growths;
  int64_t budget = options_.max_num_batched_tokens;
  const auto now = Clock::now();

  auto fits_with = [&](memory::SeqId id, int64_t len, int64_t reserve_pages = 0) {
    growths.push_back({id, len});
    const bool ok = kv_->CanGrow(growths, reserve_pages);
    growths.pop_back();
    return ok;
  };

  // 1. Running sequences, most important first.
  std::stable_sort(running_.begin(), running_.end(), [&](memory::SeqId x, memory::SeqId y) {
    return Before(*seqs_.at(x), *seqs_.at(y));
  });
  std::unordered_set<memory::SeqId> scheduled;
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    const memory::SeqId id = running_[i];
    Sequence& s = *seqs_.at(id);
    const int64_t n = ChunkLength(s, budget);
    bool preempted_self = false;
    while (!fits_with(id, s.num_computed + n)) {
      // Victim: the least important running sequence not yet given tokens this step, with the
      // fewest preemptions so far (anti-thrash); the sequence itself if there is none.
      memory::SeqId victim = id;
      for (memory::SeqId cand : running_) {
        if (cand == id || scheduled.count(cand)) continue;
        const Sequence& c = *seqs_.at(cand);
        const Sequence& v = *seqs_.at(victim);
        if (victim == id || c.num_preemptions < v.num_preemptions ||
            (c.num_preemptions == v.num_preemptions && Before(v, c))) {
          victim = cand;
        }
      }
      plan.preempted.push_back(victim);
      Preempt(victim);
      if (victim == id) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) continue;  // running_[i] now holds the next sequence
    growths.push_back({id, s.num_computed + n});
    plan.chunks.push_back(Chunk(s, n));
    scheduled.insert(id);
    budget -= n;
    ++i;
  }

  // 2. Waiting sequences, unless this step had to preempt.
  if (plan.preempted.empty()) {
    SortWaiting();
    int long_prefills = 0;
    for (memory::SeqId id : running_) {
      const Sequence& s = *seqs_.at(id);
      if (static_cast<int64_t>(s.tokens.size()) - s.num_computed > options_.long_prefill_threshold) ++long_prefills;
    }
    std::vector<memory::SeqId> admitted;
    std::unordered_set<memory::SeqId> looked_up;  // admitted with this step's prefix lookup
    for (memory::SeqId id : waiting_) {
      if (budget <= 0 || static_cast<int64_t>(running_.size() + admitted.size()) >= options_.max_num_seqs) break;
      Sequence& s = *seqs_.at(id);
      const bool first_time = s.first_scheduled == Clock::time_point{};
      bool looked = false;
      if (!kv_->Has(id)) {
        // Cached positions have no logits: prompts that collect logprobs compute them all.
        looked = !s.wants_prompt_logits();
        s.num_computed = looked ? kv_->MatchPrefix(id, s.tokens, PromptPath(s)) : 0;
        if (first_time) s.cached_prompt_tokens = s.num_computed;
      }
      const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.num_computed;
      const bool is_long = remaining > options_.long_prefill_threshold;
      if (is_long && long_prefills >= options_.max_long_prefills) {
        kv_->Free(id);  // give back the matched prefix; it stays cached
        s.num_computed = 0;
        continue;
      }
      const int64_t n = ChunkLength(s, budget);
      // Admission keeps one block (one page per table) free for every sequence that will be
      // running, so admitting does not force the next steps' growth into preemptions. And the
      // whole sequence must fit, not only this step's chunk: a prompt (or a preempted
      // sequence's recompute) started with room for its first chunk only would take the rest
      // from the running sequences, preempting them, and they it in turn (measured: 8
      // requests of ~950 + 400 tokens in 64 MiB, prefix caching off, thrashed through 324
      // preemptions).
      const int64_t reserve =
          kv_->pages_per_block() * static_cast<int64_t>(running_.size() + admitted.size());
      if (!fits_with(id, static_cast<int64_t>(s.tokens.size()), reserve)) {
        kv_->Free(id);
        s.num_computed = 0;
        break;  // admit in order: a later, smaller request must not starve this one
      }
      growths.push_back({id, s.num_computed + n});
      plan.chunks.push_back(Chunk(s, n));
      budget -= n;
      if (is_long) ++long_prefills;
      admitted.push_back(id);
      if (looked) looked_up.insert(id);
    }
    for (memory::SeqId id : admitted) {
      Sequence& s = *seqs_.at(id);
      // A request's prompt is counted once, at its first admission: a preempted sequence's
      // re-admission looks up its prompt and its output again, which is recompute, not a
      // prompt served from the cache (a tester saw 16x more "hits" than prompt tokens under
      // preemption).
      if (looked_up.count(id) != 0 && s.first_scheduled == Clock::time_point{}) {
        kv_->CountPrefixLookup(static_cast<int64_t>(s.tokens.size()), s.num_computed);
      }
      waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
      waiting_tokens_ -= static_cast<int64_t>(s.tokens.size());
      s.running = true;
      running_.push_back(id);
      if (s.first_scheduled == Clock::time_point{}) {
        s.first_scheduled = now;
        listener_->OnScheduled(s, Seconds(now - s.request->arrival));
      }
    }
  }
  const absl::Status grown = kv_->Grow(growths);
  PENG_CHECK(grown.ok());  // every growth was checked with CanGrow above
  return plan;
}

void Scheduler::Update(const StepPlan& plan, std::span<const SampledToken> sampled) {
  size_t next = 0;
  const auto now = Clock::now();
  for (const ScheduledChunk& c : plan.chunks) {
    auto it = seqs_.find(c.seq);
    if (!c.sample) {
      if (it != seqs_.end()) {
        it->second->num_computed = c.start + c.num_tokens;
        kv_->CommitComputed(c.seq, it->second->tokens, it->second->num_computed, PromptPath(*it->second));
      }
      continue;
    }
    PENG_CHECK(next < sampled.size());
    const SampledToken& tok = sampled[next++];
    if (it == seqs_.end()) continue;  // aborted during the step
    Sequence& s = *it->second;
    s.num_computed = c.start + c.num_tokens;
    kv_->CommitComputed(c.seq, s.tokens, s.num_computed, PromptPath(s));
    if (s.request->stop.max_tokens == 0) {  // scoring only: the prompt's logprobs, no token
      listener_->OnPromptComputed(s);
      TokenEvent ev = PromptEvent(s);
      ev.finish_reason = FinishReason::kLength;
      s.stream->OnEvent(std::move(ev));
      Finish(c.seq, FinishReason::kLength, "");
      continue;
    }
    s.sampler->Accept(tok.id);
    s.tokens.push_back(tok.id);
    const bool first = s.first_token == Clock::time_point{};
    if (first) listener_->OnPromptComputed(s);
    listener_->OnToken(s, first, Seconds(now - (first ? s.request->arrival : s.last_token)));
    if (first) s.first_token = now;
    s.last_token = now;

    StopChecker::Step step = s.stop->Push(tok.id, s.num_generated());
    TokenEvent ev = PromptEvent(s);
    ev.token_ids = {tok.id};
    ev.text = std::move(step.text);
    if (s.request->sampling.logprobs >= 0) ev.logprobs.push_back({tok.id, tok.logprob, tok.top_logprobs});
    ev.finish_reason = step.finish;
    ev.completion_tokens = s.num_generated();
    s.stream->OnEvent(std::move(ev));
    if (step.finish != FinishReason::kNone) Finish(c.seq, step.finish, "");
  }
}

void Scheduler::CollectPromptLogprobs(
    const ScheduledChunk& c, const std::function<TokenLogprob(int64_t row, int32_t token)>& logprob_at) {
  auto it = seqs_.find(c.seq);
  if (it == seqs_.end()) return;
  Sequence& s = *it->second;
  for (int64_t j = 0; j < c.num_tokens; ++j) {
    const int64_t pos = c.start + j;
    if (pos + 1 >= s.prompt_len || pos != static_cast<int64_t>(s.prompt_logprobs.size())) continue;
    s.prompt_logprobs.push_back(logprob_at(j, s.tokens[pos + 1]));
  }
}

TokenEvent Scheduler::PromptEvent(Sequence& s) {
  TokenEvent ev;
  ev.request_id = s.request->id;
  ev.choice = s.choice;
  ev.prompt_tokens = s.prompt_len;
  ev.cached_prompt_tokens = s.cached_prompt_tokens;
  if (s.wants_prompt_logits()) {
    PENG_CHECK(static_cast<int64_t>(s.prompt_logprobs.size()) == s.prompt_len - 1);
    ev.prompt_logprobs = std::move(s.prompt_logprobs);
    s.prompt_logprobs = {};
    s.prompt_logprobs_sent = true;
  }
  return ev;
}

void Scheduler::Finish(memory::SeqId id, FinishReason reason, const std::string& text,
                       const std::string& error) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  Sequence& s = *it->second;
  listener_->OnFinished(s, reason);
  kv_->Free(id);
  if (s.running) {
    running_.erase(std::find(running_.begin(), running_.end(), id));
  } else {
    auto w = std::find(waiting_.begin(), waiting_.end(), id);
    if (w != waiting_.end()) {
      waiting_.erase(w);
      waiting_tokens_ -= static_cast<int64_t>(s.tokens.size());
    }
  }
  auto range = by_request_.equal_range(s.request->id);
  for (auto r = range.first; r != range.second; ++r) {
    if (r->second == id) {
      by_request_.erase(r);
      break;
    }
  }
  seqs_.erase(it);
}

void Scheduler::Abort(const std::string& request_id) {
  std::vector<memory::SeqId> ids;
  auto range = by_request_.equal_range(request_id);
  for (auto r = range.first; r != range.second; ++r) ids.push_back(r->second);
  for (memory::SeqId id : ids) {
    Sequence& s = *seqs_.at(id);
    TokenEvent ev;
    ev.request_id = request_id;
    ev.choice = s.choice;
    ev.finish_reason = FinishReason::kAbort;
    ev.prompt_tokens = s.prompt_len;
    ev.completion_tokens = s.num_generated();
    ev.cached_prompt_tokens = s.cached_prompt_tokens;
    s.stream->OnEvent(std::move(ev));
    Finish(id, FinishReason::kAbort, "");
  }
}

void Scheduler::AbortAll() {
  std::vector<std::string> ids;
  for (const auto& [rid, sid] : by_request_) ids.push_back(rid);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (const std::string& id : ids) Abort(id);
}

void Scheduler::FailStep(const StepPlan& plan, const std::string& message) {
  for (const ScheduledChunk& c : plan.chunks) {
    auto it = seqs_.find(c.seq);
    if (it == seqs_.end()) continue;
    Sequence& s = *it->second;
    TokenEvent ev;
    ev.request_id = s.request->id;
    ev.choice = s.choice;
    ev.finish_reason = FinishReason::kError;
    ev.error = message;
    ev.prompt_tokens = s.prompt_len;
    ev.completion_tokens = s.num_generated();
    s.stream->OnEvent(std::move(ev));
    Finish(c.seq, FinishReason::kError, "", message);
  }
}

}  // namespace peng
