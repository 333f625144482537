#include "server/chat_template.h"

#include <utility>

#include "base/status.h"
#include "server/chat_template_ast.h"
#include "server/chat_template_eval.h"
#include "server/chat_template_parser.h"

namespace peng {

using chat_template_internal::DictData;
using chat_template_internal::FromJson;
using chat_template_internal::Program;
using chat_template_internal::Renderer;
using chat_template_internal::Value;

ChatTemplate::ChatTemplate(std::shared_ptr<const Program> program,
                           std::shared_ptr<const ChatTemplateOptions> options)
    : program_(std::move(program)), options_(std::move(options)) {}

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string source) {
  return Parse(std::move(source), ChatTemplateOptions());
}

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string source,
                                                 ChatTemplateOptions options) {
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<Program> program,
                        chat_template_internal::ParseProgram(std::move(source),
                                                             options.limits.max_nesting));
  return ChatTemplate(std::move(program),
                      std::make_shared<const ChatTemplateOptions>(std::move(options)));
}

const std::string& ChatTemplate::source() const { return program_->source; }

namespace {

Value MessageValue(const ChatMessage& m) {
  DictData d;
  d.entries.emplace_back("role", Value::String(m.role));
  d.entries.emplace_back("content", Value::String(m.content));
  if (!m.name.empty()) d.entries.emplace_back("name", Value::String(m.name));
  if (!m.tool_calls.is_null()) d.entries.emplace_back("tool_calls", FromJson(m.tool_calls));
  if (!m.tool_call_id.empty()) d.entries.emplace_back("tool_call_id", Value::String(m.tool_call_id));
  return Value::Dict(std::move(d));
}

absl::Status CheckExtra(const nlohmann::json& extra) {
  if (!extra.is_object()) {
    return absl::InvalidArgumentError("chat template variables must be a JSON object");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt,
                                                 const std::string& bos_token,
                                                 const std::string& eos_token,
                                                 const nlohmann::json& extra) const {
  PENG_RETURN_IF_ERROR(CheckExtra(extra));
  DictData vars;
  for (auto it = extra.begin(); it != extra.end(); ++it) vars.Set(it.key(), FromJson(*it));
  std::vector<Value> list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) list.push_back(MessageValue(m));
  vars.Set("messages", Value::List(std::move(list)));
  vars.Set("add_generation_prompt", Value::Bool(add_generation_prompt));
  vars.Set("bos_token", Value::String(bos_token));
  vars.Set("eos_token", Value::String(eos_token));
  Renderer renderer(*program_, *options_);
  return renderer.Render(std::move(vars));
}

absl::StatusOr<std::string> ChatTemplate::RenderWithVariables(
    const nlohmann::json& variables) const {
  PENG_RETURN_IF_ERROR(CheckExtra(variables));
  DictData vars;
  for (auto it = variables.begin(); it != variables.end(); ++it) {
    vars.Set(it.key(), FromJson(*it));
  }
  Renderer renderer(*program_, *options_);
  return renderer.Render(std::move(vars));
}

}  // namespace peng
