// The small JSON routes beside generation: /v1/models, /v1/models/{id}, /tokenize and
// /detokenize (vLLM's request and response shapes). Pure functions of the request body and the
// ModelContext; errors are Statuses with the offending field attached (openai_error.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/openai_request.h"

namespace peng::server {

// {"object": "list", "data": [model card]}.
nlohmann::json ListModels(const ModelContext& ctx, int64_t created);
// The model card, or NotFound (param "model") for another id.
absl::StatusOr<nlohmann::json> GetModel(const ModelContext& ctx, const std::string& id,
                                        int64_t created);
// {"prompt": str, "add_special_tokens": bool = true} or {"messages": [...],
// "add_generation_prompt": bool = true} -> {"count", "max_model_len", "tokens", "token_strs"}.
// `raw_body` (may be empty): the request text, for the tools' parameters in the client's order.
absl::StatusOr<nlohmann::json> Tokenize(const nlohmann::json& body, const ModelContext& ctx,
                                        std::string_view raw_body = {});
// {"tokens": [ids]} -> {"prompt": text}.
absl::StatusOr<nlohmann::json> Detokenize(const nlohmann::json& body, const ModelContext& ctx);

}  // namespace peng::server
