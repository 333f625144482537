#include "scheduler/engine_metrics.h"

namespace peng {
namespace {

double Secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

EngineMetrics::EngineMetrics(metrics::Registry* r)
    : running_(r->AddGauge("peng:num_requests_running", "Sequences in the running batch.").Get()),
      waiting_(r->AddGauge("peng:num_requests_waiting", "Sequences waiting to be scheduled.").Get()),
      kv_usage_(r->AddGauge("peng:kv_cache_usage_perc", "KV-cache usage, 0 to 1 (1 = full).").Get()),
      prefix_queries_(r->AddCounter("peng:prefix_cache_queries",
                                    "Prompt tokens looked up in the prefix cache (at each request's first "
                                    "admission; a preempted request's resumption is not counted).").Get()),
      prefix_hits_(r->AddCounter("peng:prefix_cache_hits",
                                 "Prompt tokens found in the prefix cache (at each request's first admission).").Get()),
      preemptions_(r->AddCounter("peng:num_preemptions", "Sequences preempted (recompute).").Get()),
      prompt_tokens_(r->AddCounter("peng:prompt_tokens",
                                   "Prompt tokens processed: a request's prompt counts once it has been "
                                   "computed (its first token), as vLLM's.").Get()),
      generation_tokens_(r->AddCounter("peng:generation_tokens", "Tokens generated.").Get()),
      success_(r->AddCounter("peng:request_success", "Finished sequences by finish reason.", {"finished_reason"})),
      ttft_(r->AddHistogram("peng:time_to_first_token_seconds", "Time to first token.",
                            metrics::kTimeToFirstTokenBuckets).Get()),
      itl_(r->AddHistogram("peng:inter_token_latency_seconds", "Time between generated tokens.",
                           metrics::kInterTokenLatencyBuckets).Get()),
      e2e_(r->AddHistogram("peng:e2e_request_latency_seconds", "Arrival to last token.",
                           metrics::kRequestLatencyBuckets).Get()),
      queue_time_(r->AddHistogram("peng:request_queue_time_seconds", "Arrival to first scheduled.",
                                  metrics::kRequestLatencyBuckets).Get()),
      prefill_time_(r->AddHistogram("peng:request_prefill_time_seconds", "First scheduled to first token.",
                                    metrics::kRequestLatencyBuckets).Get()),
      decode_time_(r->AddHistogram("peng:request_decode_time_seconds", "First token to last token.",
                                   metrics::kRequestLatencyBuckets).Get()),
      request_prompt_tokens_(r->AddHistogram("peng:request_prompt_tokens", "Prompt tokens per request.",
                                             metrics::OneTwoFiveBuckets(1 << 20)).Get()),
      request_generation_tokens_(r->AddHistogram("peng:request_generation_tokens", "Generated tokens per request.",
                                                 metrics::OneTwoFiveBuckets(1 << 20)).Get()),
      iteration_tokens_(r->AddHistogram("peng:iteration_tokens_total", "Tokens computed per engine step.",
                                        metrics::OneTwoFiveBuckets(1 << 16)).Get()),
      // 100 µs to ~6.5 s: a CPU decode step takes milliseconds, a long prefill chunk on a slow
      // machine seconds.
      step_seconds_(r->AddHistogram("peng:engine_step_seconds",
                                    "Engine step wall time by phase: forward (the model) and host "
                                    "(the loop's scheduling, sampling and streaming around it).",
                                    metrics::ExponentialBuckets(1e-4, 2, 17), {"phase"})),
      step_forward_(step_seconds_.Labels({"forward"})),
      step_host_(step_seconds_.Labels({"host"})),
      kv_bytes_per_token_(r->AddGauge("peng:kv_bytes_per_token",
                                      "KV bytes per token held (all layers and kv-heads), metadata and page "
                                      "slack included.").Get()),
      kv_compression_(r->AddGauge("peng:kv_compression_ratio",
                                  "fp16 KV bytes per token / peng:kv_bytes_per_token.").Get()),
      kv_pruned_(r->AddCounter("peng:kv_tokens_pruned", "LeanKV: (token, layer, kv-head) entries pruned.").Get()),
      kv_demoted_(r->AddCounter("peng:kv_tokens_demoted",
                                "LeanKV: (token, layer, kv-head) entries demoted to low precision.").Get()),
      kv_head_sparsity_(r->AddHistogram("peng:kv_head_sparsity",
                                        "LeanKV: fraction of its tokens a (request, layer, kv-head) pruned, "
                                        "observed when the request's KV is freed.",
                                        {0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0}).Get()) {
  for (const char* reason : {"stop", "length", "abort", "error"}) success_.Labels({reason});
}

void EngineMetrics::OnScheduled(const Sequence& seq, double queue_seconds) {
  queue_time_.Observe(queue_seconds);
}

// A prompt aborted in the queue or mid-prefill was never processed: not counted.
void EngineMetrics::OnPromptComputed(const Sequence& seq) { prompt_tokens_.Inc(static_cast<double>(seq.prompt_len)); }

void EngineMetrics::OnToken(const Sequence& seq, bool first, double since) {
  generation_tokens_.Inc();
  if (first) {
    ttft_.Observe(since);
  } else {
    itl_.Observe(since);
  }
}

void EngineMetrics::OnPreempted(const Sequence& seq) { preemptions_.Inc(); }

void EngineMetrics::OnFinished(const Sequence& seq, FinishReason reason) {
  success_.Labels({FinishReasonName(reason)}).Inc();
  request_prompt_tokens_.Observe(static_cast<double>(seq.prompt_len));
  request_generation_tokens_.Observe(static_cast<double>(seq.num_generated()));
  const auto now = Clock::now();
  e2e_.Observe(Secs(now - seq.request->arrival));
  if (seq.first_scheduled != Clock::time_point{} && seq.first_token != Clock::time_point{}) {
    prefill_time_.Observe(Secs(seq.first_token - seq.first_scheduled));
    decode_time_.Observe(Secs(seq.last_token - seq.first_token));
  }
}

void EngineMetrics::OnStepTimes(Clock::duration forward, Clock::duration host) {
  step_forward_.Observe(Secs(forward));
  step_host_.Observe(Secs(host));
}

void EngineMetrics::OnStep(const Scheduler& s, memory::KvManager& kv, int64_t step_tokens) {
  running_.Set(static_cast<double>(s.num_running()));
  waiting_.Set(static_cast<double>(s.num_waiting()));
  kv_usage_.Set(kv.usage());
  const memory::PrefixCacheStats p = kv.prefix_cache_stats();
  prefix_queries_.Inc(static_cast<double>(p.queries - last_prefix_.queries));
  prefix_hits_.Inc(static_cast<double>(p.hits - last_prefix_.hits));
  last_prefix_ = p;
  if (step_tokens > 0) iteration_tokens_.Observe(static_cast<double>(step_tokens));

  const memory::KvShape& shape = kv.shape();
  const double fp16_bytes = 2.0 * 2.0 * shape.head_dim * shape.num_layers * shape.num_kv_heads;
  double bytes_per_token = kv.bytes_per_token();
  if (const memory::LeanKv* lean = kv.lean(); lean != nullptr) {
    const memory::LeanKvStats st = lean->stats();
    if (st.logical_tokens > 0) {
      bytes_per_token = static_cast<double>(st.pages) * static_cast<double>(kv.page_bytes()) *
                        lean->num_tables() / static_cast<double>(st.logical_tokens);
    } else if (kv_bytes_per_token_.Value() > 0) {  // nothing held to measure: the last value
      bytes_per_token = kv_bytes_per_token_.Value();
    }  // else, before anything was held, the layout's bytes per token before pruning
    kv_pruned_.Inc(static_cast<double>(st.tokens_pruned - last_lean_.tokens_pruned));
    kv_demoted_.Inc(static_cast<double>(st.tokens_demoted - last_lean_.tokens_demoted));
    last_lean_ = st;
    for (const float sparsity : kv.TakeFinishedSparsity()) kv_head_sparsity_.Observe(sparsity);
  }
  if (bytes_per_token > 0) {
    kv_bytes_per_token_.Set(bytes_per_token);
    kv_compression_.Set(fp16_bytes / bytes_per_token);
  }
}

}  // namespace peng
