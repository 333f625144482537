#include "server/openai_tools.h"

#include <algorithm>
#include <array>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "server/json_text.h"
#include "server/openai_error.h"
#include "server/openai_request.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

constexpr size_t kMaxTools = 128;

// Where a reply's calls may start (besides a bare JSON value at its very start).
constexpr std::array<std::string_view, 3> kMarkers = {"<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"};
constexpr std::string_view kCallEnd = "</tool_call>";

bool Blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == s.npos; }

std::string_view StripLeading(std::string_view s) {
  const size_t first = s.find_first_not_of(" \t\r\n");
  return first == s.npos ? std::string_view() : s.substr(first);
}

std::string_view Strip(std::string_view s) {
  s = StripLeading(s);
  return s.substr(0, s.find_last_not_of(" \t\r\n") + 1);
}

// OpenAI's rule for function names: letters, digits, underscores and dashes, at most 64.
bool ValidName(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
         });
}

absl::StatusOr<ToolRequest::Function> ParseFunction(const OJson& tool, size_t i) {
  const std::string at = absl::StrCat("tools[", i, "]");
  const auto bad = [&](const char* what) { return BadParam("tools", absl::StrCat(at, what)); };
  if (!tool.is_object()) return bad(" must be an object");
  const auto type = tool.find("type");
  if (type == tool.end() || !type->is_string() || *type != "function") return bad(".type must be \"function\"");
  const auto fn = tool.find("function");
  if (fn == tool.end() || !fn->is_object()) return bad(".function must be an object");
  const auto name = fn->find("name");
  if (name == fn->end() || !name->is_string() || !ValidName(name->get<std::string>())) {
    return bad(".function.name must be 1-64 letters, digits, underscores or dashes");
  }
  ToolRequest::Function out;
  out.name = name->get<std::string>();
  if (const auto d = fn->find("description"); d != fn->end() && !d->is_null()) {
    if (!d->is_string()) return bad(".function.description must be a string");
    out.description = d->get<std::string>();
  }
  out.parameters = OJson{{"type", "object"}, {"properties", OJson::object()}};
  if (const auto p = fn->find("parameters"); p != fn->end() && !p->is_null()) {
    if (!p->is_object()) return bad(".function.parameters must be a JSON schema (an object)");
    out.parameters = *p;
    // Arguments are an object: a schema that does not say ({} included) means one.
    if (!p->contains("type") && !p->contains("$ref") && !p->contains("anyOf") && !p->contains("oneOf") &&
        !p->contains("allOf")) {
      out.parameters["type"] = "object";
    }
  }
  return out;
}

// A history message's tool_calls as (name, arguments object) pairs.
absl::StatusOr<std::vector<std::pair<std::string, OJson>>> HistoryCalls(const Json& calls, size_t i) {
  const auto bad = [&] {
    return BadParam("messages", absl::StrCat("messages[", i, "].tool_calls must be a list of {\"type\": \"function\", "
                                             "\"function\": {\"name\": ..., \"arguments\": ...}}"));
  };
  if (!calls.is_array()) return bad();
  std::vector<std::pair<std::string, OJson>> out;
  for (const Json& call : calls) {
    const Json* fn = call.is_object() ? Field(call, "function") : nullptr;
    const Json* name = fn != nullptr && fn->is_object() ? Field(*fn, "name") : nullptr;
    if (name == nullptr || !name->is_string()) return bad();
    OJson args = OJson::object();
    if (const Json* a = Field(*fn, "arguments")) {
      if (a->is_string()) {
        args = OJson::parse(a->get<std::string>(), nullptr, /*allow_exceptions=*/false);
        if (args.is_discarded()) args = a->get<std::string>();  // as sent: the model wrote it
      } else {
        args = OJson::parse(a->dump());
      }
    }
    out.emplace_back(name->get<std::string>(), std::move(args));
  }
  return out;
}

// JSON text as Python's json.dumps writes it (", " and ": "), the way templates and models
// trained on them show tools and calls.
std::string Dumps(const OJson& value) {
  const std::string compact = value.dump(-1, ' ', false, OJson::error_handler_t::replace);
  std::string out;
  out.reserve(compact.size() + compact.size() / 8);
  WalkJsonText(compact, [&](char c, bool structural) {
    out.push_back(c);
    if (structural && (c == ',' || c == ':')) out.push_back(' ');
  });
  return out;
}

std::string CallText(const std::string& name, const OJson& arguments) {
  return Dumps(OJson{{"name", name}, {"arguments", arguments}});
}

// Moves the `$defs` / `definitions` of one function's parameters to `defs` under `prefix`
// names, rewriting its $refs to match.
void HoistDefinitions(OJson& schema, const std::string& prefix, OJson& defs, bool top) {
  if (schema.is_array()) {
    for (OJson& e : schema) HoistDefinitions(e, prefix, defs, false);
    return;
  }
  if (!schema.is_object()) return;
  if (top) {
    for (const char* section : {"$defs", "definitions"}) {
      const auto it = schema.find(section);
      if (it == schema.end() || !it->is_object()) continue;
      OJson moved = std::move(*it);
      schema.erase(section);
      for (auto d = moved.begin(); d != moved.end(); ++d) {
        OJson def = d.value();
        HoistDefinitions(def, prefix, defs, false);
        defs[prefix + d.key()] = std::move(def);
      }
    }
  }
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    if (it.key() == "$ref" && it->is_string()) {
      const std::string ref = it->get<std::string>();
      for (const std::string_view p : {std::string_view("#/$defs/"), std::string_view("#/definitions/")}) {
        if (ref.rfind(p, 0) == 0) *it = absl::StrCat("#/$defs/", prefix, ref.substr(p.size()));
      }
    } else if (it.key() != "enum" && it.key() != "const") {
      HoistDefinitions(*it, prefix, defs, false);
    }
  }
}

// One call object, or nothing when it is not a call of a listed function.
std::optional<ToolCall> CallFrom(const OJson& v, const ToolRequest& tools) {
  if (!v.is_object()) return std::nullopt;
  const auto name = v.find("name");
  if (name == v.end() || !name->is_string() || !tools.Knows(name->get<std::string>())) return std::nullopt;
  OJson args = OJson::object();
  auto a = v.find("arguments");
  if (a == v.end()) a = v.find("parameters");
  if (a != v.end()) {
    args = a->is_string() ? OJson::parse(a->get<std::string>(), nullptr, false) : *a;
    if (!args.is_object()) return std::nullopt;
  }
  return ToolCall{RandomId("call_", 24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), name->get<std::string>(),
                  args.dump(-1, ' ', false, OJson::error_handler_t::replace)};
}

// A JSON value that is one call or an array of calls.
bool AppendCalls(std::string_view json, const ToolRequest& tools, std::vector<ToolCall>* out) {
  const OJson v = OJson::parse(Strip(json), nullptr, false);
  if (v.is_discarded()) return false;
  if (v.is_array()) {
    if (v.empty()) return false;
    for (const OJson& e : v) {
      std::optional<ToolCall> call = CallFrom(e, tools);
      if (!call) return false;
      out->push_back(*std::move(call));
    }
    return true;
  }
  std::optional<ToolCall> call = CallFrom(v, tools);
  if (call) out->push_back(*std::move(call));
  return call.has_value();
}

// An array of calls cut short (a reply that reached max_tokens): its whole elements, closed
// ("[{…}, {…}, {"na" -> "[{…}, {…}]"); empty when none is whole.
std::string WholeElements(std::string_view s) {
  s = StripLeading(s);
  if (s.empty() || s[0] != '[') return {};
  size_t end = 0, i = 0;
  int depth = 0;
  bool closed = false;  // the array ends: the reply was not cut, whatever it holds
  WalkJsonText(s, [&](char c, bool structural) {
    if (structural && (c == '[' || c == '{')) ++depth;
    if (structural && (c == ']' || c == '}')) {
      --depth;
      if (depth == 1) end = i + 1;
      if (depth == 0) closed = true;
    }
    ++i;
  });
  return end == 0 || closed ? std::string() : std::string(s.substr(0, end)) + "]";
}

// The calls of `s`, which starts where calls may (CallsStart); empty when it does not hold
// calls in any of the formats. A reply cut inside its calls keeps the calls that are whole.
std::vector<ToolCall> ParseCalls(std::string_view s, const ToolRequest& tools) {
  std::vector<ToolCall> calls;
  if (s.substr(0, kMarkers[0].size()) == kMarkers[0]) {
    while (s.substr(0, kMarkers[0].size()) == kMarkers[0]) {
      s.remove_prefix(kMarkers[0].size());
      const size_t end = s.find(kCallEnd);
      if (!AppendCalls(s.substr(0, end), tools, &calls)) {
        if (end == s.npos) return calls;  // a last block cut short
        return {};
      }
      if (end == s.npos) break;
      s = StripLeading(s.substr(end + kCallEnd.size()));
    }
    return calls;
  }
  for (const std::string_view marker : {kMarkers[1], kMarkers[2]}) {
    if (s.substr(0, marker.size()) == marker) s.remove_prefix(marker.size());
  }
  if (AppendCalls(s, tools, &calls)) return calls;
  calls.clear();
  const std::string whole = WholeElements(s);
  if (whole.empty() || !AppendCalls(whole, tools, &calls)) return {};
  return calls;
}

// Where calls may start in `text`: the first marker, or a JSON value that opens the reply.
size_t CallsStart(std::string_view text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != text.npos && (text[first] == '{' || text[first] == '[')) return first;
  size_t at = text.npos;
  for (const std::string_view m : kMarkers) at = std::min(at, text.find(m));
  return at;
}


}  // namespace

OJson ChatToolCall(const ToolCall& call) {
  return OJson{{"id", call.id}, {"type", "function"}, {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
}

bool ToolRequest::Knows(std::string_view name) const {
  return std::any_of(functions.begin(), functions.end(), [&](const Function& f) { return f.name == name; });
}

absl::StatusOr<ToolRequest> ParseToolRequest(const Json& body, std::string_view raw_body) {
  ToolRequest out;
  if (const Json* tools = Field(body, "tools")) {
    if (!tools->is_array()) return BadParam("tools", "'tools' must be a list of tools");
    if (tools->size() > kMaxTools) {
      return BadParam("tools", absl::StrCat("at most ", kMaxTools, " tools are supported, got ", tools->size()));
    }
    const OJson ordered = InClientOrder(*tools, raw_body, {"tools"});
    absl::flat_hash_set<std::string> names;
    for (size_t i = 0; i < ordered.size(); ++i) {
      PENG_ASSIGN_OR_RETURN(ToolRequest::Function f, ParseFunction(ordered[i], i));
      if (!names.insert(f.name).second) {
        return BadParam("tools", absl::StrCat("tools[", i, "]: the function '", f.name, "' is given twice"));
      }
      out.functions.push_back(std::move(f));
    }
  }
  const Json* tc = Field(body, "tool_choice");
  if (tc == nullptr) {
    out.choice = out.functions.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
  } else if (tc->is_string()) {
    const std::string& c = tc->get_ref<const std::string&>();
    if (c == "none") {
      out.choice = ToolChoice::kNone;
    } else if (c == "auto") {
      out.choice = out.functions.empty() ? ToolChoice::kNone : ToolChoice::kAuto;
    } else if (c == "required") {
      out.choice = ToolChoice::kRequired;
    } else {
      return BadParam("tool_choice", absl::StrCat("tool_choice '", c, "' is not one of none, auto, required "
                                                  "or {\"type\": \"function\", \"function\": {\"name\": ...}}"));
    }
  } else if (tc->is_object()) {
    const Json* fn = Field(*tc, "function");
    const Json* name = fn != nullptr && fn->is_object() ? Field(*fn, "name") : nullptr;
    const Json* type = Field(*tc, "type");
    if (type == nullptr || *type != "function" || name == nullptr || !name->is_string()) {
      return BadParam("tool_choice", "tool_choice must be none, auto, required or "
                                     "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    out.choice = ToolChoice::kNamed;
    out.named = name->get<std::string>();
    if (!out.functions.empty() && !out.Knows(out.named)) {
      return BadParam("tool_choice", absl::StrCat("tool_choice names the function '", out.named,
                                                  "', which is not among the tools"));
    }
  } else {
    return BadParam("tool_choice", "'tool_choice' must be a string or an object");
  }
  if (out.Constrained() && out.functions.empty()) {
    return BadParam("tool_choice", "tool_choice 'required' or a named function needs tools");
  }
  if (const Json* p = Field(body, "parallel_tool_calls")) {
    if (!p->is_boolean()) return BadParam("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
    out.parallel = p->get<bool>();
  }
  return out;
}

bool TemplateRendersTools(const ChatTemplate& chat_template) {
  return chat_template.source().find("tools") != std::string::npos;
}

absl::Status WriteToolsIntoMessages(const ToolRequest* tools, std::vector<ChatMessage>* messages) {
  for (size_t i = 0; i < messages->size(); ++i) {
    ChatMessage& m = (*messages)[i];
    if (!m.tool_calls.is_null()) {
      PENG_ASSIGN_OR_RETURN(auto calls, HistoryCalls(m.tool_calls, i));
      for (const auto& [name, args] : calls) {
        if (!m.content.empty()) m.content += "\n";
        absl::StrAppend(&m.content, "<tool_call>\n", CallText(name, args), "\n</tool_call>");
      }
      m.tool_calls = nullptr;
    }
    if (m.role == "tool") {
      m.role = "user";
      m.content = absl::StrCat("<tool_response>\n", m.content, "\n</tool_response>");
      m.tool_call_id.clear();
    }
  }
  if (tools == nullptr) return absl::OkStatus();
  std::string listing;
  for (const ToolRequest::Function& f : tools->functions) {
    OJson fn{{"name", f.name}};
    if (!f.description.empty()) fn["description"] = f.description;
    fn["parameters"] = f.parameters;
    absl::StrAppend(&listing, Dumps(OJson{{"type", "function"}, {"function", std::move(fn)}}), "\n");
  }
  const std::string system = absl::StrCat(
      "# Tools\n\nYou may call one or more of these functions to answer the user. Their signatures are "
      "within <tools></tools>:\n<tools>\n",
      listing,
      "</tools>\n\nTo call a function, write a JSON object with its name and arguments within "
      "<tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
      "</tool_call>");
  if (!messages->empty() && messages->front().role == "system") {
    messages->front().content = absl::StrCat(messages->front().content, "\n\n", system);
  } else {
    messages->insert(messages->begin(), ChatMessage{.role = "system", .content = system});
  }
  return absl::OkStatus();
}

absl::Status ArgumentsAsObjects(std::vector<ChatMessage>* messages) {
  for (size_t i = 0; i < messages->size(); ++i) {
    ChatMessage& m = (*messages)[i];
    if (m.tool_calls.is_null()) continue;
    PENG_RETURN_IF_ERROR(HistoryCalls(m.tool_calls, i).status());
    for (Json& call : m.tool_calls) {
      Json& fn = call["function"];
      if (const auto a = fn.find("arguments"); a != fn.end() && a->is_string()) {
        Json parsed = Json::parse(a->get<std::string>(), nullptr, false);
        if (parsed.is_object()) *a = std::move(parsed);
      }
    }
  }
  return absl::OkStatus();
}

namespace {

// One call of the (named) functions, and the $defs its $refs point to.
std::pair<OJson, OJson> CallSchema(const ToolRequest& tools) {
  OJson defs = OJson::object();
  OJson branches = OJson::array();
  for (size_t i = 0; i < tools.functions.size(); ++i) {
    const ToolRequest::Function& f = tools.functions[i];
    if (tools.choice == ToolChoice::kNamed && f.name != tools.named) continue;
    OJson parameters = f.parameters;
    HoistDefinitions(parameters, absl::StrCat("f", i, "_"), defs, true);
    branches.push_back(OJson{{"type", "object"},
                             {"properties", {{"name", {{"const", f.name}}}, {"arguments", std::move(parameters)}}},
                             {"required", {"name", "arguments"}}});
  }
  OJson call = branches.size() == 1 ? branches[0] : OJson{{"anyOf", std::move(branches)}};
  return {std::move(call), std::move(defs)};
}

}  // namespace

OJson ToolCallSchema(const ToolRequest& tools) {
  auto [call, defs] = CallSchema(tools);
  OJson schema{{"type", "array"}, {"minItems", 1}};
  if (!tools.parallel) schema["maxItems"] = 1;
  schema["items"] = std::move(call);
  if (!defs.empty()) schema["$defs"] = std::move(defs);
  return schema;
}

OJson OneToolCallSchema(const ToolRequest& tools) {
  auto [call, defs] = CallSchema(tools);
  if (!defs.empty()) call["$defs"] = std::move(defs);
  return call;
}

bool RepliesWithToolCallTags(const ChatTemplate& chat_template) {
  return !TemplateRendersTools(chat_template) || chat_template.source().find("<tool_call>") != std::string::npos;
}

ToolReply ExtractToolCalls(std::string_view text, const ToolRequest& tools) {
  ToolReply reply;
  const size_t start = CallsStart(text);
  if (start != text.npos) reply.calls = ParseCalls(text.substr(start), tools);
  reply.content = std::string(reply.calls.empty() ? text : text.substr(0, start));
  return reply;
}

std::string ToolCallStream::Feed(std::string_view text) {
  pending_ += text;
  if (holding_) return {};
  if (!wrote_text_) {
    const size_t first = pending_.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return {};  // blank so far: a JSON call may still open the reply
    if (pending_[first] == '{' || pending_[first] == '[') {
      holding_ = true;
      return {};
    }
  }
  size_t out = pending_.size();
  size_t marker = std::string::npos;
  for (const std::string_view m : kMarkers) marker = std::min(marker, pending_.find(m));
  if (marker != std::string::npos) {
    out = marker;
    holding_ = true;
  } else {
    // Keep back a tail that a marker may start with.
    for (const std::string_view m : kMarkers) {
      for (size_t n = std::min(m.size() - 1, pending_.size()); n > 0; --n) {
        if (pending_.compare(pending_.size() - n, n, m.substr(0, n)) == 0) {
          out = std::min(out, pending_.size() - n);
          break;
        }
      }
    }
  }
  std::string ready = pending_.substr(0, out);
  pending_.erase(0, out);
  if (!Blank(ready)) wrote_text_ = true;
  return ready;
}

ToolReply ToolCallStream::Finish() {
  if (!holding_) return ToolReply{std::exchange(pending_, {}), {}};
  ToolReply reply = ExtractToolCalls(pending_, *tools_);
  pending_.clear();
  return reply;
}

}  // namespace peng::server
