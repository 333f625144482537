// FakeEngineLoop: an in-memory EngineLoop for frontend tests. One thread emits scripted
// TokenEvents round-robin over the active requests (one token per request per step), honours
// Abort in any state, and rejects Submit beyond a bounded capacity with ResourceExhausted.
// Every call is thread-safe. Records the submitted requests and every Abort call so tests can
// assert on them (WaitFor* block on a condition variable with a deadline; no sleeps).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "scheduler/engine_loop.h"

namespace peng::server {

class FakeEngineLoop final : public EngineLoop {
 public:
  struct Options {
    // Token k of a choice has id token_base + k and text pieces[k % pieces.size()]. A choice
    // ends with kLength at max_tokens, or kStop after stop_after tokens (if > 0).
    std::vector<std::string> pieces = {"Hello", " world", "!"};
    int32_t token_base = 100;
    int stop_after = 0;
    int capacity = 1000;             // active requests before Submit says ResourceExhausted
    int error_after = -1;            // >= 0: after this many tokens, a kError event
    bool hold = false;               // emit nothing until Release() (or Abort)
    std::chrono::microseconds step_interval{0};
    absl::Status submit_status = absl::OkStatus();  // non-OK: Submit returns it
  };

  explicit FakeEngineLoop(Options options) : options_(std::move(options)) {
    thread_ = std::thread([this] { Run(); });
  }
  FakeEngineLoop() : FakeEngineLoop(Options()) {}
  ~FakeEngineLoop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  absl::Status Submit(std::unique_ptr<GenerateRequest> request,
                      std::shared_ptr<RequestStream> stream) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("the server is draining");
    if (!options_.submit_status.ok()) return options_.submit_status;
    if (static_cast<int>(active_.size()) >= options_.capacity) {
      return absl::ResourceExhaustedError("the waiting queue is full; retry after 2 s");
    }
    submitted_.push_back(*request);
    Active a;
    a.request = std::move(request);
    a.stream = std::move(stream);
    a.generated.assign(a.request->n, 0);
    a.done.assign(a.request->n, false);
    active_.push_back(std::move(a));
    cv_.notify_all();
    observe_cv_.notify_all();
    return absl::OkStatus();
  }

  void Abort(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(request_id);
    for (Active& a : active_) {
      if (a.request->id == request_id) a.aborted = true;
    }
    cv_.notify_all();
    observe_cv_.notify_all();
  }

  EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s;
    s.num_running = static_cast<int64_t>(active_.size());
    return s;
  }

  int64_t Drain(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    draining_ = true;
    idle_cv_.wait_for(lock, timeout, [this] { return active_.empty(); });
    return static_cast<int64_t>(active_.size());
  }

  // Lets held requests run.
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    options_.hold = false;
    cv_.notify_all();
  }

  std::vector<GenerateRequest> submitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  std::vector<std::string> aborts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return aborts_;
  }
  int64_t num_active() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(active_.size());
  }
  // Blocks until `n` requests were submitted (true) or the deadline passed (false).
  bool WaitForSubmitted(size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return observe_cv_.wait_for(lock, timeout, [&] { return submitted_.size() >= n; });
  }
  bool WaitForAborts(size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return observe_cv_.wait_for(lock, timeout, [&] { return aborts_.size() >= n; });
  }
  bool WaitForIdle(std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return idle_cv_.wait_for(lock, timeout, [&] { return active_.empty(); });
  }

 private:
  struct Active {
    std::unique_ptr<GenerateRequest> request;
    std::shared_ptr<RequestStream> stream;
    std::vector<int> generated;
    std::vector<bool> done;
    bool aborted = false;
  };

  // One step: every active request advances each unfinished choice by one token.
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      observe_cv_.notify_all();
      cv_.wait(lock, [this] {
        if (stop_) return true;
        for (const Active& a : active_) {
          if (a.aborted || !options_.hold) return true;
        }
        return false;
      });
      if (stop_) return;
      std::vector<std::pair<std::shared_ptr<RequestStream>, TokenEvent>> out;
      for (auto it = active_.begin(); it != active_.end();) {
        if (!it->aborted && options_.hold) {
          ++it;
          continue;
        }
        bool all_done = true;
        for (int c = 0; c < it->request->n; ++c) {
          if (it->done[c]) continue;
          TokenEvent ev = Step(*it, c);
          if (ev.finish_reason != FinishReason::kNone) it->done[c] = true;
          all_done = all_done && it->done[c];
          out.emplace_back(it->stream, std::move(ev));
        }
        it = all_done ? active_.erase(it) : std::next(it);
      }
      if (active_.empty()) idle_cv_.notify_all();
      // Deliver outside the lock, as the real loop does from its own thread.
      lock.unlock();
      for (auto& [stream, ev] : out) stream->OnEvent(std::move(ev));
      out.clear();
      if (options_.step_interval.count() > 0) std::this_thread::sleep_for(options_.step_interval);
      lock.lock();
    }
  }

  TokenEvent Step(Active& a, int c) {
    const GenerateRequest& r = *a.request;
    TokenEvent ev;
    ev.request_id = r.id;
    ev.choice = c;
    ev.prompt_tokens = static_cast<int64_t>(r.prompt.size());
    int& k = a.generated[c];
    if (a.aborted) {
      ev.finish_reason = FinishReason::kAbort;
      ev.completion_tokens = k;
      return ev;
    }
    if (options_.error_after >= 0 && k >= options_.error_after) {
      ev.finish_reason = FinishReason::kError;
      ev.error = "fake engine failure";
      ev.completion_tokens = k;
      return ev;
    }
    const int32_t id = options_.token_base + k;
    ev.token_ids = {id};
    ev.text = options_.pieces[k % options_.pieces.size()];
    if (r.sampling.logprobs >= 0) {
      TokenLogprob lp;
      lp.id = id;
      lp.logprob = -0.25f;
      for (int t = 0; t < r.sampling.logprobs; ++t) lp.top.emplace_back(id + t, -0.25f - t);
      ev.logprobs.push_back(lp);
    }
    ++k;
    ev.completion_tokens = k;
    if (k >= r.stop.max_tokens) {
      ev.finish_reason = FinishReason::kLength;
    } else if (options_.stop_after > 0 && k >= options_.stop_after) {
      ev.finish_reason = FinishReason::kStop;
    }
    return ev;
  }

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  mutable std::condition_variable idle_cv_;
  mutable std::condition_variable observe_cv_;
  std::deque<Active> active_;
  std::vector<GenerateRequest> submitted_;
  std::vector<std::string> aborts_;
  bool draining_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace peng::server
