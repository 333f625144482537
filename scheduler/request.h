// The native request and event types that cross the frontend/engine-loop boundary. Frontends
// (HTTP, gRPC) build a GenerateRequest, hand it to the EngineLoop with a RequestStream, and
// receive TokenEvents on it. Plain data; no proto or JSON types here.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace peng {

class ByteRegex;
class JsonSchema;
struct ChoiceSet;

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
const char* FinishReasonName(FinishReason r);  // "stop", "length", "abort", "error"

struct StopConditions {
  // Generated tokens, >= 1; 0 generates nothing (completions' echo, or scoring the prompt with
  // prompt logprobs): the request finishes with kLength once its prompt is computed.
  int64_t max_tokens = 16;
  std::vector<std::string> stop;           // strings; matched text is never emitted
  std::vector<int32_t> stop_token_ids;     // in addition to the model's end-of-generation ids
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  // vLLM's min_tokens: until this many tokens are generated, end-of-generation tokens and
  // stop_token_ids are not sampled and stop strings do not end the output (max_tokens does).
  int64_t min_tokens = 0;
};

struct GenerateRequest {
  std::string id;                          // unique per request (the frontend makes it)
  std::vector<int32_t> prompt;             // token ids, validated by the frontend
  SamplingParams sampling;
  StopConditions stop;
  int priority = 0;                        // lower value = served first (vLLM convention)
  int n = 1;                               // choices; each is its own sequence
  // -1: none. k >= 0: the log-probability of every prompt token after the first under the raw
  // model logits, plus its k most likely alternatives (completions' echo + logprobs). These
  // prompts skip the prefix cache (a cached position has no logits) and prefill in chunks of
  // at most Scheduler::kPromptLogitsChunk tokens.
  int32_t prompt_logprobs = -1;
  // JSON mode (response_format json_object): each choice's output is one JSON object, then an
  // end-of-generation token (engine/json_constraint.h).
  bool json_object = false;
  // Structured output (response_format json_schema): each choice's output is one document of
  // this schema (engine/json_schema.h). At most one of json_object, json_schema,
  // guided_choice and guided_regex is set (the frontends check).
  std::shared_ptr<const JsonSchema> json_schema;
  // Guided choice (vLLM's guided_choice): each choice's output is exactly one of these strings.
  std::shared_ptr<const ChoiceSet> guided_choice;
  // Guided regex (vLLM's guided_regex): each choice's whole output matches this regex
  // (compiled with ByteRegex::Use::kWholeText).
  std::shared_ptr<const ByteRegex> guided_regex;
  // Tool calls in "auto" mode (engine/tool_call_grammar.h): free text, but once the output
  // opens a <tool_call> block the block holds one call of this schema. Set alone, or with
  // none of the four above.
  std::shared_ptr<const JsonSchema> tool_call_schema;
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();

  // The whole reply is constrained (json_object, json_schema, guided_choice or guided_regex).
  bool ReplyConstrained() const {
    return json_object || json_schema != nullptr || guided_choice != nullptr || guided_regex != nullptr;
  }
};

// One sampled token's log-probability and its top alternatives.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

// Progress of one choice of a request. Events of a choice arrive in order; the last has
// finish_reason != kNone.
struct TokenEvent {
  std::string request_id;
  int choice = 0;
  std::vector<int32_t> token_ids;          // new tokens since the previous event
  std::string text;                        // new text (UTF-8 complete, stop strings removed)
  std::vector<TokenLogprob> logprobs;      // one per token when requested
  // With GenerateRequest::prompt_logprobs, on each choice's first event: prompt tokens 1..P-1
  // in order (the first prompt token has no prediction).
  std::vector<TokenLogprob> prompt_logprobs;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;                       // with kError
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;           // total so far for this choice
  int64_t cached_prompt_tokens = 0;        // prompt tokens served from the prefix cache
};

// Where the engine loop delivers a request's events. OnEvent is called on the engine thread
// and must not block: frontends post the event to their own threads.
class RequestStream {
 public:
  virtual ~RequestStream() = default;
  virtual void OnEvent(TokenEvent event) = 0;
};

}  // namespace peng
