#include "server/output_constraint.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "engine/byte_regex.h"
#include "engine/choice_grammar.h"
#include "server/json_text.h"
#include "server/openai_error.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;

absl::Status CompileSchema(const char* param, const nlohmann::ordered_json& schema, const ModelContext& ctx,
                           CompletionJob* job) {
  absl::StatusOr<std::shared_ptr<const JsonSchema>> compiled = CompileCached(ctx, schema);
  if (!compiled.ok()) return BadParam(param, absl::StrCat(param, ": ", compiled.status().message()));
  job->json_schema = *std::move(compiled);
  return absl::OkStatus();
}

// vLLM's guided decoding: the older top-level fields guided_json (a schema, as an object or as
// JSON text), guided_choice (a list of strings) and guided_regex, and the newer
// structured_outputs object holding json, choice, regex or json_object. One kind of constraint
// per request, response_format included.
absl::Status ParseGuided(const Json& body, std::string_view raw_body, const ModelContext& ctx, CompletionJob* job) {
  struct Guide {
    std::string param;                // as the error names it
    std::vector<std::string> path;    // its keys in the body (for the schema's client order)
    const Json* value;
  };
  std::vector<Guide> guides;
  const auto take = [&](const Json& parent, std::vector<std::string> path) {
    const Json* v = Field(parent, path.back().c_str());
    if (v != nullptr && !v->is_null()) guides.push_back({absl::StrJoin(path, "."), std::move(path), v});
  };
  for (const char* key : {"guided_choice", "guided_regex", "guided_json"}) take(body, {key});
  if (const Json* so = Field(body, "structured_outputs"); so != nullptr && !so->is_null()) {
    if (!so->is_object()) return TypeError("structured_outputs", "an object");
    for (const auto& [key, value] : so->items()) {
      if (key == "json" || key == "choice" || key == "regex" || key == "json_object") {
        take(*so, {"structured_outputs", key});
      } else if (key == "grammar" || key == "structural_tag" || key == "whitespace_pattern") {
        if (!value.is_null()) {
          return BadParam("structured_outputs." + key, absl::StrCat("structured_outputs.", key,
                                                                    " is not supported by this server (supported: "
                                                                    "json, choice, regex, json_object)"));
        }
      } else if (!absl::StartsWith(key, "disable_") && key != "backend") {
        // Accepted and not needed: disable_additional_properties and disable_fallback hold
        // already (objects hold their declared properties; a schema is never ignored), and
        // for disable_any_whitespace the whitespace between tokens stays bounded (a run of at
        // most one line break), not removed; backend names vLLM's grammar library.
        return BadParam("structured_outputs." + key, absl::StrCat("unknown field structured_outputs.", key));
      }
    }
  }
  if (guides.empty()) return absl::OkStatus();
  if (guides.size() > 1 || job->json_object || job->json_schema != nullptr) {
    return BadParam(guides.back().param, "set one of response_format (json_object, json_schema), guided_json, "
                                         "guided_choice, guided_regex and structured_outputs (one of its fields)");
  }
  const Guide& g = guides[0];
  const std::string& kind = g.path.back();
  if (kind == "json_object") {
    if (!g.value->is_boolean()) return TypeError(g.param, "a boolean");
    job->json_object = g.value->get<bool>();
  } else if (kind == "guided_choice" || kind == "choice") {
    if (!g.value->is_array()) return TypeError(g.param, "an array of strings");
    std::vector<std::string> choices;
    for (const Json& c : *g.value) {
      if (!c.is_string()) return TypeError(g.param, "an array of strings");
      choices.push_back(c.get<std::string>());
    }
    absl::StatusOr<std::shared_ptr<const ChoiceSet>> set = ChoiceSet::Create(std::move(choices));
    if (!set.ok()) return BadParam(g.param, set.status().message());
    job->guided_choice = *std::move(set);
  } else if (kind == "guided_regex" || kind == "regex") {
    if (!g.value->is_string()) return TypeError(g.param, "a string (a regular expression)");
    absl::StatusOr<ByteRegex> re = ByteRegex::Compile(g.value->get_ref<const std::string&>(), ByteRegex::Use::kWholeText);
    if (!re.ok()) return BadParam(g.param, absl::StrCat(g.param, ": ", re.status().message()));
    job->guided_regex = std::make_shared<const ByteRegex>(*std::move(re));
  } else {  // guided_json, json
    nlohmann::ordered_json schema;
    if (g.value->is_string()) {
      try {
        schema = nlohmann::ordered_json::parse(g.value->get<std::string>());
      } catch (const nlohmann::ordered_json::exception& e) {
        return BadParam(g.param, absl::StrCat(g.param, " is not a JSON schema: ", e.what()));
      }
    } else {
      schema = InClientOrder(*g.value, raw_body, g.path);
    }
    PENG_RETURN_IF_ERROR(CompileSchema(g.param.c_str(), schema, ctx, job));
  }
  return absl::OkStatus();
}

absl::Status ParseResponseFormat(const Json& body, std::string_view raw_body, const ModelContext& ctx,
                                 CompletionJob* job) {
  const Json* rf = Field(body, "response_format");
  if (rf == nullptr || rf->is_null()) return absl::OkStatus();
  const Json* type = rf->is_object() ? Field(*rf, "type") : nullptr;
  if (type == nullptr || !type->is_string()) return TypeError("response_format", "an object with a string 'type'");
  const std::string& t = type->get_ref<const std::string&>();
  if (t == "text") return absl::OkStatus();
  if (t == "json_object") {
    job->json_object = true;
    return absl::OkStatus();
  }
  if (t != "json_schema") {
    return BadParam("response_format", absl::StrCat("response_format type '", t,
                                                    "' is not supported by this server (supported: 'text', "
                                                    "'json_object', 'json_schema')"));
  }
  const Json* js = Field(*rf, "json_schema");
  if (js == nullptr || !js->is_object()) return TypeError("response_format.json_schema", "an object");
  const Json* schema = Field(*js, "schema");
  if (schema == nullptr || schema->is_null()) {  // a name alone: any JSON object
    job->json_object = true;
    return absl::OkStatus();
  }
  if (!schema->is_object() && !schema->is_boolean()) {
    return TypeError("response_format.json_schema.schema", "a JSON schema (an object)");
  }
  return CompileSchema("response_format", InClientOrder(*schema, raw_body, {"response_format", "json_schema", "schema"}),
                       ctx, job);
}

}  // namespace

absl::Status ParseOutputConstraint(const Json& body, std::string_view raw_body, const ModelContext& ctx,
                                   CompletionJob* job) {
  PENG_RETURN_IF_ERROR(ParseResponseFormat(body, raw_body, ctx, job));
  return ParseGuided(body, raw_body, ctx, job);
}

absl::StatusOr<std::shared_ptr<const JsonSchema>> CompileCached(const ModelContext& ctx,
                                                                const nlohmann::ordered_json& schema,
                                                                bool object_root) {
  return ctx.schemas != nullptr ? ctx.schemas->Compile(schema, object_root) : JsonSchema::Compile(schema, object_root);
}

}  // namespace peng::server
