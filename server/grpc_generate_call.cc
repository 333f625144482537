#include "server/grpc_generate_call.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"
#include "server/grpc_convert.h"
#include "server/grpc_metrics.h"

namespace peng::server {
namespace {

// One log line per Generate call: its status code, then `detail`.
void LogGenerate(const grpc::Status& status, const std::string& detail) {
  const LogLevel level = status.error_code() == grpc::StatusCode::INTERNAL ? LogLevel::kError : LogLevel::kInfo;
  // gRPC's codes are absl's, number for number.
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  Log(level, "grpc", absl::StrCat("Generate ", code, " ", detail));
}

class GenerateCall;

// Outlives the reactor: the engine's RequestStream keeps it until the engine drops the request.
struct CallLink {
  absl::Mutex mu;
  GenerateCall* call ABSL_GUARDED_BY(mu) = nullptr;  // null once the call is done
};

class EventSink final : public RequestStream {
 public:
  explicit EventSink(std::shared_ptr<CallLink> link) : link_(std::move(link)) {}
  void OnEvent(TokenEvent event) override;

 private:
  std::shared_ptr<CallLink> link_;
};

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(grpc::CallbackServerContext* context, EngineLoop* engine,
               const Tokenizer* tokenizer, std::unique_ptr<GenerateRequest> request,
               std::shared_ptr<const ToolRequest> tools, int retry_after_s)
      : engine_(engine), tokenizer_(tokenizer), id_(request->id), deadline_(context->deadline()),
        link_(std::make_shared<CallLink>()), tools_(std::move(tools)) {
    {
      absl::MutexLock lock(&link_->mu);
      if (tools_ != nullptr) tool_stream_.emplace(tools_.get());
      link_->call = this;
    }
    absl::Status s = engine_->Submit(std::move(request), std::make_shared<EventSink>(link_));
    if (!s.ok()) {
      if (absl::IsResourceExhausted(s)) {
        // At least 1 s, as HTTP's Retry-After (ApiErrorFromStatus): 0 would invite a hot loop.
        context->AddTrailingMetadata(kRetryAfterKey, std::to_string(std::max(retry_after_s, 1)));
      }
      absl::MutexLock lock(&link_->mu);
      engine_done_ = true;  // nothing was queued: there is nothing to abort
      final_status_ = ToGrpcStatus(s);
      PumpLocked();
    }
  }

  // Engine thread, under link_->mu.
  void OnEventLocked(TokenEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    if (engine_done_ || cancelled_) return;
    if (event.finish_reason == FinishReason::kError) {
      engine_done_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::INTERNAL,
                                   "generation failed: " + event.error);
      PumpLocked();
      return;
    }
    if (event.finish_reason == FinishReason::kAbort && event.completion_tokens == 0) {
      // Aborted before a token, which only a drain does to a live call: UNAVAILABLE, which
      // clients retry elsewhere, rather than OK with nothing in it (HTTP answers 503).
      engine_done_ = true;
      pending_.clear();
      final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                   "the server shut down before this request was served; retry it");
      PumpLocked();
      return;
    }
    if (pending_.empty() || pending_.back().token_ids_size() >= kMaxTokensPerMessage) {
      pending_.emplace_back();
      pending_.back().set_request_id(id_);
    }
    const bool last = event.finish_reason != FinishReason::kNone;
    ToolReply reply;
    if (tool_stream_.has_value()) {
      event.text = tool_stream_->Feed(event.text);
      if (last) {
        reply = tool_stream_->Finish();
        if (reply.HasContent()) event.text += reply.content;
      }
    }
    AppendTokenEvent(event, *tokenizer_, &pending_.back());
    if (last) {
      SetToolCalls(reply.calls, &pending_.back());
      engine_done_ = true;
      final_status_ = grpc::Status::OK;
    }
    PumpLocked();
  }

  void OnWriteDone(bool ok) override {
    bool abort = false;
    {
      absl::MutexLock lock(&link_->mu);
      writing_ = false;
      in_flight_.Clear();
      if (!ok) abort = CancelLocked();  // the stream is broken
      PumpLocked();
    }
    if (abort) engine_->Abort(id_);
  }

  void OnCancel() override {
    bool abort = false;
    {
      absl::MutexLock lock(&link_->mu);
      abort = CancelLocked();
      PumpLocked();
    }
    if (abort) engine_->Abort(id_);
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->call = nullptr;
    }
    delete this;
  }

 private:
  // Marks the call cancelled; true when the caller must call EngineLoop::Abort (once).
  bool CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    cancelled_ = true;
    pending_.clear();
    if (engine_done_ || abort_sent_) return false;
    abort_sent_ = true;
    return true;
  }

  // Starts the next write, or finishes once everything is written. One write in flight.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    if (finished_ || writing_) return;
    if (cancelled_) {
      // The client sees DEADLINE_EXCEEDED when its deadline ended the call; the log and the
      // metrics (grpc_metrics.cc, by the same rule) say so too.
      return FinishLocked(DeadlineEnded(deadline_)
                              ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the call's deadline passed")
                              : grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
    }
    if (!pending_.empty()) {
      in_flight_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      StartWrite(&in_flight_);
      return;
    }
    if (final_status_.has_value()) FinishLocked(*final_status_);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    finished_ = true;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    LogGenerate(status, absl::StrFormat("%.3f s request_id=%s", seconds, id_));
    Finish(status);
  }

  EngineLoop* const engine_;
  const Tokenizer* const tokenizer_;
  const std::string id_;
  const std::chrono::system_clock::time_point deadline_;  // the client's (max() when none)
  const std::shared_ptr<CallLink> link_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  const std::shared_ptr<const ToolRequest> tools_;      // chat with tools; null otherwise
  std::optional<ToolCallStream> tool_stream_ ABSL_GUARDED_BY(link_->mu);  // reads tools_

  std::deque<v1::GenerateResponse> pending_ ABSL_GUARDED_BY(link_->mu);
  v1::GenerateResponse in_flight_ ABSL_GUARDED_BY(link_->mu);  // alive until OnWriteDone
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(link_->mu);
  bool writing_ ABSL_GUARDED_BY(link_->mu) = false;
  bool finished_ ABSL_GUARDED_BY(link_->mu) = false;    // Finish() called
  bool engine_done_ ABSL_GUARDED_BY(link_->mu) = false; // last event seen (or never submitted)
  bool cancelled_ ABSL_GUARDED_BY(link_->mu) = false;
  bool abort_sent_ ABSL_GUARDED_BY(link_->mu) = false;
};

void EventSink::OnEvent(TokenEvent event) {
  absl::MutexLock lock(&link_->mu);
  if (link_->call != nullptr) {
    link_->call->OnEventLocked(std::move(event));
  }
}

// A Generate call refused before it reached the engine (auth, validation): logged as every
// Generate call is, with the reason.
class FinishedCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit FinishedCall(grpc::Status status) {
    LogGenerate(status, status.error_message());
    Finish(std::move(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateCall(
    grpc::CallbackServerContext* context, EngineLoop* engine, const Tokenizer* tokenizer,
    std::unique_ptr<GenerateRequest> request, std::shared_ptr<const ToolRequest> tools, int retry_after_s) {
  return new GenerateCall(context, engine, tokenizer, std::move(request), std::move(tools), retry_after_s);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* FinishedGenerateCall(grpc::Status status) {
  return new FinishedCall(std::move(status));
}

}  // namespace peng::server
