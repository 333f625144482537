// EngineMetrics: the vLLM metric set (with the `peng:` prefix) recorded from the engine loop.
// Implements SchedulerListener for per-request timings; the loop calls OnStep once per
// iteration for gauges and counters. Instruments are lock-free, so /metrics renders them from
// HTTP threads while the loop records.
#pragma once

#include "base/metrics.h"
#include "memory/kv_manager.h"
#include "scheduler/scheduler.h"

namespace peng {

class EngineMetrics : public SchedulerListener {
 public:
  explicit EngineMetrics(metrics::Registry* registry);

  void OnScheduled(const Sequence& seq, double queue_seconds) override;
  void OnPromptComputed(const Sequence& seq) override;
  void OnToken(const Sequence& seq, bool first, double seconds_since_previous) override;
  void OnPreempted(const Sequence& seq) override;
  void OnFinished(const Sequence& seq, FinishReason reason) override;
  // After each iteration: queue gauges, KV usage and compression, prefix-cache counters,
  // tokens computed. Takes the finished tables' sparsities from `kv`.
  void OnStep(const Scheduler& scheduler, memory::KvManager& kv, int64_t step_tokens);
  // One step's wall time: in the model forward, and in the loop's own work around it
  // (scheduling, sampling, handing tokens to the frontends), during which the compute threads
  // wait.
  void OnStepTimes(Clock::duration forward, Clock::duration host);

 private:
  metrics::Gauge& running_;
  metrics::Gauge& waiting_;
  metrics::Gauge& kv_usage_;
  metrics::Counter& prefix_queries_;
  metrics::Counter& prefix_hits_;
  metrics::Counter& preemptions_;
  metrics::Counter& prompt_tokens_;
  metrics::Counter& generation_tokens_;
  metrics::Family<metrics::Counter>& success_;
  metrics::Histogram& ttft_;
  metrics::Histogram& itl_;
  metrics::Histogram& e2e_;
  metrics::Histogram& queue_time_;
  metrics::Histogram& prefill_time_;
  metrics::Histogram& decode_time_;
  metrics::Histogram& request_prompt_tokens_;
  metrics::Histogram& request_generation_tokens_;
  metrics::Histogram& iteration_tokens_;
  metrics::Family<metrics::Histogram>& step_seconds_;
  metrics::Histogram& step_forward_;
  metrics::Histogram& step_host_;
  // KV compression (LeanKV; dense and quantized modes report their fixed bytes per token).
  metrics::Gauge& kv_bytes_per_token_;
  metrics::Gauge& kv_compression_;
  metrics::Counter& kv_pruned_;
  metrics::Counter& kv_demoted_;
  metrics::Histogram& kv_head_sparsity_;
  memory::PrefixCacheStats last_prefix_{};
  memory::LeanKvStats last_lean_{};
};

}  // namespace peng
