#include "cli/chat_prompt.h"

#include "absl/strings/str_cat.h"

namespace peng::cli {
namespace {

// The literal default system prompt a ChatML template inserts when none is given, if any.
std::string DefaultSystemPrompt(const std::string& tmpl) {
  const std::string open = "<|im_start|>system\n";
  const size_t a = tmpl.find(open);
  if (a == std::string::npos) return "";
  const size_t b = tmpl.find("<|im_end|>", a);
  const std::string body = tmpl.substr(a + open.size(), b == std::string::npos ? 0 : b - a - open.size());
  // A template that interpolates the system message has no literal default.
  return body.find("{{") == std::string::npos && body.find("{%") == std::string::npos ? body : "";
}

}  // namespace

absl::StatusOr<std::string> RenderChat(const std::string& tmpl, const std::vector<ChatMessage>& messages) {
  std::string out;
  if (tmpl.find("<|im_start|>") != std::string::npos) {
    const std::string def = DefaultSystemPrompt(tmpl);
    if (!def.empty() && (messages.empty() || messages[0].role != "system")) {
      absl::StrAppend(&out, "<|im_start|>system\n", def, "<|im_end|>\n");
    }
    for (const auto& m : messages) absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    absl::StrAppend(&out, "<|im_start|>assistant\n");
    return out;
  }
  if (tmpl.find("<|start_header_id|>") != std::string::npos) {
    out = "<|begin_of_text|>";
    for (const auto& m : messages) {
      absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", m.content, "<|eot_id|>");
    }
    absl::StrAppend(&out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return out;
  }
  if (tmpl.find("[INST]") != std::string::npos) {
    std::string system;
    for (const auto& m : messages) {
      if (m.role == "system") {
        system = m.content + "\n\n";
      } else if (m.role == "user") {
        absl::StrAppend(&out, "[INST] ", system, m.content, " [/INST]");
        system.clear();
      } else {
        absl::StrAppend(&out, m.content, "</s>");
      }
    }
    return out;
  }
  return absl::UnimplementedError(
      "the model's chat template is not one the CLI recognises (ChatML, Llama-3, [INST])");
}

}  // namespace peng::cli
