// Renders a conversation into a prompt for models whose template is one of the common families
// (ChatML: SmolLM2 / Qwen; Llama-3 headers; Mistral/Llama-2 [INST]). The family is recognised
// from the model's own chat template text. This is the CLI's renderer until server/ gains the
// Jinja-subset interpreter (serving issue), which will replace it for both.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace peng::cli {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Renders messages plus the opening of the assistant's turn.
absl::StatusOr<std::string> RenderChat(const std::string& chat_template,
                                       const std::vector<ChatMessage>& messages);

}  // namespace peng::cli
