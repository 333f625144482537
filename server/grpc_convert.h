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

namespace peng::server {

// What validation needs to know about the served model.
struct GrpcModelInfo {
  std::string model_name;            // the only accepted non-empty "model"
  int64_t max_model_len = 2048;      // prompt + generated tokens
  int max_logprobs = 20;             // cap on sampling.logprobs
  const Tokenizer* tokenizer = nullptr;
  // json_schema: compiled once per schema text (so that its masks are shared too).
  std::shared_ptr<SchemaCache> schemas = std::make_shared<SchemaCache>();
};

// OK for an empty name (= the served model) or the served model's name; NotFound otherwise.
absl::Status CheckModel(const std::string& model, const GrpcModelInfo& info);

// Validates and converts; the result's id is left empty (the server assigns it).
absl::StatusOr<GenerateRequest> ToGenerateRequest(const v1::GenerateRequest& request,
                                                  const GrpcModelInfo& info);

// Adds one event's tokens, text and logprobs to `message` (several events may be merged into
// one message), and finish_reason + usage when the event is the last. kError events are not
// converted: the call ends with an INTERNAL status instead (see GenerateErrorStatus).
void AppendTokenEvent(const TokenEvent& event, const Tokenizer& tokenizer,
                      v1::GenerateResponse* message);
v1::FinishReason ToProtoFinishReason(FinishReason reason);

// absl and gRPC share the canonical code numbering; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace peng::server
