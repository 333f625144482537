// EngineLoop: the single engine thread. Frontends Submit() requests and Abort() them from any
// thread; both only post to the loop's task queue. Each iteration the loop drains tasks, asks
// the Scheduler for a StepPlan, runs it on the worker, samples, checks stops and emits
// TokenEvents to each request's RequestStream. The loop owns scheduler, KV manager and worker
// state; nothing else touches them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "scheduler/request.h"

namespace peng {

// A snapshot for /metrics, /ready and gRPC GetLoad; refreshed by the loop every iteration.
struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  double kv_usage = 0;          // 0..1
  int64_t kv_total_pages = 0;
  int64_t kv_free_pages = 0;
};

class EngineLoop {
 public:
  virtual ~EngineLoop() = default;
  // Queues the request. Fails at once (nothing queued) with ResourceExhausted when the waiting
  // queue is full (the message carries a retry-after hint in seconds), InvalidArgument when the
  // request can never fit (prompt + max_tokens beyond the context or the KV budget), or
  // Unavailable while draining.
  virtual absl::Status Submit(std::unique_ptr<GenerateRequest> request,
                              std::shared_ptr<RequestStream> stream) = 0;
  // Whether `requests` requests with `prompt_tokens` prompt tokens in all (one API call's
  // prompts, counted n times) could ever wait in the queue together: InvalidArgument if they
  // exceed its bounds, so that a call that can never be queued gets a 400, not a 429 forever.
  virtual absl::Status CheckQueueFits(int64_t requests, int64_t prompt_tokens) const {
    (void)requests;
    (void)prompt_tokens;
    return absl::OkStatus();
  }
  // Aborts in any state; the stream then gets a final event with FinishReason::kAbort.
  virtual void Abort(const std::string& request_id) = 0;
  virtual EngineStats Stats() const = 0;
  // Stops accepting; returns when in-flight requests finished or the timeout passed (the rest
  // are aborted: each stream has its final event when Drain returns). Returns how many
  // requests were aborted.
  virtual int64_t Drain(std::chrono::milliseconds timeout) = 0;
};

}  // namespace peng
