// LocalEngineLoop: the EngineLoop of a single-process deployment — one engine thread that owns
// the Scheduler, the KvManager and the CPU worker (LlamaForward over the page pool). Frontends
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
  // Fused kernels for every batch size, so a row's arithmetic never depends on what else is in
  // the batch (same tokens alone or batched at temperature 0). Off: prefill through oneDNN.
  bool batch_invariant = true;
};

class LocalEngineLoop : public EngineLoop {
 public:
  // `registry` may be null (no metrics).
  LocalEngineLoop(const Model& model, LocalEngineLoopOptions options, metrics::Registry* registry);
  ~LocalEngineLoop() override;

  void Start();
  absl::Status Submit(std::unique_ptr<GenerateRequest> request,
                      std::shared_ptr<RequestStream> stream) override;
  void Abort(const std::string& request_id) override;
  EngineStats Stats() const override;
  void Drain(std::chrono::milliseconds timeout) override;

  const memory::KvManager& kv() const { return kv_; }
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

  const Model& model_;
  LocalEngineLoopOptions options_;
  memory::KvManager kv_;
  PagedKvView kv_view_;
  std::unique_ptr<EngineMetrics> metrics_;
  Scheduler scheduler_;
  LlamaForward forward_;
  SamplingScratch scratch_;
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
