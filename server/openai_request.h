// Parsing and validation of /v1/chat/completions and /v1/completions bodies into a
// CompletionJob: the native GenerateRequest fields plus what the response needs (stream,
// echo, logprobs format). Every client mistake becomes InvalidArgument (400) or NotFound (404,
// param "model") with the offending field attached (see openai_error.h). Stateless functions
// over const inputs; thread-safe as long as the tokenizer and template are (they are const).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "engine/byte_regex.h"
#include "engine/choice_grammar.h"
#include "engine/json_schema.h"
#include "nlohmann/json.hpp"
#include "scheduler/request.h"
#include "server/openai_tools.h"

namespace peng {
class ChatTemplate;
}

namespace peng::server {

enum class ApiKind { kChat, kCompletion };

// max_tokens of a /v1/completions request that does not say (OpenAI's documented default).
inline constexpr int64_t kDefaultCompletionTokens = 16;

// What the parser needs to know about the served model.
struct ModelContext {
  std::string model_name;           // the only accepted "model" value
  int64_t max_model_len = 2048;     // prompt + generated tokens
  int max_logprobs = 20;            // cap on logprobs / top_logprobs
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // required for chat
  std::string chat_template_error;  // why there is none (shown in the chat 400)
  std::shared_ptr<const ChatTemplate> owned_template;  // the model's own, when parsed here
  // response_format json_schema / guided_json: compiled once per schema text, shared by copies.
  std::shared_ptr<SchemaCache> schemas = std::make_shared<SchemaCache>();

  // Sets chat_template: `override_template` when not null, else the model's own (the
  // tokenizer's tokenizer.chat_template), parsed once; a template that does not parse leaves
  // chat unavailable with the reason in chat_template_error (logged as a warning).
  void UseChatTemplate(const ChatTemplate* override_template);
};

struct CompletionJob {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;
  // One entry per prompt (chat and single-prompt completions have one). Each becomes its own
  // GenerateRequest; choice index = prompt_index * n + choice (vLLM's batch order).
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // for echo; decoded when the prompt was token ids
  SamplingParams sampling;
  StopConditions stop;
  int n = 1;
  int priority = 0;
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage
  bool echo = false;            // completions only
  // Completions: logprobs = k (0..max) -> the legacy {tokens, token_logprobs, ...} object.
  // Chat: logprobs = true -> {content: [...]}, top_logprobs = k alternatives.
  bool want_logprobs = false;
  int top_logprobs = 0;
  std::string user;
  int64_t max_tokens = -1;      // as requested (0 only with echo); -1 = not given (rest of the context)
  int64_t max_model_len = 0;
  int prompt_logprobs = -1;     // echo + logprobs: GenerateRequest::prompt_logprobs
  bool json_object = false;     // response_format {"type": "json_object"}: GenerateRequest::json_object
  std::shared_ptr<const JsonSchema> json_schema;  // response_format json_schema, compiled
  std::shared_ptr<const ChoiceSet> guided_choice;  // vLLM's guided_choice
  std::shared_ptr<const ByteRegex> guided_regex;   // vLLM's guided_regex (Use::kWholeText)
  // Chat with tool_choice other than "none" (server/openai_tools.h): the reply's calls are read
  // back from its text; a constrained choice also sets json_schema.
  std::shared_ptr<const ToolRequest> tools;
  std::shared_ptr<const JsonSchema> tool_call_schema;  // "auto": GenerateRequest::tool_call_schema

  // The whole reply is constrained (GenerateRequest::ReplyConstrained).
  bool ReplyConstrained() const {
    return json_object || json_schema != nullptr || guided_choice != nullptr || guided_regex != nullptr;
  }

  // stop.max_tokens for prompt `i`: the request's value, or the rest of the context.
  int64_t MaxTokensFor(size_t i) const {
    return max_tokens >= 0 ? max_tokens
                          : max_model_len - static_cast<int64_t>(prompts[i].size());
  }
};

// Parses a request body (already parsed as JSON). Unknown top-level fields are reported in
// `ignored_fields` (the caller logs them); they never cause an error.
// `raw_body` (the text `body` came from, when the caller has it) gives a response_format
// json_schema's properties in the order the client wrote them: the output follows it.
absl::StatusOr<CompletionJob> ParseCompletionRequest(ApiKind kind, const nlohmann::json& body,
                                                     const ModelContext& ctx,
                                                     std::vector<std::string>* ignored_fields,
                                                     std::string_view raw_body = {});

// Chat: validates `messages` (plus add_generation_prompt, chat_template_kwargs, tools,
// tool_choice) and renders them with the chat template. Shared by chat completions and
// /tokenize. `tools` (may be null) receives the request's tools.
absl::StatusOr<std::string> RenderChatPrompt(const nlohmann::json& body, const ModelContext& ctx,
                                             ToolRequest* tools = nullptr, std::string_view raw_body = {});
// A chat request's prompt, and what its tools ask of the reply.
struct ChatPrompt {
  std::string text;             // the rendered conversation
  std::vector<int32_t> ids;     // its tokens (EncodeChatPrompt)
  // tool_choice other than "none": the request's tools (the reply's calls are read back with
  // them). "required" / a named function: `reply_schema` constrains the whole reply to calls;
  // "auto" with <tool_call> blocks: `tool_call_schema` constrains a block the model opens.
  std::shared_ptr<const ToolRequest> tools;
  std::shared_ptr<const JsonSchema> reply_schema;
  std::shared_ptr<const JsonSchema> tool_call_schema;
};
// RenderChatPrompt, then the tools' constraints and the tokens. `reply_constrained`: the
// request constrains the reply already (response_format, guided_*), which "required" or a
// named function cannot be combined with, and which "auto" leaves alone.
absl::StatusOr<ChatPrompt> PrepareChat(const nlohmann::json& body, std::string_view raw_body,
                                       const ModelContext& ctx, bool reply_constrained);

// continue_final_message: `rendered` cut right after the final message's text, so that the
// model continues it (a 400 when the template does not render that text as sent).
absl::StatusOr<std::string> CutAfterFinalMessage(const std::string& rendered, const std::string& final_text);
// Tokenizes a rendered chat prompt: control tokens parsed, BOS added only when the model adds
// one and the text does not already start with the BOS token's text.
std::vector<int32_t> EncodeChatPrompt(const std::string& text, const Tokenizer& tokenizer);

// `value` (found at `path` in the request) with its objects' keys in the client's order: read
// again from the request text as ordered_json (nlohmann::json sorts keys), or, without the
// text, in sorted order.
nlohmann::ordered_json InClientOrder(const nlohmann::json& value, std::string_view raw_body,
                                     const std::vector<std::string>& path);

// Parses the raw body text first: invalid JSON, a non-object body and nesting deeper than
// kMaxJsonDepth are 400s.
inline constexpr int kMaxJsonDepth = 64;
absl::StatusOr<nlohmann::json> ParseJsonBody(const std::string& text);
// Any JSON text (nlohmann::json or ordered_json) under the same depth limit; errors (400s) name
// it as `what` ("the request body", "chat.tools").
template <typename J>
absl::StatusOr<J> ParseJsonText(std::string_view text, absl::string_view what);

}  // namespace peng::server
