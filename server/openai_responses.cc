#include "server/openai_responses.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/json_text.h"
#include "server/openai_error.h"
#include "server/sse.h"

namespace peng::server {
namespace {

using OJson = nlohmann::ordered_json;

// Settings passed on as they are (same name, same meaning) and settings read here.
const absl::flat_hash_set<std::string>& PassedOn() {
  static const auto* kSet = new absl::flat_hash_set<std::string>{
      "model", "temperature", "top_p", "user", "stream", "parallel_tool_calls", "seed"};
  return *kSet;
}
const absl::flat_hash_set<std::string>& Understood() {
  static const auto* kSet = new absl::flat_hash_set<std::string>{
      "input", "instructions", "max_output_tokens", "text", "tools", "tool_choice", "previous_response_id",
      "background", "store", "metadata", "truncation", "include", "reasoning", "service_tier",
      "prompt_cache_key", "safety_identifier"};
  return *kSet;
}

// A message item's content as chat content parts (text only).
absl::StatusOr<OJson> MessageContent(const OJson& content, size_t i) {
  if (content.is_string()) return content;
  if (!content.is_array()) return BadParam("input", absl::StrCat("input[", i, "].content must be a string or a list of parts"));
  OJson parts = OJson::array();
  for (const OJson& part : content) {
    const OJson* type = part.is_object() ? Field(part, "type") : nullptr;
    const OJson* text = part.is_object() ? Field(part, "text") : nullptr;
    if (type == nullptr || !type->is_string()) {
      return BadParam("input", absl::StrCat("input[", i, "].content parts must be objects with a 'type'"));
    }
    const std::string t = type->get<std::string>();
    if (t != "input_text" && t != "output_text" && t != "text") {
      return BadParam("input", absl::StrCat("input[", i, "].content: part type '", t, "' is not supported (text only)"));
    }
    if (text == nullptr || !text->is_string()) return BadParam("input", absl::StrCat("input[", i, "].content: a text part needs 'text'"));
    parts.push_back(OJson{{"type", "text"}, {"text", *text}});
  }
  return parts;
}

// input (text or items) as chat messages.
absl::StatusOr<OJson> InputMessages(const OJson& input) {
  if (input.is_string()) return OJson::array({OJson{{"role", "user"}, {"content", input}}});
  if (!input.is_array() || input.empty()) return BadParam("input", "'input' must be a string or a non-empty list of items");
  OJson messages = OJson::array();
  for (size_t i = 0; i < input.size(); ++i) {
    const OJson& item = input[i];
    if (!item.is_object()) return BadParam("input", absl::StrCat("input[", i, "] must be an object"));
    const OJson* type = Field(item, "type");
    const std::string t = type != nullptr && type->is_string() ? type->get<std::string>() : "message";
    if (t == "message") {
      const OJson* role = Field(item, "role");
      if (role == nullptr || !role->is_string()) return BadParam("input", absl::StrCat("input[", i, "].role must be a string"));
      const OJson* content = Field(item, "content");
      if (content == nullptr) return BadParam("input", absl::StrCat("input[", i, "].content is required"));
      absl::StatusOr<OJson> c = MessageContent(*content, i);
      if (!c.ok()) return c.status();
      messages.push_back(OJson{{"role", *role}, {"content", *std::move(c)}});
    } else if (t == "function_call") {
      const OJson* name = Field(item, "name");
      const OJson* call_id = Field(item, "call_id");
      const OJson* arguments = Field(item, "arguments");
      if (name == nullptr || !name->is_string() || call_id == nullptr || !call_id->is_string()) {
        return BadParam("input", absl::StrCat("input[", i, "]: a function_call needs 'name' and 'call_id'"));
      }
      OJson call{{"id", *call_id},
                 {"type", "function"},
                 {"function", {{"name", *name}, {"arguments", arguments != nullptr ? *arguments : OJson("{}")}}}};
      // Calls that follow an assistant message (or each other) belong to it, as in chat.
      if (!messages.empty() && messages.back()["role"] == "assistant") {
        OJson& last = messages.back();
        if (!last.contains("tool_calls")) last["tool_calls"] = OJson::array();
        last["tool_calls"].push_back(std::move(call));
      } else {
        messages.push_back(OJson{{"role", "assistant"}, {"content", nullptr}, {"tool_calls", OJson::array({call})}});
      }
    } else if (t == "function_call_output") {
      const OJson* call_id = Field(item, "call_id");
      const OJson* output = Field(item, "output");
      if (call_id == nullptr || !call_id->is_string() || output == nullptr) {
        return BadParam("input", absl::StrCat("input[", i, "]: a function_call_output needs 'call_id' and 'output'"));
      }
      messages.push_back(OJson{{"role", "tool"},
                               {"tool_call_id", *call_id},
                               {"content", output->is_string() ? *output : OJson(output->dump())}});
    } else {
      return BadParam("input", absl::StrCat("input[", i, "]: items of type '", t,
                                       "' are not supported (message, function_call, function_call_output)"));
    }
  }
  return messages;
}

// The input as the API's items, each with an id (for input_items): text as a user message,
// message content as input_text parts (output_text for the assistant's), calls and their
// outputs as they came. `id` (the response's) makes the ids.
OJson InputItems(const OJson& input, const std::string& id) {
  const std::string suffix = id.substr(id.find('_') + 1);
  const auto item_id = [&](const char* prefix, size_t i) { return absl::StrCat(prefix, suffix, "_", i); };
  OJson items = OJson::array();
  const OJson list = input.is_string() ? OJson::array({OJson{{"type", "message"}, {"role", "user"}, {"content", input}}})
                                       : input;
  if (!list.is_array()) return items;
  for (size_t i = 0; i < list.size(); ++i) {
    const OJson& item = list[i];
    const OJson* type = Field(item, "type");
    const std::string t = type != nullptr && type->is_string() ? type->get<std::string>() : "message";
    const OJson* given_id = Field(item, "id");
    if (t == "message") {
      const std::string role = item.value("role", "user");
      const char* part_type = role == "assistant" ? "output_text" : "input_text";
      OJson content = OJson::array();
      const OJson& c = item["content"];
      if (c.is_string()) {
        content.push_back(OJson{{"type", part_type}, {"text", c}});
      } else if (c.is_array()) {
        for (const OJson& part : c) content.push_back(OJson{{"type", part_type}, {"text", part.value("text", "")}});
      }
      items.push_back(OJson{{"id", given_id != nullptr && given_id->is_string() ? *given_id : OJson(item_id("msg_", i))},
                            {"type", "message"}, {"role", role}, {"content", std::move(content)},
                            {"status", "completed"}});
    } else {
      OJson out = item;
      if (given_id == nullptr || !given_id->is_string()) {
        out["id"] = item_id(t == "function_call" ? "fc_" : "fco_", i);
      }
      if (!out.contains("status")) out["status"] = "completed";
      items.push_back(std::move(out));
    }
  }
  return items;
}

// text.format as response_format (null for plain text).
absl::StatusOr<OJson> ResponseFormat(const OJson& text) {
  if (!text.is_object()) return BadParam("text", "'text' must be an object");
  const OJson* format = Field(text, "format");
  if (format == nullptr) return OJson();
  const OJson* type = format->is_object() ? Field(*format, "type") : nullptr;
  if (type == nullptr || !type->is_string()) return BadParam("text", "'text.format' must be an object with a string 'type'");
  if (*type == "text") return OJson();
  if (*type == "json_object") return OJson{{"type", "json_object"}};
  if (*type != "json_schema") {
    return BadParam("text", absl::StrCat("text.format type '", type->get<std::string>(),
                                    "' is not supported (text, json_object, json_schema)"));
  }
  OJson schema{{"name", format->value("name", "response")}};
  if (const OJson* s = Field(*format, "schema")) schema["schema"] = *s;
  if (const OJson* s = Field(*format, "strict")) schema["strict"] = *s;
  return OJson{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
}

absl::StatusOr<OJson> ChatTools(const OJson& tools) {
  if (!tools.is_array()) return BadParam("tools", "'tools' must be a list of tools");
  OJson out = OJson::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const OJson& t = tools[i];
    const OJson* type = t.is_object() ? Field(t, "type") : nullptr;
    if (type == nullptr || *type != "function") {
      return BadParam("tools", absl::StrCat("tools[", i, "]: only function tools are supported (type \"function\")"));
    }
    OJson fn = OJson::object();
    for (const char* key : {"name", "description", "parameters", "strict"}) {
      if (const OJson* v = Field(t, key)) fn[key] = *v;
    }
    out.push_back(OJson{{"type", "function"}, {"function", std::move(fn)}});
  }
  return out;
}

}  // namespace

absl::StatusOr<ResponsesChat> ResponsesToChat(const OJson& request, const ResponseStore* store,
                                              std::vector<std::string>* ignored) {
  if (!request.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  ResponsesChat out;
  OJson& chat = out.chat = OJson::object();
  for (auto it = request.begin(); it != request.end(); ++it) {
    if (PassedOn().contains(it.key())) {
      chat[it.key()] = it.value();
    } else if (!Understood().contains(it.key()) && ignored != nullptr) {
      ignored->push_back(it.key());
    }
  }
  if (const OJson* bg = Field(request, "background"); bg != nullptr && *bg != false) {
    return BadParam("background", "background responses are not supported by this server");
  }
  if (const OJson* st = Field(request, "store")) {
    if (!st->is_boolean()) return BadParam("store", "'store' must be a boolean");
    out.store = st->get<bool>();
  }
  OJson messages = OJson::array();
  if (const OJson* prev = Field(request, "previous_response_id")) {
    if (!prev->is_string()) return BadParam("previous_response_id", "'previous_response_id' must be a string");
    std::shared_ptr<const ResponseStore::Entry> entry = store != nullptr ? store->Get(prev->get<std::string>()) : nullptr;
    if (entry == nullptr) {
      return WithParam(absl::NotFoundError(absl::StrCat("Previous response with id '", prev->get<std::string>(),
                                                        "' not found (never stored, deleted, or evicted).")),
                       "previous_response_id");
    }
    messages = entry->messages;
  }
  const OJson* input = Field(request, "input");
  if (input == nullptr) return BadParam("input", "'input' is required");
  absl::StatusOr<OJson> new_messages = InputMessages(*input);
  if (!new_messages.ok()) return new_messages.status();
  for (OJson& m : *new_messages) messages.push_back(std::move(m));
  out.conversation = messages;
  if (const OJson* instructions = Field(request, "instructions")) {
    if (!instructions->is_string()) return BadParam("instructions", "'instructions' must be a string");
    messages.insert(messages.begin(), OJson{{"role", "system"}, {"content", *instructions}});
  }
  chat["messages"] = std::move(messages);
  if (const OJson* m = Field(request, "max_output_tokens")) chat["max_completion_tokens"] = *m;
  if (const OJson* text = Field(request, "text")) {
    absl::StatusOr<OJson> rf = ResponseFormat(*text);
    if (!rf.ok()) return rf.status();
    if (!rf->is_null()) chat["response_format"] = *std::move(rf);
  }
  if (const OJson* tools = Field(request, "tools")) {
    absl::StatusOr<OJson> t = ChatTools(*tools);
    if (!t.ok()) return t.status();
    chat["tools"] = *std::move(t);
  }
  if (const OJson* tc = Field(request, "tool_choice")) {
    // {"type": "function", "name": ...} names a function as chat's {"function": {"name": ...}}.
    const OJson* name = tc->is_object() ? Field(*tc, "name") : nullptr;
    chat["tool_choice"] = name != nullptr ? OJson{{"type", "function"}, {"function", {{"name", *name}}}} : *tc;
  }
  return out;
}

absl::Status AsResponsesError(absl::Status status) {
  const std::optional<std::string> param = ParamOf(status);
  if (!param) return status;
  static const std::pair<const char*, const char*> kNames[] = {
      {"messages", "input"}, {"max_completion_tokens", "max_output_tokens"}, {"response_format", "text"}};
  for (const auto& [chat, responses] : kNames) {
    if (*param == chat) return WithParam(std::move(status), responses);
  }
  return status;
}

ResponsesResponder::ResponsesResponder(const CompletionJob& job, OJson request, const Tokenizer& tokenizer,
                                       std::string id, int64_t created, ResponseStore* store, OJson conversation)
    : job_(job),
      request_(std::move(request)),
      inner_(job, tokenizer, id, created),
      id_(std::move(id)),
      created_(created),
      store_(store),
      conversation_(std::move(conversation)),
      message_id_(RandomId("msg_", 32)) {
  if (job_.tools != nullptr) calls_.emplace(job_.tools.get());
}

OJson ResponsesResponder::Response(const char* status, OJson output) const {
  const auto echo = [&](const char* key, OJson fallback) {
    const OJson* v = Field(request_, key);
    return v != nullptr ? *v : fallback;
  };
  OJson r{{"id", id_}, {"object", "response"}, {"created_at", created_}, {"status", status}, {"error", nullptr}};
  r["incomplete_details"] = std::string_view(status) == "incomplete"
                                ? OJson{{"reason", inner_.finish(0) == FinishReason::kLength ? "max_output_tokens"
                                                                                             : "interrupted"}}
                                : OJson();
  r["instructions"] = echo("instructions", nullptr);
  r["max_output_tokens"] = echo("max_output_tokens", nullptr);
  r["model"] = job_.model;
  r["output"] = std::move(output);
  r["parallel_tool_calls"] = echo("parallel_tool_calls", true);
  r["previous_response_id"] = echo("previous_response_id", nullptr);
  r["reasoning"] = {{"effort", nullptr}, {"summary", nullptr}};
  r["store"] = store_ != nullptr;
  r["temperature"] = echo("temperature", 1.0);
  r["text"] = echo("text", OJson{{"format", {{"type", "text"}}}});
  r["tool_choice"] = echo("tool_choice", "auto");
  r["tools"] = echo("tools", OJson::array());
  r["top_p"] = echo("top_p", 1.0);
  r["truncation"] = "disabled";
  r["user"] = echo("user", nullptr);
  r["metadata"] = echo("metadata", OJson::object());
  if (std::string_view(status) == "in_progress") {
    r["usage"] = nullptr;
  } else {
    const OJson u = inner_.Usage();
    r["usage"] = {{"input_tokens", u["prompt_tokens"]},
                  {"input_tokens_details", {{"cached_tokens", u["prompt_tokens_details"]["cached_tokens"]}}},
                  {"output_tokens", u["completion_tokens"]},
                  {"output_tokens_details", {{"reasoning_tokens", 0}}},
                  {"total_tokens", u["total_tokens"]}};
  }
  return r;
}

OJson ResponsesResponder::MessageItem(const std::string& text, const char* status) const {
  OJson content = OJson::array();
  if (std::string_view(status) == "completed") {
    content.push_back(OJson{{"type", "output_text"}, {"text", text}, {"annotations", OJson::array()}});
  }
  return OJson{{"type", "message"}, {"id", message_id_}, {"status", status}, {"role", "assistant"},
               {"content", std::move(content)}};
}

OJson ResponsesResponder::CallItem(const ToolCall& call, size_t k, const char* status) const {
  return OJson{{"type", "function_call"},
               {"id", absl::StrCat("fc_", message_id_.substr(4), "_", k)},
               {"call_id", call.id},
               {"name", call.name},
               {"arguments", std::string_view(status) == "completed" ? call.arguments : ""},
               {"status", status}};
}

OJson ResponsesResponder::OutputItems(const ToolReply& reply) const {
  OJson items = OJson::array();
  if (reply.HasContent()) items.push_back(MessageItem(reply.content, "completed"));
  for (size_t k = 0; k < reply.calls.size(); ++k) items.push_back(CallItem(reply.calls[k], k, "completed"));
  return items;
}

const char* ResponsesResponder::FinalStatus() const {
  return inner_.finish(0) == FinishReason::kStop ? "completed" : "incomplete";
}

std::string ResponsesResponder::Body() const {
  const ToolReply reply = job_.tools != nullptr ? ExtractToolCalls(inner_.text(0), *job_.tools)
                                                : ToolReply{inner_.text(0), {}};
  const OJson response = Response(FinalStatus(), OutputItems(reply));
  Save(response, reply);
  return DumpJson(response);
}

void ResponsesResponder::Save(const OJson& response, const ToolReply& reply) const {
  if (store_ == nullptr) return;
  // The reply as chat's assistant message, after the conversation it answers.
  OJson message{{"role", "assistant"}, {"content", reply.HasContent() ? OJson(reply.content) : OJson()}};
  if (!reply.calls.empty()) {
    OJson& out = message["tool_calls"] = OJson::array();
    for (const ToolCall& c : reply.calls) out.push_back(ChatToolCall(c));
  }
  ResponseStore::Entry entry{response, conversation_.is_array() ? conversation_ : OJson::array(),
                             InputItems(request_.contains("input") ? request_["input"] : OJson(), id_)};
  entry.messages.push_back(std::move(message));
  store_->Put(id_, std::move(entry));
}

std::string ResponsesResponder::Event(OJson event) {
  event["sequence_number"] = sequence_++;
  const std::string type = event["type"].get<std::string>();
  return absl::StrCat("event: ", type, "\n", SseEvent(DumpJson(event)));
}

std::vector<std::string> ResponsesResponder::StreamStart() {
  const OJson r = Response("in_progress", OJson::array());
  return {Event({{"type", "response.created"}, {"response", r}}),
          Event({{"type", "response.in_progress"}, {"response", r}})};
}

std::vector<std::string> ResponsesResponder::StreamEvent(int prompt_index, const TokenEvent& event) {
  if (done()) return {};
  inner_.Collect(prompt_index, event);
  std::string text = calls_ ? calls_->Feed(event.text) : event.text;
  std::vector<ToolCall> calls;
  if (done() && calls_) {
    ToolReply reply = calls_->Finish();
    if (reply.HasContent()) text += reply.content;
    calls = std::move(reply.calls);
  }
  std::vector<std::string> out;
  const OJson where{{"item_id", message_id_}, {"output_index", 0}, {"content_index", 0}};
  const auto at = [&](OJson e) {
    e.update(where);
    return e;
  };
  if (!text.empty() && !message_open_) {
    message_open_ = true;
    out.push_back(Event({{"type", "response.output_item.added"}, {"output_index", 0},
                         {"item", MessageItem("", "in_progress")}}));
    out.push_back(Event(at({{"type", "response.content_part.added"},
                            {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", OJson::array()}}}})));
  }
  if (!text.empty()) {
    streamed_ += text;
    out.push_back(Event(at({{"type", "response.output_text.delta"}, {"delta", text}, {"logprobs", OJson::array()}})));
  }
  if (!done()) return out;
  if (message_open_) {
    const OJson part{{"type", "output_text"}, {"text", streamed_}, {"annotations", OJson::array()}};
    out.push_back(Event(at({{"type", "response.output_text.done"}, {"text", streamed_}, {"logprobs", OJson::array()}})));
    out.push_back(Event(at({{"type", "response.content_part.done"}, {"part", part}})));
    out.push_back(Event({{"type", "response.output_item.done"}, {"output_index", 0},
                         {"item", MessageItem(streamed_, "completed")}}));
  }
  for (size_t k = 0; k < calls.size(); ++k) {
    const int index = static_cast<int>(k) + (message_open_ ? 1 : 0);
    const OJson item = CallItem(calls[k], k, "completed");
    out.push_back(Event({{"type", "response.output_item.added"}, {"output_index", index},
                         {"item", CallItem(calls[k], k, "in_progress")}}));
    out.push_back(Event({{"type", "response.function_call_arguments.delta"}, {"item_id", item["id"]},
                         {"output_index", index}, {"delta", calls[k].arguments}}));
    out.push_back(Event({{"type", "response.function_call_arguments.done"}, {"item_id", item["id"]},
                         {"output_index", index}, {"arguments", calls[k].arguments}}));
    out.push_back(Event({{"type", "response.output_item.done"}, {"output_index", index}, {"item", item}}));
  }
  const char* status = FinalStatus();
  OJson items = OJson::array();
  if (message_open_) items.push_back(MessageItem(streamed_, "completed"));
  for (size_t k = 0; k < calls.size(); ++k) items.push_back(CallItem(calls[k], k, "completed"));
  OJson response = Response(status, std::move(items));
  Save(response, ToolReply{streamed_, calls});
  out.push_back(Event({{"type", std::string_view(status) == "completed" ? "response.completed" : "response.incomplete"},
                       {"response", std::move(response)}}));
  return out;
}

std::vector<std::string> ResponsesResponder::StreamError(const ApiError& error) {
  OJson failed = Response("failed", OJson::array());
  failed["error"] = {{"code", "server_error"}, {"message", error.message}};
  return {Event({{"type", "error"}, {"code", "server_error"}, {"message", error.message}, {"param", nullptr}}),
          Event({{"type", "response.failed"}, {"response", std::move(failed)}})};
}

absl::StatusOr<OJson> ListInputItems(const ResponseStore& store, const std::string& id,
                                     const std::vector<std::pair<std::string, std::string>>& query) {
  int64_t limit = 20;
  bool ascending = false;
  std::string after;
  for (const auto& [key, value] : query) {
    if (key == "limit") {
      if (!absl::SimpleAtoi(value, &limit) || limit < 1 || limit > 100) {
        return BadParam("limit", absl::StrCat("'limit' must be an integer in [1, 100], got '", value, "'"));
      }
    } else if (key == "order") {
      if (value != "asc" && value != "desc") return BadParam("order", absl::StrCat("'order' must be 'asc' or 'desc', got '", value, "'"));
      ascending = value == "asc";
    } else if (key == "after") {
      after = value;
    }  // include[] and others: nothing to add (the items hold no more than their text)
  }
  std::shared_ptr<const ResponseStore::Entry> entry = store.Get(id);
  if (entry == nullptr) {
    return WithParam(absl::NotFoundError(absl::StrCat("Response with id '", id, "' not found.")), "response_id");
  }
  std::vector<const OJson*> items;
  for (const OJson& item : entry->input_items) items.push_back(&item);
  if (!ascending) std::reverse(items.begin(), items.end());
  size_t start = 0;
  if (!after.empty()) {
    while (start < items.size() && (*items[start])["id"] != after) ++start;
    if (start == items.size()) return BadParam("after", absl::StrCat("no input item with id '", after, "' in this response"));
    ++start;
  }
  OJson page{{"object", "list"}, {"data", OJson::array()}};
  for (size_t k = start; k < items.size() && k < start + static_cast<size_t>(limit); ++k) page["data"].push_back(*items[k]);
  page["first_id"] = page["data"].empty() ? OJson() : page["data"].front()["id"];
  page["last_id"] = page["data"].empty() ? OJson() : page["data"].back()["id"];
  page["has_more"] = start + static_cast<size_t>(limit) < items.size();
  return page;
}

}  // namespace peng::server
