#include "scheduler/local_engine_loop.h"

#include <algorithm>

#include <climits>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/crash_report.h"
#include "base/log.h"
#include "base/status.h"

namespace peng {
namespace {

// The sampling buffers of the calling thread: the engine loop draws a step's rows on the
// worker's threads, each with its own.
SamplingScratch& ThreadScratch() {
  thread_local SamplingScratch scratch;
  return scratch;
}

memory::KvShape ShapeOf(const ModelConfig& c) { return {c.num_layers, c.num_kv_heads, c.head_dim}; }

SchedulerOptions WithModel(SchedulerOptions o, const ModelConfig& c) {
  o.vocab_size = c.vocab_size;
  if (o.max_model_len <= 0 || o.max_model_len > c.context_length) o.max_model_len = c.context_length;
  return o;
}

// The CPU worker's options: fused kernels for every batch size when batch-invariant.
ForwardOptions CpuOptions(const LocalEngineLoopOptions& o) {
  return ForwardOptions{.num_threads = o.threads,
                        .blas_min_tokens = o.batch_invariant ? INT_MAX : 64,
                        .int8_activations = o.int8_activations,
                        .amx_prompts = o.amx_prompts,
                        .amx_attention = o.amx_attention,
                        .pinning = o.pinning};
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalEngineLoop>> LocalEngineLoop::Create(
    const Model& model, LocalEngineLoopOptions options, metrics::Registry* registry) {
  BackendOptions bo;
  bo.device = options.device;
  bo.cpu = CpuOptions(options);
  bo.cuda_device = options.cuda_device;
  bo.kv_format = options.kv.leankv ? options.kv.lean.high : options.kv.format;
  if (options.kv.leankv) bo.kv_low_format = options.kv.lean.low;
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<ForwardBackend> forward, MakeForward(model, bo));
  PENG_RETURN_IF_ERROR(memory::KvManager::Validate(ShapeOf(model.config), options.kv));
  PENG_ASSIGN_OR_RETURN(options.kv.page_memory, forward->KvPoolMemory(options.kv.budget_bytes));
  // A host pool the machine cannot hold is an error here, not a crash (CUDA: the worker's
  // KvPoolMemory already failed).
  absl::StatusOr<std::unique_ptr<memory::KvManager>> kv =
      memory::KvManager::Create(ShapeOf(model.config), options.kv);
  if (!kv.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("engine.kv_budget: ", kv.status().message(),
                                                     "; lower it (e.g. --kv-budget 256MiB)"));
  }
  return std::unique_ptr<LocalEngineLoop>(new LocalEngineLoop(model, std::move(options), registry,
                                                              std::move(forward), *std::move(kv)));
}

LocalEngineLoop::LocalEngineLoop(const Model& model, LocalEngineLoopOptions options,
                                 metrics::Registry* registry)
    : LocalEngineLoop(model, options, registry, std::make_unique<LlamaForward>(model, CpuOptions(options)),
                      [&] {
                        auto kv = memory::KvManager::Create(ShapeOf(model.config), options.kv);
                        PENG_CHECK(kv.ok());
                        return *std::move(kv);
                      }()) {}

LocalEngineLoop::LocalEngineLoop(const Model& model, LocalEngineLoopOptions options,
                                 metrics::Registry* registry, std::unique_ptr<ForwardBackend> forward,
                                 std::unique_ptr<memory::KvManager> kv)
    : model_(model),
      options_([&] {
        options.scheduler = WithModel(options.scheduler, model.config);
        options.scheduler.prompt_path_min_tokens = forward->PromptPathMinTokens();
        return options;
      }()),
      forward_(std::move(forward)),
      kv_(std::move(kv)),
      kv_view_(kv_.get()),
      metrics_(registry ? std::make_unique<EngineMetrics>(registry) : nullptr),
      scheduler_(options_.scheduler, kv_.get(), model.tokenizer.get(), metrics_.get()) {
  // LeanKV's compression runs on the engine thread between steps, while the worker's other
  // threads wait: it takes them along (docs/BENCHMARKS.md, "LeanKV: compression on every thread").
  kv_->SetParallelFor([f = forward_.get()](int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    f->ParallelFor(n, fn);
  });
  PublishStats();
}

LocalEngineLoop::~LocalEngineLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LocalEngineLoop::Start() {
  thread_ = std::thread([this] {
    SetThreadName("peng-engine");
    Run();
  });
}

absl::Status LocalEngineLoop::CheckQueueFits(int64_t requests, int64_t prompt_tokens) const {
  const SchedulerOptions& o = options_.scheduler;
  if (requests > o.max_waiting_requests) {
    return absl::InvalidArgumentError(absl::StrCat("The request's ", requests, " prompts exceed the waiting queue's limit of ",
                                                   o.max_waiting_requests, " requests."));
  }
  if (prompt_tokens > o.max_waiting_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("The request's ", prompt_tokens,
                                                   " prompt tokens (all prompts, times n) exceed the waiting queue's limit of ",
                                                   o.max_waiting_tokens, " tokens."));
  }
  return absl::OkStatus();
}

absl::Status LocalEngineLoop::Submit(std::unique_ptr<GenerateRequest> request,
                                     std::shared_ptr<RequestStream> stream) {
  if (draining_.load()) return absl::UnavailableError("the server is draining");
  // CheckFits reads only immutable limits, so it is safe off the loop thread.
  PENG_RETURN_IF_ERROR(scheduler_.CheckFits(*request));
  // Reserve, then check, so concurrent frontends cannot overfill the queue between the two.
  const int64_t tokens = static_cast<int64_t>(request->prompt.size()) * request->n;
  const int64_t reqs = pending_requests_.fetch_add(1) + 1;
  const int64_t toks = pending_tokens_.fetch_add(tokens) + tokens;
  const int64_t queued = stat_waiting_requests_.load() + reqs;
  const int64_t queued_tokens = stat_waiting_tokens_.load() + toks;
  if (queued > options_.scheduler.max_waiting_requests ||
      queued_tokens > options_.scheduler.max_waiting_tokens) {
    pending_requests_.fetch_sub(1);
    pending_tokens_.fetch_sub(tokens);
    return absl::ResourceExhaustedError(absl::StrCat("the waiting queue is full (", queued - 1,
                                                     " requests, ", queued_tokens - tokens,
                                                     " prompt tokens)"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back({std::shared_ptr<GenerateRequest>(std::move(request)), std::move(stream), "", false});
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void LocalEngineLoop::Abort(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back({nullptr, nullptr, request_id, false});
  }
  cv_.notify_one();
}

EngineStats LocalEngineLoop::Stats() const {
  EngineStats s;
  s.num_running = stat_running_.load();
  s.num_waiting = stat_waiting_.load() + pending_requests_.load();
  s.kv_total_pages = kv_->total_pages();
  s.kv_free_pages = stat_free_pages_.load();
  s.kv_usage = s.kv_total_pages ? 1.0 - double(s.kv_free_pages) / s.kv_total_pages : 0.0;
  return s;
}

int64_t LocalEngineLoop::Drain(std::chrono::milliseconds timeout) {
  draining_.store(true);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto in_flight = [&] {
    const EngineStats s = Stats();
    return s.num_running + s.num_waiting;
  };
  while (in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int64_t aborted = in_flight();
  if (aborted > 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back({nullptr, nullptr, "", true});
    }
    cv_.notify_one();
    while (in_flight() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return aborted;
}

void LocalEngineLoop::DrainTasks() {
  std::deque<Task> tasks;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_ || !tasks_.empty() || !scheduler_.idle(); });
    tasks.swap(tasks_);
  }
  for (Task& t : tasks) {
    if (t.abort_all) {
      scheduler_.AbortAll();
    } else if (t.request == nullptr) {
      scheduler_.Abort(t.abort_id);
    } else {
      const std::string id = t.request->id;
      // Submit already admitted it against the bounds: the scheduler must not reject it again.
      absl::Status s = scheduler_.Add(t.request, t.stream, /*enforce_queue_bounds=*/false);
      // Publish the new waiting counts before dropping the reservation, so Submit never sees
      // the request in neither.
      PublishWaiting();
      pending_requests_.fetch_sub(1);
      pending_tokens_.fetch_sub(static_cast<int64_t>(t.request->prompt.size()) * t.request->n);
      if (!s.ok()) {
        TokenEvent ev;
        ev.request_id = id;
        ev.finish_reason = FinishReason::kError;
        ev.error = std::string(s.message());
        ev.prompt_tokens = static_cast<int64_t>(t.request->prompt.size());
        t.stream->OnEvent(std::move(ev));
      }
    }
  }
}

void LocalEngineLoop::Step() {
  const Clock::time_point step_start = Clock::now();
  StepPlan plan = scheduler_.Schedule();
  // Chunks of generated tokens first, prompt chunks after: the CPU worker runs long prompts'
  // tokens on another matmul kernel (ForwardOptions::amx_prompts), and one contiguous run of
  // rows per kernel is one call of each.
  std::stable_partition(plan.chunks.begin(), plan.chunks.end(), [&](const ScheduledChunk& c) {
    return c.start >= scheduler_.sequence(c.seq).prompt_len;
  });
  // The waiting queue is final for this step once scheduled: publish it before any token of
  // the step reaches a client, so a client that reacts to a token never finds the request it
  // watched start still counted as waiting by Submit's bounds.
  PublishWaiting();
  if (plan.empty()) {
    PublishStats();
    if (!scheduler_.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  ForwardBatch batch;
  batch.chunks.reserve(plan.chunks.size());
  for (const ScheduledChunk& c : plan.chunks) {
    const Sequence& s = scheduler_.sequence(c.seq);
    batch.chunks.push_back({.seq = c.seq,
                            .start_pos = c.start,
                            .tokens = {s.tokens.data() + c.start, static_cast<size_t>(c.num_tokens)},
                            .logits = c.all_logits ? SequenceChunk::Logits::kAll
                                      : c.sample   ? SequenceChunk::Logits::kLast
                                                   : SequenceChunk::Logits::kNone,
                            .prompt_len = s.prompt_len});
  }
  const Clock::time_point forward_start = Clock::now();
  const absl::Status status = forward_->Forward(batch, kv_view_, &out_);
  const Clock::time_point forward_end = Clock::now();
  if (!status.ok()) {
    Log(LogLevel::kError, "engine", absl::StrCat("step failed: ", status.message()));
    scheduler_.FailStep(plan, std::string(status.message()));
    PublishStats();
    return;
  }
  to_sample_.clear();
  int64_t row = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    if (c.all_logits) {
      // Row j predicts prompt token start + j + 1. Those rows' logprobs are independent: the
      // worker's threads share them (a row's normaliser and top alternatives read the whole
      // vocabulary), then the scheduler records the ones it has not yet.
      const Sequence& s = scheduler_.sequence(c.seq);
      const int32_t k = s.request->prompt_logprobs;
      const int64_t rows = std::clamp<int64_t>(s.prompt_len - 1 - c.start, 0, c.num_tokens);
      prompt_logprobs_.resize(rows);
      forward_->ParallelFor(rows, [&](int64_t b, int64_t e) {
        SamplingScratch& scratch = ThreadScratch();
        for (int64_t j = b; j < e; ++j) {
          prompt_logprobs_[j] = RawLogprobs(out_.row(row + j), s.tokens[c.start + j + 1], k, scratch);
        }
      });
      scheduler_.CollectPromptLogprobs(c, [&](int64_t j, int32_t token) {
        PENG_CHECK(j < rows && prompt_logprobs_[j].id == token);
        SampledToken& lp = prompt_logprobs_[j];
        return TokenLogprob{token, lp.logprob, std::move(lp.top_logprobs)};
      });
      row += c.num_tokens - 1;  // the last row, if sampled, is the next token's
      if (!c.sample) ++row;
    }
    if (!c.sample) continue;
    to_sample_.push_back({&*scheduler_.sequence(c.seq).sampler, row++});
  }
  // The rows' draws are independent (each sequence has its own sampler and generator), so the
  // worker's threads share them: a sampled row (temperature, top-p) takes ~50-450 µs over a
  // 49K vocabulary, which 16 rows serialized into every step.
  sampled_.resize(to_sample_.size());
  forward_->ParallelFor(static_cast<int64_t>(to_sample_.size()), [&](int64_t b, int64_t e) {
    SamplingScratch& scratch = ThreadScratch();
    for (int64_t i = b; i < e; ++i) sampled_[i] = to_sample_[i].sampler->Sample(out_.row(to_sample_[i].row), scratch);
  });
  if (std::any_of(sampled_.begin(), sampled_.end(), [](const SampledToken& t) { return t.id < 0; })) {
    // Only a model that overflows gets here (a file's weights are checked finite at load).
    Log(LogLevel::kError, "engine", "step failed: the model produced non-finite logits (inf or NaN)");
    scheduler_.FailStep(plan, "the model produced non-finite logits (inf or NaN)");
    PublishStats();
    return;
  }
  scheduler_.Update(plan, sampled_);
  if (metrics_) {
    metrics_->OnStepTimes(forward_end - forward_start,
                          (forward_start - step_start) + (Clock::now() - forward_end));
  }
  PublishStats(plan.num_tokens());
}

void LocalEngineLoop::PublishWaiting() {
  stat_waiting_requests_.store(scheduler_.num_waiting_requests());
  stat_waiting_tokens_.store(scheduler_.num_waiting_tokens());
}

void LocalEngineLoop::PublishStats(int64_t step_tokens) {
  stat_running_.store(scheduler_.num_running());
  stat_waiting_.store(scheduler_.num_waiting());
  PublishWaiting();
  stat_free_pages_.store(kv_->free_pages());
  if (metrics_) metrics_->OnStep(scheduler_, *kv_, step_tokens);
}

void LocalEngineLoop::Run() {
  while (true) {
    DrainTasks();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    Step();
  }
  scheduler_.AbortAll();
  PublishStats();
}

}  // namespace peng
