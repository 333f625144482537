// GenerateCall: the reactor of one streaming peng.v1.Inference/Generate call. It submits the
// request to the EngineLoop with a RequestStream of its own, turns the TokenEvents into
// GenerateResponse messages and writes them with exactly one write in flight; events that
// arrive meanwhile are queued (merged into the queued message, up to kMaxTokensPerMessage
// tokens each). The last event's message carries finish_reason and usage; then Finish(OK).
//
// Cancellation (client cancel, disconnect, deadline, server shutdown) or a failed write calls
// EngineLoop::Abort exactly once, unless the engine had already finished the request, and
// finishes the call at once without waiting for the engine's abort event.
//
// Threads: events arrive on the engine thread, reactions on gRPC's threads; all state is
// guarded by one mutex held by a small shared block, which the engine's RequestStream also
// holds, so events arriving after the call is done (OnDone deleted the reactor) are dropped.
// Nothing under the mutex blocks: StartWrite/Finish only queue operations, and
// EngineLoop::Abort is called after the mutex is released.
#pragma once

#include <memory>
#include <string>

#include "engine/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "peng/v1/inference.pb.h"
#include "scheduler/engine_loop.h"
#include "server/openai_tools.h"

namespace peng::server {

// The gRPC trailing metadata key that carries the retry hint (seconds) with RESOURCE_EXHAUSTED.
inline constexpr char kRetryAfterKey[] = "retry-after";

// Returns a reactor that owns itself (deleted in OnDone). A failed Submit finishes the call at
// once with the mapped status (RESOURCE_EXHAUSTED also gets "retry-after" trailing metadata).
// `engine` and `tokenizer` must outlive the call.
// `tools` (a chat with tools; may be null): text that may hold calls is held back, and the
// calls go out on the last message (server/openai_tools.h's ToolCallStream).
grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerateCall(
    grpc::CallbackServerContext* context, EngineLoop* engine, const Tokenizer* tokenizer,
    std::unique_ptr<GenerateRequest> request, std::shared_ptr<const ToolRequest> tools, int retry_after_s);

// A reactor that finishes with `status` and writes nothing (validation and auth errors).
grpc::ServerWriteReactor<v1::GenerateResponse>* FinishedGenerateCall(grpc::Status status);

inline constexpr int kMaxTokensPerMessage = 64;

}  // namespace peng::server
