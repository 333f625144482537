// Tool calling for /v1/chat/completions: OpenAI's tools, tool_choice and parallel_tool_calls.
//
//   "none": the tools are only rendered into the prompt (by templates that render them); the
//     reply is text.
//   "auto" (the default when tools are given): the model decides. A reply whose text holds
//     calls in one of the formats below comes back as message.tool_calls, with the text
//     before them as content and finish_reason "tool_calls"; any other reply is text. Where
//     calls come as <tool_call> blocks (RepliesWithToolCallTags), a block the model opens is
//     constrained to one call (engine/tool_call_grammar.h).
//   "required", or one named function: the reply is constrained (engine/json_schema.h) to a
//     JSON array of calls [{"name": ..., "arguments": {...}}], each naming a listed function
//     (the named one) with arguments of its `parameters` schema; one call when
//     parallel_tool_calls is false.
//
// Templates that render `tools` themselves (Qwen2.5, Llama 3.1, Mistral, Hermes) get them as
// the `tools` variable, and earlier calls with their arguments as objects (as vLLM passes
// them). For a template that does not (SmolLM2), the tools and the call format go into the
// system message, in Hermes's format, and earlier calls and their results are written in the
// same format into the history.
//
// Calls read back from text: <tool_call>JSON</tool_call> blocks (Hermes, Qwen2.5); a reply that
// is one JSON call or an array of them, after an optional <|python_tag|> (Llama 3.x); Mistral's
// [TOOL_CALLS] then an array. A call is {"name": one of the tools, "arguments" or
// "parameters": an object or its JSON text}. Anything else is left as text. A reply cut inside
// its calls (max_tokens) keeps the calls before the cut that are whole.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/chat_template.h"

namespace peng::server {

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

struct ToolRequest {
  struct Function {
    std::string name;
    std::string description;
    nlohmann::ordered_json parameters;  // a JSON schema; {"type": "object", "properties": {}} when not given
  };
  std::vector<Function> functions;
  ToolChoice choice = ToolChoice::kNone;
  std::string named;       // kNamed: the function
  bool parallel = true;    // parallel_tool_calls

  bool Constrained() const { return choice == ToolChoice::kRequired || choice == ToolChoice::kNamed; }
  bool Knows(std::string_view name) const;
};

// tools, tool_choice and parallel_tool_calls of a chat request. `raw_body` (may be empty) gives
// the parameters' properties in the client's order. Bad shapes are 400s naming the field;
// no tools and no tool_choice is a ToolRequest with kNone and no functions.
absl::StatusOr<ToolRequest> ParseToolRequest(const nlohmann::json& body, std::string_view raw_body);

// Whether the template reads the `tools` variable itself.
bool TemplateRendersTools(const ChatTemplate& chat_template);

// For a template that does not: the system message gets the tools and the call format, an
// assistant message's tool_calls become <tool_call> blocks after its text, and a "tool"
// message becomes a user message holding a <tool_response> block.
// `tools` null: the history alone (tool_choice "none"). A message's tool_calls that are not a
// list of {"function": {"name", "arguments"}} are a 400.
absl::Status WriteToolsIntoMessages(const ToolRequest* tools, std::vector<ChatMessage>* messages);
// For a template that does: each call's `function.arguments`, when it is JSON text, as the
// object it holds.
absl::Status ArgumentsAsObjects(std::vector<ChatMessage>* messages);

// The schema a constrained reply follows (for JsonSchema::Compile with object_root false).
// Each function's $defs move to the top level under names of their own, and its $refs with
// them.
nlohmann::ordered_json ToolCallSchema(const ToolRequest& tools);

// One call object (for "auto": the schema of a <tool_call> block's call,
// engine/tool_call_grammar.h).
nlohmann::ordered_json OneToolCallSchema(const ToolRequest& tools);
// Whether calls come as <tool_call> blocks: the template has no tools (Peng shows that format)
// or shows that format itself (Hermes, Qwen2.5).
bool RepliesWithToolCallTags(const ChatTemplate& chat_template);

struct ToolCall {
  std::string id;         // "call_" and 24 random characters
  std::string name;
  std::string arguments;  // JSON text of an object
};

// A call as chat's message.tool_calls[i]: {"id", "type": "function", "function": {"name", "arguments"}}.
nlohmann::ordered_json ChatToolCall(const ToolCall& call);

// A reply split into its text and its calls (none: the reply is all text).
struct ToolReply {
  std::string content;
  std::vector<ToolCall> calls;

  // Whether `content` goes to the client: always without calls; beside calls only when it is
  // not blank (whitespace around calls is not content).
  bool HasContent() const { return calls.empty() || content.find_first_not_of(" \t\r\n") != std::string::npos; }
};
ToolReply ExtractToolCalls(std::string_view text, const ToolRequest& tools);

// Streaming: text goes out as it comes until something that may start calls, which is held
// back to the end and then read by ExtractToolCalls (text again if it holds no calls). A
// possible start that turns out to be text is released as soon as that is clear.
class ToolCallStream {
 public:
  explicit ToolCallStream(const ToolRequest* tools) : tools_(tools), holding_(tools->Constrained()) {}
  // The text that can go out now.
  std::string Feed(std::string_view text);
  // At the end of the reply: the text held back that is not calls, and the calls.
  ToolReply Finish();

 private:
  const ToolRequest* tools_;
  std::string pending_;  // held back: a possible start of calls, or the calls
  bool holding_;         // pending_ holds a start of calls (kept to the end)
  bool wrote_text_ = false;  // non-space text went out (a bare JSON call can no longer start)
};

}  // namespace peng::server
