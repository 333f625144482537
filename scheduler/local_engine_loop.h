// LocalEngineLoop: the EngineLoop of a single-process deployment — one engine thread that owns
// the Scheduler, the KvManager and the worker (a ForwardBackend over the page pool: the CPU
// worker, or the CUDA worker with the pool's pages in device memory). Frontends
// talk to it only through Submit/Abort (a task queue) and the RequestStreams they pass in.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "base/metrics.h"
#include "engine/forward.h"
#include "engine/forward_factory.h"
#include "engine/model.h"
#include "memory/kv_manager.h"
#include "scheduler/engine_loop.h"
#include "scheduler/engine_metrics.h"
#include "scheduler/paged_kv_view.h"
#include "scheduler/scheduler.h"

namespace peng {

struct LocalEngineLoopOptions {
  SchedulerOptions scheduler;
  memory::KvManagerOptions kv;
  int threads = 2;
  Device device = Device::kCpu;  // which worker; kCuda puts the KV pages in device memory
  int cuda_device = 0;
  // Fused kernels for every batch size, so a row's arithmetic never depends on what else is in
  // the batch (same tokens alone or batched at temperature 0). Off: prefill through oneDNN.
  bool batch_invariant = true;
  bool int8_activations = true;  // ForwardOptions::int8_activations of the CPU worker
  bool amx_prompts = true;       // ForwardOptions::amx_prompts of the CPU worker
  bool amx_attention = true;     // ForwardOptions::amx_attention of the CPU worker
  Pinning pinning = Pinning::kNone;  // ForwardOptions::pinning of the CPU worker
};

class LocalEngineLoop : public EngineLoop {
 public:
  // Creates the worker options.device names (engine/forward_factory.h) and the KV pool where
  // it reads (for CUDA: options.kv.budget_bytes of device memory owned by the worker). Fails
  // with the factory's message when that worker cannot start, or on invalid KV options.
  // `registry` may be null (no metrics).
  static absl::StatusOr<std::unique_ptr<LocalEngineLoop>> Create(const Model& model,
                                                                 LocalEngineLoopOptions options,
                                                                 metrics::Registry* registry);
  // The CPU worker (options.device is ignored); options must be valid and the pool must fit in
  // memory (checked).
  LocalEngineLoop(const Model& model, LocalEngineLoopOptions options, metrics::Registry* registry);
  ~LocalEngineLoop() override;

  void Start();
  absl::Status Submit(std::unique_ptr<GenerateRequest> request,
                      std::shared_ptr<RequestStream> stream) override;
  absl::Status CheckQueueFits(int64_t requests, int64_t prompt_tokens) const override;
  void Abort(const std::string& request_id) override;
  EngineStats Stats() const override;
  int64_t Drain(std::chrono::milliseconds timeout) override;

  const memory::KvManager& kv() const { return *kv_; }
  const SchedulerOptions& scheduler_options() const { return options_.scheduler; }

 private:
  struct Task {
    std::shared_ptr<GenerateRequest> request;  // null: abort `abort_id`
    std::shared_ptr<RequestStream> stream;
    std::string abort_id;
    bool abort_all = false;
  };
  void Run();
  void DrainTasks();
  void Step();
  void PublishStats(int64_t step_tokens = 0);
  void PublishWaiting();  // the waiting counts Submit's queue bounds read
  LocalEngineLoop(const Model& model, LocalEngineLoopOptions options, metrics::Registry* registry,
                  std::unique_ptr<ForwardBackend> forward, std::unique_ptr<memory::KvManager> kv);

  const Model& model_;
  LocalEngineLoopOptions options_;
  std::unique_ptr<ForwardBackend> forward_;  // before kv_: it may own the pool's memory
  std::unique_ptr<memory::KvManager> kv_;
  PagedKvView kv_view_;
  std::unique_ptr<EngineMetrics> metrics_;
  Scheduler scheduler_;
  struct RowToSample {
    Sampler* sampler;
    int64_t row;  // of out_
  };
  std::vector<RowToSample> to_sample_;
  std::vector<SampledToken> prompt_logprobs_;  // of one prompt-logprobs chunk's rows
  std::vector<SampledToken> sampled_;
  ForwardOutput out_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;          // guarded by mu_
  bool stop_ = false;               // guarded by mu_
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> pending_requests_{0}, pending_tokens_{0};
  std::atomic<int64_t> stat_running_{0}, stat_waiting_{0}, stat_waiting_requests_{0};
  std::atomic<int64_t> stat_waiting_tokens_{0};
  std::atomic<int64_t> stat_free_pages_{0};
  std::thread thread_;
};

}  // namespace peng
