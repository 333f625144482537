#include "server/openai_request.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/log.h"
#include "base/status.h"
#include "server/chat_template.h"
#include "server/json_text.h"
#include "server/openai_error.h"
#include "server/output_constraint.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;

constexpr int kMaxN = 128;

// The fields each endpoint understands; anything else is reported as ignored.
const absl::flat_hash_set<std::string>& CommonFields() {
  static const auto* f = new absl::flat_hash_set<std::string>{
      "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "seed", "stop",
      "stop_token_ids", "presence_penalty", "frequency_penalty", "repetition_penalty",
      "logit_bias", "logprobs", "stream", "stream_options", "priority", "user", "ignore_eos",
      "include_stop_str_in_output", "response_format", "best_of", "guided_json", "guided_choice", "guided_regex",
      "structured_outputs", "min_tokens"};
  return *f;
}
const absl::flat_hash_set<std::string>& ChatFields() {
  static const auto* f = new absl::flat_hash_set<std::string>{
      "messages", "max_completion_tokens", "top_logprobs", "add_generation_prompt",
      "continue_final_message", "chat_template_kwargs", "tools", "tool_choice", "parallel_tool_calls"};
  return *f;
}
const absl::flat_hash_set<std::string>& CompletionFields() {
  static const auto* f = new absl::flat_hash_set<std::string>{"prompt", "echo", "suffix"};
  return *f;
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& body, const char* name) {
  const Json* f = Field(body, name);
  if (f == nullptr) return std::optional<double>();
  if (!f->is_number()) return TypeError(name, "a number");
  return std::optional<double>(f->get<double>());
}

absl::StatusOr<std::optional<int64_t>> GetInt(const Json& body, const char* name) {
  const Json* f = Field(body, name);
  if (f == nullptr) return std::optional<int64_t>();
  if (f->is_number_unsigned() && f->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return BadParam(name, absl::StrCat(name, " ", f->get<uint64_t>(), " is out of range"));
  }
  if (f->is_number_integer()) return std::optional<int64_t>(f->get<int64_t>());
  if (f->is_number_float()) {  // pydantic accepts 2.0 for an int field; so do we
    double d = f->get<double>();
    if (std::isfinite(d) && d == std::floor(d)) {
      if (std::fabs(d) < 9e15) return std::optional<int64_t>(static_cast<int64_t>(d));
      // An integer too large for 64 bits (JSON parsers hand those over as floats).
      return BadParam(name, absl::StrCat(name, " ", f->dump(), " is out of range"));
    }
  }
  return TypeError(name, "an integer");
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& body, const char* name) {
  const Json* f = Field(body, name);
  if (f == nullptr) return std::optional<bool>();
  if (!f->is_boolean()) return TypeError(name, "a boolean");
  return std::optional<bool>(f->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& body, const char* name) {
  const Json* f = Field(body, name);
  if (f == nullptr) return std::optional<std::string>();
  if (!f->is_string()) return TypeError(name, "a string");
  return std::optional<std::string>(f->get<std::string>());
}

bool IsTokenList(const Json& j) {
  if (!j.is_array() || j.empty()) return false;
  for (const Json& e : j) {
    if (!e.is_number_integer()) return false;
  }
  return true;
}

absl::StatusOr<std::vector<int32_t>> TokenIds(const Json& j, const char* param, int vocab) {
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (const Json& e : j) {
    const bool huge = e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX);
    const int64_t id = huge ? -1 : e.get<int64_t>();
    if (id < 0 || id >= vocab) {
      return BadParam(param, absl::StrCat("token id ", huge ? e.dump() : std::to_string(id), " in '", param,
                                          "' is outside the vocabulary [0, ", vocab, ")"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// "temperature must be in ..." -> "temperature"; "logit_bias[5] must ..." -> "logit_bias".
std::string ParamFromMessage(absl::string_view message) {
  size_t end = message.find_first_of(" [");
  return std::string(message.substr(0, end));
}

absl::Status ParsePrompt(const Json& body, const ModelContext& ctx, CompletionJob* job) {
  const Json* p = Field(body, "prompt");
  if (p == nullptr) return BadParam("prompt", "'prompt' is required");
  const Tokenizer& tok = *ctx.tokenizer;
  auto add_text = [&](const std::string& text) -> absl::Status {
    std::vector<int32_t> ids = tok.Encode(text, /*add_bos=*/true, /*parse_special=*/true);
    job->prompts.push_back(std::move(ids));
    job->prompt_texts.push_back(text);
    return absl::OkStatus();
  };
  auto add_ids = [&](const Json& list) -> absl::Status {
    PENG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, TokenIds(list, "prompt", tok.vocab_size()));
    job->prompt_texts.push_back(tok.Decode(ids, /*skip_special=*/false));
    job->prompts.push_back(std::move(ids));
    return absl::OkStatus();
  };
  if (p->is_string()) {
    PENG_RETURN_IF_ERROR(add_text(p->get<std::string>()));
  } else if (IsTokenList(*p)) {
    PENG_RETURN_IF_ERROR(add_ids(*p));
  } else if (p->is_array() && !p->empty()) {
    for (const Json& e : *p) {
      if (e.is_string()) {
        PENG_RETURN_IF_ERROR(add_text(e.get<std::string>()));
      } else if (IsTokenList(e)) {
        PENG_RETURN_IF_ERROR(add_ids(e));
      } else {
        return BadParam("prompt", "'prompt' must be a string, a list of strings, a list of "
                                  "token ids or a list of token id lists");
      }
    }
  } else {
    return BadParam("prompt", "'prompt' must be a non-empty string, list of strings, list of "
                              "token ids or list of token id lists");
  }
  for (const auto& ids : job->prompts) {
    if (ids.empty()) return BadParam("prompt", "the prompt is empty after tokenization");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> MessageContent(const Json& m, size_t i) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string out;
    for (const Json& part : *it) {
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
        return BadParam("messages", absl::StrCat("messages[", i, "].content parts must be "
                                                 "objects with a 'type'"));
      }
      const std::string type = part["type"].get<std::string>();
      if (type != "text") {
        return BadParam("messages", absl::StrCat("messages[", i, "].content: part type '", type,
                                                 "' is not supported (text only)"));
      }
      if (!part.contains("text") || !part["text"].is_string()) {
        return BadParam("messages",
                        absl::StrCat("messages[", i, "].content: text part without 'text'"));
      }
      if (!out.empty()) out += "\n";
      out += part["text"].get<std::string>();
    }
    return out;
  }
  return BadParam("messages", absl::StrCat("messages[", i, "].content must be a string or a "
                                           "list of content parts"));
}

absl::Status ParseMessages(const Json& body, std::string_view raw_body, const ModelContext& ctx, CompletionJob* job) {
  PENG_ASSIGN_OR_RETURN(ChatPrompt chat, PrepareChat(body, raw_body, ctx, job->ReplyConstrained()));
  if (chat.reply_schema != nullptr) job->json_schema = std::move(chat.reply_schema);
  job->tool_call_schema = std::move(chat.tool_call_schema);
  job->tools = std::move(chat.tools);
  job->prompts.push_back(std::move(chat.ids));
  job->prompt_texts.push_back(std::move(chat.text));
  return absl::OkStatus();
}

absl::Status ParseStop(const Json& body, int vocab, StopConditions* stop) {
  if (const Json* s = Field(body, "stop")) {
    if (s->is_string()) {
      if (!s->get<std::string>().empty()) stop->stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const Json& e : *s) {
        if (!e.is_string()) return TypeError("stop", "a string or a list of strings");
        if (!e.get<std::string>().empty()) stop->stop.push_back(e.get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or a list of strings");
    }
  }
  if (const Json* ids = Field(body, "stop_token_ids")) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "a list of integers");
    for (const Json& e : *ids) {
      if (!e.is_number_integer()) return TypeError("stop_token_ids", "a list of integers");
    }
    PENG_ASSIGN_OR_RETURN(stop->stop_token_ids, TokenIds(*ids, "stop_token_ids", vocab));
  }
  PENG_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, GetBool(body, "ignore_eos"));
  stop->ignore_eos = ignore_eos.value_or(false);
  PENG_ASSIGN_OR_RETURN(std::optional<bool> incl, GetBool(body, "include_stop_str_in_output"));
  stop->include_stop_str_in_output = incl.value_or(false);
  return absl::OkStatus();
}

absl::Status ParseSampling(const Json& body, const ModelContext& ctx, CompletionJob* job) {
  SamplingParams& sp = job->sampling;
  auto set_float = [&](const char* name, float* out) -> absl::Status {
    PENG_ASSIGN_OR_RETURN(std::optional<double> v, GetNumber(body, name));
    if (v) *out = static_cast<float>(*v);
    return absl::OkStatus();
  };
  PENG_RETURN_IF_ERROR(set_float("temperature", &sp.temperature));
  PENG_RETURN_IF_ERROR(set_float("top_p", &sp.top_p));
  PENG_RETURN_IF_ERROR(set_float("min_p", &sp.min_p));
  PENG_RETURN_IF_ERROR(set_float("presence_penalty", &sp.presence_penalty));
  PENG_RETURN_IF_ERROR(set_float("frequency_penalty", &sp.frequency_penalty));
  PENG_RETURN_IF_ERROR(set_float("repetition_penalty", &sp.repetition_penalty));
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, GetInt(body, "top_k"));
  if (top_k) {
    if (*top_k < -1 || *top_k > std::numeric_limits<int32_t>::max()) {
      return BadParam("top_k", absl::StrCat("top_k must be -1 (off) or >= 0, got ", *top_k));
    }
    sp.top_k = static_cast<int32_t>(*top_k);
  }
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> seed, GetInt(body, "seed"));
  if (seed) sp.seed = static_cast<uint64_t>(*seed);
  if (const Json* lb = Field(body, "logit_bias")) {
    if (!lb->is_object()) return TypeError("logit_bias", "an object of token id -> bias");
    for (const auto& [key, value] : lb->items()) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(key, &id)) {
        return BadParam("logit_bias", absl::StrCat("logit_bias key '", key,
                                                   "' is not a token id"));
      }
      if (!value.is_number()) return TypeError("logit_bias", "an object of token id -> number");
      if (id < 0 || id >= ctx.tokenizer->vocab_size()) {
        return BadParam("logit_bias", absl::StrCat("logit_bias token id ", id,
                                                   " is outside the vocabulary [0, ",
                                                   ctx.tokenizer->vocab_size(), ")"));
      }
      sp.logit_bias[static_cast<int32_t>(id)] = value.get<float>();
    }
  }
  // Logprobs: completions take an int; chat takes a bool plus top_logprobs.
  if (job->kind == ApiKind::kCompletion) {
    // `false` is what a client sends for "none" (vLLM accepts it); `true` names no count.
    const Json* lp_field = Field(body, "logprobs");
    if (lp_field != nullptr && lp_field->is_boolean()) {
      if (lp_field->get<bool>()) {
        return BadParam("logprobs", "logprobs takes the number of alternatives per token (0-"
                                    + std::to_string(ctx.max_logprobs) + ") in completions, not true");
      }
      job->want_logprobs = false;
    }
    PENG_ASSIGN_OR_RETURN(std::optional<int64_t> lp,
                          lp_field != nullptr && lp_field->is_boolean() ? std::optional<int64_t>()
                                                                          : GetInt(body, "logprobs"));
    if (lp) {
      if (*lp < 0 || *lp > ctx.max_logprobs) {
        return BadParam("logprobs", absl::StrCat("logprobs must be in [0, ", ctx.max_logprobs,
                                                 "], got ", *lp));
      }
      job->want_logprobs = true;
      job->top_logprobs = static_cast<int>(*lp);
    }
  } else {
    PENG_ASSIGN_OR_RETURN(std::optional<bool> lp, GetBool(body, "logprobs"));
    PENG_ASSIGN_OR_RETURN(std::optional<int64_t> top, GetInt(body, "top_logprobs"));
    job->want_logprobs = lp.value_or(false);
    if (top) {
      if (*top < 0 || *top > ctx.max_logprobs) {
        return BadParam("top_logprobs", absl::StrCat("top_logprobs must be in [0, ",
                                                     ctx.max_logprobs, "], got ", *top));
      }
      if (!job->want_logprobs && *top > 0) {
        return BadParam("top_logprobs", "top_logprobs requires logprobs to be true");
      }
      job->top_logprobs = static_cast<int>(*top);
    }
  }
  sp.logprobs = job->want_logprobs ? job->top_logprobs : -1;

  if (absl::Status s = sp.Validate(ctx.tokenizer->vocab_size()); !s.ok()) {
    return WithParam(s, ParamFromMessage(s.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RenderChatPrompt(const Json& body, const ModelContext& ctx, ToolRequest* tools_out,
                                             std::string_view raw_body) {
  PENG_ASSIGN_OR_RETURN(ToolRequest tools, ParseToolRequest(body, raw_body));
  const Json* msgs = Field(body, "messages");
  if (msgs == nullptr) return BadParam("messages", "'messages' is required");
  if (!msgs->is_array() || msgs->empty()) {
    return BadParam("messages", "'messages' must be a non-empty list");
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const Json& m = (*msgs)[i];
    if (!m.is_object()) return BadParam("messages", absl::StrCat("messages[", i, "] must be an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return BadParam("messages", absl::StrCat("messages[", i, "].role must be a string"));
    }
    ChatMessage msg;
    msg.role = role->get<std::string>();
    // OpenAI's newer name for the system role; templates know only "system".
    if (msg.role == "developer") msg.role = "system";
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" &&
        msg.role != "tool" && msg.role != "developer") {
      return BadParam("messages",
                      absl::StrCat("messages[", i, "].role '", msg.role,
                                   "' is not one of system, developer, user, assistant, tool"));
    }
    PENG_ASSIGN_OR_RETURN(msg.content, MessageContent(m, i));
    if (auto name = m.find("name"); name != m.end() && name->is_string()) {
      msg.name = name->get<std::string>();
    }
    if (auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) msg.tool_calls = *tc;
    if (auto id = m.find("tool_call_id"); id != m.end() && id->is_string()) {
      msg.tool_call_id = id->get<std::string>();
    }
    messages.push_back(std::move(msg));
  }
  PENG_ASSIGN_OR_RETURN(std::optional<bool> agp, GetBool(body, "add_generation_prompt"));
  // vLLM's extension: the reply continues the final (assistant) message instead of starting a
  // new turn. As vLLM, it excludes add_generation_prompt (whose default is true).
  PENG_ASSIGN_OR_RETURN(std::optional<bool> cfm, GetBool(body, "continue_final_message"));
  const bool continue_final = cfm.value_or(false);
  if (continue_final && agp.value_or(true)) {
    return BadParam("continue_final_message",
                    "continue_final_message and add_generation_prompt cannot both be true "
                    "(send add_generation_prompt: false)");
  }
  Json extra = Json::object();
  if (const Json* kw = Field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) return TypeError("chat_template_kwargs", "an object");
    extra = *kw;
  }
  const Tokenizer& tok = *ctx.tokenizer;
  if (ctx.chat_template == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "chat completions are unavailable: ",
        ctx.chat_template_error.empty() ? "the model has no chat template"
                                        : ctx.chat_template_error,
        "; use /v1/completions or configure a chat template"));
  }
  if (TemplateRendersTools(*ctx.chat_template)) {
    if (const Json* t = Field(body, "tools")) extra["tools"] = *t;
    PENG_RETURN_IF_ERROR(ArgumentsAsObjects(&messages));
  } else {
    PENG_RETURN_IF_ERROR(WriteToolsIntoMessages(tools.choice == ToolChoice::kNone ? nullptr : &tools, &messages));
  }
  if (tools_out != nullptr) *tools_out = std::move(tools);
  const std::string bos = tok.bos_id() >= 0 ? tok.TokenPiece(tok.bos_id()) : std::string();
  const std::string eos = tok.eos_id() >= 0 ? tok.TokenPiece(tok.eos_id()) : std::string();
  absl::StatusOr<std::string> text =
      ctx.chat_template->Render(messages, agp.value_or(true), bos, eos, extra);
  if (!text.ok()) {
    return BadParam("messages", absl::StrCat("chat template: ", text.status().message()));
  }
  if (continue_final) return CutAfterFinalMessage(*text, messages.back().content);
  return *std::move(text);
}

absl::StatusOr<ChatPrompt> PrepareChat(const Json& body, std::string_view raw_body, const ModelContext& ctx,
                                       bool reply_constrained) {
  ChatPrompt out;
  ToolRequest tools;
  PENG_ASSIGN_OR_RETURN(out.text, RenderChatPrompt(body, ctx, &tools, raw_body));
  if (tools.choice != ToolChoice::kNone) {
    if (tools.Constrained()) {
      if (reply_constrained) {
        return BadParam("tool_choice", "tool_choice 'required' or a named function constrains the reply "
                                       "already; it cannot be combined with response_format or guided_*");
      }
      absl::StatusOr<std::shared_ptr<const JsonSchema>> compiled =
          CompileCached(ctx, ToolCallSchema(tools), /*object_root=*/false);
      if (!compiled.ok()) {
        return BadParam("tools", absl::StrCat("a function's parameters: ", compiled.status().message()));
      }
      out.reply_schema = *std::move(compiled);
    } else if (!reply_constrained && RepliesWithToolCallTags(*ctx.chat_template)) {
      // "auto": a <tool_call> block the model opens holds one well-formed call. Functions whose
      // parameters the schema subset cannot hold leave the blocks unconstrained, not a 400.
      absl::StatusOr<std::shared_ptr<const JsonSchema>> compiled =
          CompileCached(ctx, OneToolCallSchema(tools), /*object_root=*/false);
      if (compiled.ok()) out.tool_call_schema = *std::move(compiled);
    }
    out.tools = std::make_shared<const ToolRequest>(std::move(tools));
  }
  out.ids = EncodeChatPrompt(out.text, *ctx.tokenizer);
  if (out.ids.empty()) return BadParam("messages", "the rendered prompt is empty");
  return out;
}

absl::StatusOr<std::string> CutAfterFinalMessage(const std::string& rendered, const std::string& final_text) {
  const std::string stripped(absl::StripAsciiWhitespace(final_text));
  if (stripped.empty()) {
    return BadParam("continue_final_message", "the final message has no text to continue");
  }
  const size_t at = rendered.rfind(stripped);
  if (at == std::string::npos) {
    return BadParam("continue_final_message",
                    "the chat template does not render the final message's text as sent, so it cannot be "
                    "continued");
  }
  // The rendering keeps the message's trailing whitespace when it is there as sent; a template
  // that trims it gets the trimmed text (as transformers' apply_chat_template does).
  const std::string kept(absl::StripLeadingAsciiWhitespace(final_text));
  const size_t end = rendered.compare(at, kept.size(), kept) == 0 ? at + kept.size() : at + stripped.size();
  return rendered.substr(0, end);
}

std::vector<int32_t> EncodeChatPrompt(const std::string& text, const Tokenizer& tok) {
  const std::string bos = tok.bos_id() >= 0 ? tok.TokenPiece(tok.bos_id()) : std::string();
  const bool has_bos_text = !bos.empty() && text.rfind(bos, 0) == 0;
  return tok.Encode(text, /*add_bos=*/!has_bos_text, /*parse_special=*/true);
}


namespace {

// Deepest nesting of arrays and objects in a JSON text (strings skipped; not a validator).
int NestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  WalkJsonText(text, [&](char c, bool structural) {
    if (!structural) return;
    if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    if (c == ']' || c == '}') --depth;
  });
  return deepest;
}

}  // namespace

template <typename J>
absl::StatusOr<J> ParseJsonText(std::string_view text, absl::string_view what) {
  // Everything that walks a request (chat templates, tool schemas, copies) recurses: a value
  // nested deeper than any real request is refused before it can exhaust the stack.
  if (const int depth = NestingDepth(text); depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(absl::StrCat(what, " nests arrays and objects ", depth,
                                                   " deep; the limit is ", kMaxJsonDepth));
  }
  try {
    return J::parse(text);
  } catch (const typename J::exception& e) {
    // The parser's own reason and place (a syntax error at line/column, an unpaired surrogate,
    // a number beyond double range), without its "[json.exception.parse_error.101] " tag, and
    // cut on a UTF-8 boundary: "last read: '…'" quotes the token, which may be long.
    std::string_view why(e.what());
    const size_t tag_end = why.find("] ");
    if (why.rfind("[json.exception.", 0) == 0 && tag_end != why.npos) why.remove_prefix(tag_end + 2);
    constexpr size_t kMaxWhy = 240;
    std::string reason(why.substr(0, kMaxWhy));
    if (why.size() > kMaxWhy) {
      while (!reason.empty() && (static_cast<unsigned char>(why[reason.size()]) & 0xC0) == 0x80) {
        reason.pop_back();
      }
      reason += "…";
    }
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON: ", reason));
  }
}
template absl::StatusOr<nlohmann::json> ParseJsonText(std::string_view, absl::string_view);
template absl::StatusOr<nlohmann::ordered_json> ParseJsonText(std::string_view, absl::string_view);

absl::StatusOr<Json> ParseJsonBody(const std::string& text) {
  PENG_ASSIGN_OR_RETURN(Json body, ParseJsonText<Json>(text, "the request body"));
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  return body;
}

namespace {

// Fields that ask for something Peng does not do. Ignoring them would hand the client prose
// where it expects a function call, an insertion or a ranked best-of, so they are 400s (as in
// vLLM when the feature is off). Their harmless settings pass: best_of equal to n.
// response_format is read by ParseResponseFormat, tools by ParseToolRequest.
absl::Status RejectUnsupported(ApiKind kind, const Json& body) {
  const auto unsupported = [](const char* param, absl::string_view what) {
    return BadParam(param, absl::StrCat(what, " is not supported by this server"));
  };
  if (kind == ApiKind::kChat) {
    if (Field(body, "functions") != nullptr || Field(body, "function_call") != nullptr) {
      return unsupported("functions", "The legacy functions / function_call (use tools and tool_choice)");
    }
  } else if (const Json* suffix = Field(body, "suffix"); suffix != nullptr && !(suffix->is_string() && suffix->get<std::string>().empty())) {
    return unsupported("suffix", "suffix (insertion)");
  }
  if (const Json* best_of = Field(body, "best_of")) {
    const Json* n = Field(body, "n");
    const int64_t want = n != nullptr && n->is_number_integer() ? n->get<int64_t>() : 1;
    if (!best_of->is_number_integer() || best_of->get<int64_t>() != want) {
      return unsupported("best_of", "best_of other than n");
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// response_format: "text" (the default), "json_object" (JSON mode: the output is one JSON
// object, engine/json_constraint.h) or "json_schema" (one document of the schema,
// engine/json_schema.h; a schema outside the supported subset is a 400 that names the keyword).
}  // namespace

nlohmann::ordered_json InClientOrder(const Json& value, std::string_view raw_body,
                                     const std::vector<std::string>& path) {
  if (!raw_body.empty()) {
    try {
      const nlohmann::ordered_json body = nlohmann::ordered_json::parse(raw_body);
      const nlohmann::ordered_json* at = &body;
      for (const std::string& key : path) {
        const auto it = at->is_object() ? at->find(key) : at->end();
        if (it == at->end()) {
          at = nullptr;
          break;
        }
        at = &*it;
      }
      if (at != nullptr) return *at;
    } catch (const nlohmann::ordered_json::exception&) {
    }
  }
  return nlohmann::ordered_json::parse(value.dump());
}

absl::StatusOr<CompletionJob> ParseCompletionRequest(ApiKind kind, const Json& body,
                                                     const ModelContext& ctx,
                                                     std::vector<std::string>* ignored_fields,
                                                     std::string_view raw_body) {
  if (ctx.tokenizer == nullptr) return absl::InternalError("no tokenizer");
  CompletionJob job;
  job.kind = kind;
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  PENG_RETURN_IF_ERROR(RejectUnsupported(kind, body));
  PENG_RETURN_IF_ERROR(ParseOutputConstraint(body, raw_body, ctx, &job));
  for (const auto& [key, value] : body.items()) {
    bool known = CommonFields().contains(key) ||
                 (kind == ApiKind::kChat ? ChatFields() : CompletionFields()).contains(key);
    if (!known && ignored_fields != nullptr) ignored_fields->push_back(key);
  }

  PENG_ASSIGN_OR_RETURN(std::optional<std::string> model, GetString(body, "model"));
  if (model && *model != ctx.model_name) {
    return WithParam(absl::NotFoundError(absl::StrCat("The model `", *model,
                                                      "` does not exist.")),
                     "model");
  }
  job.model = ctx.model_name;

  // Types and ranges first (cheap), then the prompt (tokenization, template rendering).
  PENG_RETURN_IF_ERROR(ParseSampling(body, ctx, &job));
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> n, GetInt(body, "n"));
  job.n = static_cast<int>(n.value_or(1));
  if (n && (*n < 1 || *n > kMaxN)) {
    return BadParam("n", absl::StrCat("n must be in [1, ", kMaxN, "], got ", *n));
  }
  // REFERENCE.md §5 (vLLM's rule): greedy choices would all be the same text.
  if (job.n > 1 && job.sampling.greedy()) {
    return BadParam("n", "n > 1 requires sampling (temperature > 0): greedy choices would be identical");
  }
  PENG_RETURN_IF_ERROR(ParseStop(body, ctx.tokenizer->vocab_size(), &job.stop));
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> priority, GetInt(body, "priority"));
  if (priority && (*priority < INT32_MIN || *priority > INT32_MAX)) {
    return BadParam("priority", absl::StrCat("priority must be a 32-bit integer, got ", *priority));
  }
  job.priority = static_cast<int>(priority.value_or(0));
  PENG_ASSIGN_OR_RETURN(std::optional<std::string> user, GetString(body, "user"));
  job.user = user.value_or("");
  PENG_ASSIGN_OR_RETURN(std::optional<bool> stream, GetBool(body, "stream"));
  job.stream = stream.value_or(false);
  if (const Json* so = Field(body, "stream_options")) {
    if (!so->is_object()) return TypeError("stream_options", "an object");
    if (!job.stream) {
      return BadParam("stream_options", "stream_options can only be set when stream is true");
    }
    PENG_ASSIGN_OR_RETURN(std::optional<bool> iu, GetBool(*so, "include_usage"));
    job.include_usage = iu.value_or(false);
  }

  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, GetInt(body, "max_tokens"));
  const char* max_param = "max_tokens";
  if (kind == ApiKind::kChat) {
    PENG_ASSIGN_OR_RETURN(std::optional<int64_t> mct, GetInt(body, "max_completion_tokens"));
    if (mct) {
      max_tokens = mct;
      max_param = "max_completion_tokens";
    }
    PENG_RETURN_IF_ERROR(ParseMessages(body, raw_body, ctx, &job));
  } else {
    PENG_ASSIGN_OR_RETURN(std::optional<bool> echo, GetBool(body, "echo"));
    job.echo = echo.value_or(false);
    // echo + logprobs: the prompt's tokens get logprobs too (what scoring clients such as
    // lm-evaluation-harness read), with the same number of alternatives.
    if (job.echo && job.want_logprobs) job.prompt_logprobs = job.top_logprobs;
    PENG_RETURN_IF_ERROR(ParsePrompt(body, ctx, &job));
  }
  // max_tokens 0 asks for the echoed prompt (and its logprobs) alone, as OpenAI's legacy API did.
  const int64_t min_tokens = job.echo ? 0 : 1;
  if (max_tokens && *max_tokens < min_tokens) {
    return BadParam(max_param, absl::StrCat(max_param, " must be at least 1", job.echo ? " (0 with echo)" : "",
                                            ", got ", *max_tokens));
  }

  // Context arithmetic, per prompt (vLLM's messages).
  const char* prompt_param = kind == ApiKind::kChat ? "messages" : "prompt";
  const char* where = kind == ApiKind::kChat ? "messages" : "prompt";
  int64_t longest = 0;
  for (const auto& p : job.prompts) longest = std::max<int64_t>(longest, p.size());
  if (longest >= ctx.max_model_len) {
    return BadParam(prompt_param,
                    absl::StrCat("This model's maximum context length is ", ctx.max_model_len,
                                 " tokens. However, your request has ", longest,
                                 " input tokens. Please reduce the length of the input ", where,
                                 "."));
  }
  // /v1/completions without max_tokens: 16, the default OpenAI documents for its legacy API (and
  // vLLM's), within the context. Chat: the rest of the context (below).
  if (!max_tokens && kind == ApiKind::kCompletion) {
    max_tokens = std::min<int64_t>(kDefaultCompletionTokens, ctx.max_model_len - longest);
  }
  if (max_tokens && *max_tokens > ctx.max_model_len - longest) {  // no overflow near 2^63
    const uint64_t requested = static_cast<uint64_t>(longest) + static_cast<uint64_t>(*max_tokens);
    return BadParam(max_param,
                    absl::StrCat("This model's maximum context length is ", ctx.max_model_len,
                                 " tokens. However, you requested ", requested,
                                 " tokens (", longest, " in the ", where, ", ", *max_tokens,
                                 " in the completion). Please reduce the length of the ", where,
                                 " or completion."));
  }
  // vLLM's min_tokens: at most max_tokens (or, without it, the context's rest).
  PENG_ASSIGN_OR_RETURN(std::optional<int64_t> min_new, GetInt(body, "min_tokens"));
  if (min_new) {
    const int64_t most = max_tokens ? *max_tokens : ctx.max_model_len - longest;
    if (*min_new < 0 || *min_new > most) {
      return BadParam("min_tokens", absl::StrCat("min_tokens must be in [0, ", most, "] (at most ", max_param,
                                                 "), got ", *min_new));
    }
    job.stop.min_tokens = *min_new;
  }
  // Chat's default: the rest of the context (per prompt: see MaxTokensFor).
  job.max_tokens = max_tokens.value_or(-1);
  job.stop.max_tokens = max_tokens ? *max_tokens : ctx.max_model_len - longest;
  job.max_model_len = ctx.max_model_len;
  return job;
}

void ModelContext::UseChatTemplate(const ChatTemplate* override_template) {
  chat_template = override_template;
  if (chat_template != nullptr || tokenizer == nullptr || tokenizer->chat_template().empty()) return;
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(tokenizer->chat_template());
  if (parsed.ok()) {
    owned_template = std::make_shared<const ChatTemplate>(*std::move(parsed));
    chat_template = owned_template.get();
  } else {
    chat_template_error = absl::StrCat("the model's chat template does not parse: ", parsed.status().message());
    Log(LogLevel::kWarning, "", chat_template_error);
  }
}

}  // namespace peng::server
