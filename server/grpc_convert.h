// The gRPC edge's conversions between peng.v1 wire types and the native request/event types
// of scheduler/request.h. Validation of a peng.v1.GenerateRequest lives here, with the same
// rules and limits as the HTTP API: every client mistake becomes InvalidArgument whose message
// names the field (proto path, e.g. "sampling.temperature"), an unknown model NotFound.
// Pure functions over const inputs; thread-safe (the tokenizer is immutable).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/json_schema.h"
#include "engine/tokenizer.h"
#include "grpcpp/support/status.h"
#include "peng/v1/inference.pb.h"
#include "scheduler/request.h"
#include "server/openai_request.h"
#include "server/openai_tools.h"

namespace peng::server {

// A validated Generate call: the engine's request, and for a chat with tools (tool_choice
// other than "none") the tools the reply's calls are read back with.
struct GrpcGenerate {
  GenerateRequest request;
  std::shared_ptr<const ToolRequest> tools;
};

// OK for an empty name (= the served model) or the served model's name; NotFound otherwise.
absl::Status CheckModel(const std::string& model, const ModelContext& ctx);

// Validates and converts; the request's id is left empty (the server assigns it). A chat is
// rendered and its tools read by the rules of /v1/chat/completions (server/openai_request.h).
absl::StatusOr<GrpcGenerate> ToGenerateRequest(const v1::GenerateRequest& request, const ModelContext& ctx);

// Adds one event's tokens, text and logprobs to `message` (several events may be merged into
// one message), and finish_reason + usage when the event is the last. kError events are not
// converted: the call ends with an INTERNAL status instead (see GenerateErrorStatus).
void AppendTokenEvent(const TokenEvent& event, const Tokenizer& tokenizer,
                      v1::GenerateResponse* message);
// The calls a chat reply made, on its last message (finish_reason TOOL_CALLS when it stopped).
void SetToolCalls(const std::vector<ToolCall>& calls, v1::GenerateResponse* message);
v1::FinishReason ToProtoFinishReason(FinishReason reason);

// absl and gRPC share the canonical code numbering; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace peng::server
