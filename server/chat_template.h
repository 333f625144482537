// Chat templates: a Jinja subset interpreter that turns OpenAI-style messages into the prompt
// text a model was trained on (Hugging Face `tokenizer.chat_template`, GGUF
// `tokenizer.chat_template`). Semantics follow transformers' apply_chat_template: jinja2
// ImmutableSandboxedEnvironment with trim_blocks + lstrip_blocks, loop controls, a json.dumps
// `tojson`, and the `raise_exception` / `strftime_now` globals.
// A ChatTemplate is parsed once and immutable; Render is const and safe to call from many
// threads at once. Every render is bounded (output size, loop iterations, work, recursion).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace peng {

namespace chat_template_internal {
struct Program;
}  // namespace chat_template_internal

struct ChatMessage {
  std::string role;
  std::string content;
  // Optional; empty / null ones are left out of the message dict the template sees, so
  // `'tool_calls' in message` and `message.name is defined` behave as with Hugging Face.
  std::string name = {};
  nlohmann::json tool_calls = nullptr;  // null when absent
  std::string tool_call_id = {};   // for role "tool"
};

// Bounds on one render; a template that exceeds one fails with InvalidArgument naming it.
struct ChatTemplateLimits {
  int64_t max_output_bytes = 16 << 20;   // the rendered text, and any single string or list
  int64_t max_loop_iterations = 1000000;  // summed over all loops of one render
  int64_t max_steps = 20000000;           // expression and statement evaluations
  int max_call_depth = 64;                // nested macro calls
  int max_nesting = 128;                  // parser: nested expressions and blocks
};

struct ChatTemplateOptions {
  ChatTemplateLimits limits;
  // Clock and zone for strftime_now(); Python uses local time, so the default does too.
  std::function<absl::Time()> now = [] { return absl::Now(); };
  absl::TimeZone time_zone = absl::LocalTimeZone();
};

class ChatTemplate {
 public:
  // Parses once; syntax errors are InvalidArgument with "line:column".
  static absl::StatusOr<ChatTemplate> Parse(std::string source);
  static absl::StatusOr<ChatTemplate> Parse(std::string source, ChatTemplateOptions options);

  // Renders with the variables messages (list of dicts), add_generation_prompt, bos_token,
  // eos_token, plus every key of `extra` (an object; e.g. tools, date_string). The four
  // named variables win over keys of `extra` with the same name. Runtime errors are
  // InvalidArgument: raise_exception(msg) gives exactly msg; others are "line:column: what".
  // Note: nlohmann::json keeps object keys sorted, so `tojson` of inputs lists keys sorted.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt, const std::string& bos_token,
                                     const std::string& eos_token,
                                     const nlohmann::json& extra = nlohmann::json::object()) const;

  // Renders with exactly `variables` (an object), for callers that build messages themselves.
  absl::StatusOr<std::string> RenderWithVariables(const nlohmann::json& variables) const;

  const std::string& source() const;

 private:
  ChatTemplate(std::shared_ptr<const chat_template_internal::Program> program,
               std::shared_ptr<const ChatTemplateOptions> options);

  std::shared_ptr<const chat_template_internal::Program> program_;
  std::shared_ptr<const ChatTemplateOptions> options_;
};

}  // namespace peng
