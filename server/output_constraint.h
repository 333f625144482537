// A request's output constraint, read from its body: OpenAI's response_format (json_object,
// json_schema) and vLLM's guided decoding fields (guided_json, guided_choice, guided_regex, and
// the newer structured_outputs object). One kind per request; the compiled constraint goes
// into the job (CompletionJob::json_object, json_schema, guided_choice, guided_regex).
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/json_schema.h"
#include "nlohmann/json.hpp"
#include "server/openai_request.h"

namespace peng::server {

// 400s name the field (response_format, guided_regex, structured_outputs.json, ...). `raw_body`
// gives a schema's properties in the order the client wrote them.
absl::Status ParseOutputConstraint(const nlohmann::json& body, std::string_view raw_body, const ModelContext& ctx,
                                   CompletionJob* job);

// A schema compiled once per text (the model's SchemaCache), or here when there is none.
absl::StatusOr<std::shared_ptr<const JsonSchema>> CompileCached(const ModelContext& ctx,
                                                                const nlohmann::ordered_json& schema,
                                                                bool object_root = true);

}  // namespace peng::server
