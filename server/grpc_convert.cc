#include "server/grpc_convert.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status.h"
#include "engine/byte_regex.h"
#include "engine/choice_grammar.h"
#include "engine/json_schema.h"

namespace peng::server {
namespace {

absl::Status Bad(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status CheckIds(const google::protobuf::RepeatedField<int32_t>& ids,
                      absl::string_view field, int vocab) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return Bad(absl::StrCat(field, "[", i, "]: token id ", ids[i],
                              " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ConvertSampling(const v1::SamplingParams& in, const ModelContext& info,
                             SamplingParams* out) {
  if (in.has_temperature()) out->temperature = in.temperature();
  if (in.has_top_p()) out->top_p = in.top_p();
  if (in.has_top_k()) out->top_k = in.top_k();
  if (in.has_min_p()) out->min_p = in.min_p();
  if (in.has_seed()) out->seed = in.seed();
  if (in.has_repetition_penalty()) out->repetition_penalty = in.repetition_penalty();
  if (in.has_presence_penalty()) out->presence_penalty = in.presence_penalty();
  if (in.has_frequency_penalty()) out->frequency_penalty = in.frequency_penalty();
  for (const auto& [id, bias] : in.logit_bias()) out->logit_bias[id] = bias;
  if (in.has_logprobs()) {
    if (in.logprobs() < 0 || in.logprobs() > info.max_logprobs) {
      return Bad(absl::StrCat("sampling.logprobs must be in [0, ", info.max_logprobs,
                              "], got ", in.logprobs()));
    }
    out->logprobs = in.logprobs();
  }
  // SamplingParams::Validate's messages start with the parameter's name.
  if (absl::Status s = out->Validate(info.tokenizer->vocab_size()); !s.ok()) {
    return Bad(absl::StrCat("sampling.", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ConvertPrompt(const v1::GenerateRequest& in,
                                                   const Tokenizer& tok) {
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (in.text().empty()) return Bad("text: the prompt is empty");
      return tok.Encode(in.text(), /*add_bos=*/true, /*parse_special=*/true);
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = in.token_ids().ids();
      if (ids.empty()) return Bad("token_ids.ids: the prompt is empty");
      PENG_RETURN_IF_ERROR(CheckIds(ids, "token_ids.ids", tok.vocab_size()));
      return std::vector<int32_t>(ids.begin(), ids.end());
    }
    case v1::GenerateRequest::kChat:  // ToGenerateRequest renders it
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return Bad("prompt: one of 'text', 'token_ids' or 'chat' is required");
}

// A Chat as the body of a /v1/chat/completions request, whose rules render it and read its tools.
absl::StatusOr<nlohmann::ordered_json> ChatBody(const v1::Chat& chat) {
  using OJson = nlohmann::ordered_json;
  OJson body = OJson::object();
  OJson& messages = body["messages"] = OJson::array();
  for (const v1::ChatMessage& m : chat.messages()) {
    OJson msg = {{"role", m.role()}, {"content", m.content()}};
    if (!m.name().empty()) msg["name"] = m.name();
    if (!m.tool_call_id().empty()) msg["tool_call_id"] = m.tool_call_id();
    if (m.tool_calls_size() > 0) {
      OJson& calls = msg["tool_calls"] = OJson::array();
      for (const v1::ToolCall& c : m.tool_calls()) calls.push_back(ChatToolCall({c.id(), c.name(), c.arguments()}));
    }
    messages.push_back(std::move(msg));
  }
  if (chat.has_add_generation_prompt()) body["add_generation_prompt"] = chat.add_generation_prompt();
  if (chat.continue_final_message()) body["continue_final_message"] = true;
  if (!chat.chat_template_kwargs().empty()) {
    PENG_ASSIGN_OR_RETURN(body["chat_template_kwargs"],
                          ParseJsonText<OJson>(chat.chat_template_kwargs(), "chat.chat_template_kwargs"));
  }
  if (!chat.tools().empty()) {
    PENG_ASSIGN_OR_RETURN(body["tools"], ParseJsonText<OJson>(chat.tools(), "chat.tools"));
  }
  const std::string& choice = chat.tool_choice();
  if (choice == "none" || choice == "auto" || choice == "required") {
    body["tool_choice"] = choice;
  } else if (!choice.empty()) {
    body["tool_choice"] = {{"type", "function"}, {"function", {{"name", choice}}}};
  }
  if (chat.has_parallel_tool_calls()) body["parallel_tool_calls"] = chat.parallel_tool_calls();
  return body;
}

// The chat's prompt and tool constraints, by the HTTP API's rules; their messages name the
// JSON field ("messages[0].role ..."), here after "chat: ".
absl::StatusOr<ChatPrompt> ConvertChat(const v1::Chat& chat, const ModelContext& info, bool reply_constrained) {
  PENG_ASSIGN_OR_RETURN(nlohmann::ordered_json body, ChatBody(chat));
  const std::string text = body.dump();
  absl::StatusOr<ChatPrompt> prompt =
      PrepareChat(nlohmann::json::parse(text), text, info, reply_constrained);
  if (!prompt.ok() && absl::IsInvalidArgument(prompt.status())) {
    return Bad(absl::StrCat("chat: ", prompt.status().message()));
  }
  return prompt;
}

void SetLogprob(const TokenLogprob& lp, const Tokenizer& tokenizer, v1::TokenLogprob* p) {
  p->set_token_id(lp.id);
  p->set_token(tokenizer.TokenPiece(lp.id));
  p->set_logprob(lp.logprob);
  for (const auto& [id, logprob] : lp.top) {
    v1::TopLogprob* t = p->add_top_logprobs();
    t->set_token_id(id);
    t->set_token(tokenizer.TokenPiece(id));
    t->set_logprob(logprob);
  }
}

}  // namespace

absl::Status CheckModel(const std::string& model, const ModelContext& info) {
  if (model.empty() || model == info.model_name) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("model: the model `", model,
                                          "` does not exist (serving `", info.model_name, "`)"));
}

absl::StatusOr<GrpcGenerate> ToGenerateRequest(const v1::GenerateRequest& in, const ModelContext& info) {
  if (info.tokenizer == nullptr) return absl::InternalError("no tokenizer");
  const Tokenizer& tok = *info.tokenizer;
  PENG_RETURN_IF_ERROR(CheckModel(in.model(), info));

  GrpcGenerate converted;
  GenerateRequest& out = converted.request;
  // Cheap checks first, then tokenization.
  PENG_RETURN_IF_ERROR(ConvertSampling(in.sampling(), info, &out.sampling));
  if (in.has_prompt_logprobs()) {
    if (in.prompt_logprobs() < 0 || in.prompt_logprobs() > info.max_logprobs) {
      return Bad(absl::StrCat("prompt_logprobs must be in [0, ", info.max_logprobs, "], got ",
                              in.prompt_logprobs()));
    }
    out.prompt_logprobs = in.prompt_logprobs();
  }
  out.json_object = in.json_object();
  if (!in.json_schema().empty()) {
    PENG_ASSIGN_OR_RETURN(nlohmann::ordered_json schema,
                          ParseJsonText<nlohmann::ordered_json>(in.json_schema(), "json_schema"));
    absl::StatusOr<std::shared_ptr<const JsonSchema>> compiled =
        info.schemas != nullptr ? info.schemas->Compile(schema) : JsonSchema::Compile(schema);
    if (!compiled.ok()) return Bad(std::string(compiled.status().message()));
    out.json_schema = *std::move(compiled);
  }
  if (!in.choices().empty()) {
    absl::StatusOr<std::shared_ptr<const ChoiceSet>> set =
        ChoiceSet::Create(std::vector<std::string>(in.choices().begin(), in.choices().end()));
    if (!set.ok()) return Bad(absl::StrCat("choices: ", set.status().message()));
    out.guided_choice = *std::move(set);
  }
  if (!in.regex().empty()) {
    absl::StatusOr<ByteRegex> re = ByteRegex::Compile(in.regex(), ByteRegex::Use::kWholeText);
    if (!re.ok()) return Bad(absl::StrCat("regex: ", re.status().message()));
    out.guided_regex = std::make_shared<const ByteRegex>(*std::move(re));
  }
  if (out.json_object + (out.json_schema != nullptr) + (out.guided_choice != nullptr) + (out.guided_regex != nullptr) > 1) {
    return Bad("set at most one of json_object, json_schema, choices and regex");
  }
  const int64_t min_tokens = in.has_prompt_logprobs() ? 0 : 1;
  if (in.has_max_tokens() && in.max_tokens() < min_tokens) {
    return Bad(absl::StrCat("max_tokens must be at least 1", min_tokens == 0 ? " (0 with prompt_logprobs)" : "",
                            ", got ", in.max_tokens()));
  }
  PENG_RETURN_IF_ERROR(CheckIds(in.stop_token_ids(), "stop_token_ids", tok.vocab_size()));
  for (const std::string& s : in.stop()) {
    if (!s.empty()) out.stop.stop.push_back(s);
  }
  out.stop.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  out.stop.ignore_eos = in.ignore_eos();
  out.stop.include_stop_str_in_output = in.include_stop_str_in_output();
  out.priority = in.priority();

  if (in.prompt_case() == v1::GenerateRequest::kChat) {
    PENG_ASSIGN_OR_RETURN(ChatPrompt chat, ConvertChat(in.chat(), info, out.ReplyConstrained()));
    out.prompt = std::move(chat.ids);
    if (chat.reply_schema != nullptr) out.json_schema = std::move(chat.reply_schema);
    out.tool_call_schema = std::move(chat.tool_call_schema);
    converted.tools = std::move(chat.tools);
  } else {
    PENG_ASSIGN_OR_RETURN(out.prompt, ConvertPrompt(in, tok));
  }
  const int64_t prompt_len = static_cast<int64_t>(out.prompt.size());
  const char* prompt_field = in.prompt_case() == v1::GenerateRequest::kText   ? "text"
                             : in.prompt_case() == v1::GenerateRequest::kChat ? "chat"
                                                                              : "token_ids";
  if (prompt_len >= info.max_model_len) {
    return Bad(absl::StrCat(prompt_field, ": this model's maximum context length is ",
                            info.max_model_len, " tokens, but the prompt has ", prompt_len,
                            " tokens"));
  }
  if (in.has_max_tokens() && in.max_tokens() > info.max_model_len - prompt_len) {  // no overflow
    return Bad(absl::StrCat("max_tokens: this model's maximum context length is ", info.max_model_len,
                            " tokens, but ", static_cast<uint64_t>(prompt_len) + static_cast<uint64_t>(in.max_tokens()),
                            " were requested (", prompt_len, " in the prompt, ",
                            in.max_tokens(), " in the completion)"));
  }
  out.stop.max_tokens = in.has_max_tokens() ? in.max_tokens() : info.max_model_len - prompt_len;
  if (in.min_tokens() < 0 || in.min_tokens() > out.stop.max_tokens) {
    return Bad(absl::StrCat("min_tokens must be in [0, ", out.stop.max_tokens, "] (at most max_tokens), got ",
                            in.min_tokens()));
  }
  out.stop.min_tokens = in.min_tokens();
  return converted;
}

v1::FinishReason ToProtoFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAbort: return v1::FINISH_REASON_ABORT;
    case FinishReason::kNone:
    case FinishReason::kError: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AppendTokenEvent(const TokenEvent& event, const Tokenizer& tokenizer,
                      v1::GenerateResponse* message) {
  for (int32_t id : event.token_ids) message->add_token_ids(id);
  message->mutable_text()->append(event.text);
  for (const TokenLogprob& lp : event.prompt_logprobs) SetLogprob(lp, tokenizer, message->add_prompt_logprobs());
  for (const TokenLogprob& lp : event.logprobs) SetLogprob(lp, tokenizer, message->add_logprobs());
  if (event.finish_reason != FinishReason::kNone) {
    message->set_finish_reason(ToProtoFinishReason(event.finish_reason));
    v1::Usage* usage = message->mutable_usage();
    usage->set_prompt_tokens(event.prompt_tokens);
    usage->set_completion_tokens(event.completion_tokens);
    usage->set_cached_prompt_tokens(event.cached_prompt_tokens);
  }
}

void SetToolCalls(const std::vector<ToolCall>& calls, v1::GenerateResponse* message) {
  for (const ToolCall& call : calls) {
    v1::ToolCall* c = message->add_tool_calls();
    c->set_id(call.id);
    c->set_name(call.name);
    c->set_arguments(call.arguments);
  }
  if (!calls.empty() && message->finish_reason() == v1::FINISH_REASON_STOP) {
    message->set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace peng::server
