#include "server/openai_api.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/openai_error.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;

Json ModelCard(const ModelContext& ctx, int64_t created) {
  return Json{{"id", ctx.model_name},       {"object", "model"},
              {"created", created},         {"owned_by", "peng"},
              {"root", ctx.model_name},     {"parent", nullptr},
              {"max_model_len", ctx.max_model_len}};
}

// An optional "model" must name the served model.
absl::Status CheckModel(const Json& body, const ModelContext& ctx) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return BadParam("model", "'model' must be a string");
  if (it->get<std::string>() != ctx.model_name) {
    return WithParam(absl::NotFoundError(absl::StrCat("The model `", it->get<std::string>(),
                                                      "` does not exist.")),
                     "model");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> OptionalBool(const Json& body, const char* name, bool dflt) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) return BadParam(name, absl::StrCat("'", name, "' must be a boolean"));
  return it->get<bool>();
}

}  // namespace

Json ListModels(const ModelContext& ctx, int64_t created) {
  return Json{{"object", "list"}, {"data", Json::array({ModelCard(ctx, created)})}};
}

absl::StatusOr<Json> GetModel(const ModelContext& ctx, const std::string& id, int64_t created) {
  if (id != ctx.model_name) {
    return WithParam(absl::NotFoundError(absl::StrCat("The model `", id, "` does not exist.")),
                     "model");
  }
  return ModelCard(ctx, created);
}

absl::StatusOr<Json> Tokenize(const Json& body, const ModelContext& ctx, std::string_view raw_body) {
  PENG_RETURN_IF_ERROR(CheckModel(body, ctx));
  const Tokenizer& tok = *ctx.tokenizer;
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    PENG_ASSIGN_OR_RETURN(std::string text, RenderChatPrompt(body, ctx, nullptr, raw_body));
    // vLLM: add_special_tokens defaults to false for chat (the template adds them).
    PENG_ASSIGN_OR_RETURN(bool add_special, OptionalBool(body, "add_special_tokens", false));
    ids = add_special ? EncodeChatPrompt(text, tok)
                      : tok.Encode(text, /*add_bos=*/false, /*parse_special=*/true);
  } else {
    auto it = body.find("prompt");
    if (it == body.end() || !it->is_string()) {
      return BadParam("prompt", "'prompt' (a string) or 'messages' is required");
    }
    PENG_ASSIGN_OR_RETURN(bool add_special, OptionalBool(body, "add_special_tokens", true));
    ids = tok.Encode(it->get<std::string>(), add_special, /*parse_special=*/true);
  }
  PENG_ASSIGN_OR_RETURN(bool strs, OptionalBool(body, "return_token_strs", false));
  Json token_strs = nullptr;
  if (strs) {
    token_strs = Json::array();
    for (int32_t id : ids) token_strs.push_back(tok.TokenPiece(id));
  }
  return Json{{"count", ids.size()},
              {"max_model_len", ctx.max_model_len},
              {"tokens", ids},
              {"token_strs", std::move(token_strs)}};
}

absl::StatusOr<Json> Detokenize(const Json& body, const ModelContext& ctx) {
  PENG_RETURN_IF_ERROR(CheckModel(body, ctx));
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) {
    return BadParam("tokens", "'tokens' must be a list of token ids");
  }
  std::vector<int32_t> ids;
  for (const Json& e : *it) {
    if (!e.is_number_integer()) return BadParam("tokens", "'tokens' must be a list of token ids");
    int64_t id = e.get<int64_t>();
    if (id < 0 || id >= ctx.tokenizer->vocab_size()) {
      return BadParam("tokens", absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                             ctx.tokenizer->vocab_size(), ")"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return Json{{"prompt", ctx.tokenizer->Decode(ids, /*skip_special=*/false)}};
}

}  // namespace peng::server
