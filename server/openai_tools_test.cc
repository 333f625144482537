#include "server/openai_tools.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/json_schema.h"
#include "engine/schema_grammar.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

ToolRequest Tools(const char* body_text) {
  absl::StatusOr<ToolRequest> t = ParseToolRequest(Json::parse(body_text), body_text);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : ToolRequest{};
}

const char* kTwoTools = R"({"tools": [
  {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
     "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}}},
  {"type": "function", "function": {"name": "lookup", "description": "Search", "parameters": {}}}]})";

std::vector<std::pair<std::string, Json>> Calls(const ToolReply& r) {
  std::vector<std::pair<std::string, Json>> out;
  for (const ToolCall& c : r.calls) {
    EXPECT_EQ(c.id.rfind("call_", 0), 0u);
    EXPECT_EQ(c.id.size(), 29u);
    out.emplace_back(c.name, Json::parse(c.arguments));
  }
  return out;
}

TEST(ToolRequestTest, ChoicesAndDefaults) {
  EXPECT_EQ(Tools("{}").choice, ToolChoice::kNone);
  ToolRequest t = Tools(kTwoTools);
  EXPECT_EQ(t.choice, ToolChoice::kAuto);  // OpenAI's default with tools
  ASSERT_EQ(t.functions.size(), 2u);
  EXPECT_EQ(t.functions[1].description, "Search");
  EXPECT_EQ(t.functions[1].parameters["type"], "object");  // {} means an object of anything
  EXPECT_EQ(Tools(R"({"tool_choice": "auto"})").choice, ToolChoice::kNone);  // auto without tools
  Json body = Json::parse(kTwoTools);
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "lookup"}}}};
  body["parallel_tool_calls"] = false;
  absl::StatusOr<ToolRequest> named = ParseToolRequest(body, "");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->choice, ToolChoice::kNamed);
  EXPECT_EQ(named->named, "lookup");
  EXPECT_FALSE(named->parallel);
  EXPECT_TRUE(named->Constrained());
  // The parameters keep the client's key order when the text is at hand.
  EXPECT_EQ(t.functions[0].parameters["properties"].begin().key(), "city");
}

TEST(ToolCallsTest, ReadFromTheFormatsModelsWrite) {
  const ToolRequest t = Tools(kTwoTools);
  const std::pair<std::string, Json> paris{"get_weather", {{"city", "Paris"}, {"unit", "c"}}};
  const std::pair<std::string, Json> q{"lookup", {{"q", "x"}}};
  struct Case {
    const char* text;
    std::string content;
    std::vector<std::pair<std::string, Json>> calls;
  };
  const Case cases[] = {
      {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>", "", {paris}},
      {"Let me look.\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}</tool_call>\n"
       "<tool_call>{\"name\": \"lookup\", \"arguments\": \"{\\\"q\\\": \\\"x\\\"}\"}",  // no closing tag at the end
       "Let me look.\n", {paris, q}},
      {" {\"name\": \"lookup\", \"parameters\": {\"q\": \"x\"}}", " ", {q}},  // Llama 3 (blank content: null)
      {"<|python_tag|>{\"name\": \"lookup\", \"parameters\": {\"q\": \"x\"}}", "", {q}},
      {"[TOOL_CALLS] [{\"name\": \"lookup\", \"arguments\": {\"q\": \"x\"}}]", "", {q}},  // Mistral
      {"[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}, {\"name\": \"lookup\", "
       "\"arguments\": {\"q\": \"x\"}}]", "", {paris, q}},  // a constrained reply
      {"{\"name\": \"lookup\"}", "", {{"lookup", Json::object()}}},
      // Cut by max_tokens inside the calls: the whole calls before the cut.
      {"[{\"name\": \"lookup\", \"arguments\": {\"q\": \"x\"}}, {\"name\": \"get_weather\", \"argu", "", {q}},
      {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}</tool_call>\n"
       "<tool_call>{\"name\": \"look", "", {paris}},
      {"[{\"name\": \"lookup\", \"argu", "[{\"name\": \"lookup\", \"argu", {}},
      // Text: an unknown function, broken JSON, arguments that are not an object, JSON later on.
      {"<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>", {}},
      {"<tool_call>{\"name\": \"lookup\", \"arguments\": {</tool_call>", "<tool_call>{\"name\": \"lookup\", \"arguments\": {</tool_call>", {}},
      {"{\"name\": \"lookup\", \"arguments\": 3}", "{\"name\": \"lookup\", \"arguments\": 3}", {}},
      {"Here: {\"name\": \"lookup\"}", "Here: {\"name\": \"lookup\"}", {}},
      {"[1] is a citation", "[1] is a citation", {}},
      {"[{\"name\": \"lookup\", \"arguments\": {\"q\": \"x\"}}, 3]", "[{\"name\": \"lookup\", \"arguments\": {\"q\": \"x\"}}, 3]", {}},
      {"", "", {}},
  };
  for (const Case& c : cases) {
    const ToolReply r = ExtractToolCalls(c.text, t);
    EXPECT_EQ(r.content, c.content) << c.text;
    EXPECT_EQ(Calls(r), c.calls) << c.text;
  }
}

// A stream fed in pieces of every size releases the same text and calls as the whole reply.
TEST(ToolCallsTest, StreamingHoldsBackOnlyWhatMayBeCalls) {
  const ToolRequest t = Tools(kTwoTools);
  for (const char* text : {
           "Sure. <tool_call>{\"name\": \"lookup\", \"arguments\": {\"q\": \"x\"}}</tool_call>",
           "Plain text with <tool and < signs, and [brackets] {braces}.",
           "  {\"name\": \"lookup\", \"arguments\": {}}",
           "[not a call", "\n\n", "a <tool_call> that is not one"}) {
    const ToolReply whole = ExtractToolCalls(text, t);
    for (size_t piece = 1; piece <= 7; ++piece) {
      ToolCallStream stream(&t);
      std::string released;
      const std::string s(text);
      for (size_t i = 0; i < s.size(); i += piece) released += stream.Feed(s.substr(i, piece));
      const ToolReply end = stream.Finish();
      EXPECT_EQ(released + end.content, whole.content) << text << " in pieces of " << piece;
      EXPECT_EQ(Calls(end), Calls(whole)) << text;
    }
  }
  // Text goes out as it comes: only a tail that may start a marker waits.
  ToolCallStream stream(&t);
  EXPECT_EQ(stream.Feed("Hello"), "Hello");
  EXPECT_EQ(stream.Feed(" world <to"), " world ");
  EXPECT_EQ(stream.Feed("day>"), "<today>");
  EXPECT_EQ(stream.Feed(" {\"name\": \"lookup\"}"), " {\"name\": \"lookup\"}");  // JSON after text is text
}

bool Accepts(const JsonSchema& schema, std::string_view doc) {
  SchemaGrammar g(&schema);
  return g.FeedAll(doc) && g.Complete();
}

TEST(ToolCallsTest, ConstrainedRepliesFollowTheToolsSchemas) {
  Json body = Json::parse(kTwoTools);
  body["tools"].push_back(Json::parse(R"({"type": "function", "function": {"name": "plan",
      "parameters": {"$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
                     "type": "object", "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}}},
                     "required": ["steps"]}}})"));
  body["tool_choice"] = "required";
  absl::StatusOr<ToolRequest> t = ParseToolRequest(body, "");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(ToolCallSchema(*t), false);
  ASSERT_TRUE(schema.ok()) << schema.status() << ToolCallSchema(*t).dump();
  EXPECT_TRUE(Accepts(**schema, R"([{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "f"}}])"));
  EXPECT_TRUE(Accepts(**schema, R"([{"name": "lookup", "arguments": {}}, {"name": "plan", "arguments": {"steps": [{"n": 1}]}}])"));
  // Parameters {} declare no arguments (as a schema of an object with no properties does here).
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "lookup", "arguments": {"any": 1}}])"));
  EXPECT_FALSE(Accepts(**schema, R"([])"));
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "get_weather", "arguments": {"city": "Oslo"}}])"));
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "plan", "arguments": {"steps": [{"n": "one"}]}}])"));
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "nope", "arguments": {}}])"));

  t->choice = ToolChoice::kNamed;
  t->named = "lookup";
  t->parallel = false;
  schema = JsonSchema::Compile(ToolCallSchema(*t), false);
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_TRUE(Accepts(**schema, R"([{"name": "lookup", "arguments": {}}])"));
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "lookup", "arguments": {}}, {"name": "lookup", "arguments": {}}])"));
  EXPECT_FALSE(Accepts(**schema, R"([{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "f"}}])"));
}

TEST(ToolHistoryTest, WrittenIntoMessagesForTemplatesWithoutTools) {
  const ToolRequest t = Tools(kTwoTools);
  std::vector<ChatMessage> messages = {
      {.role = "user", .content = "Weather?"},
      {.role = "assistant", .content = "",
       .tool_calls = Json::parse(R"([{"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                       "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}}])")},
      {.role = "tool", .content = "18 C", .tool_call_id = "call_1"}};
  ASSERT_TRUE(WriteToolsIntoMessages(&t, &messages).ok());
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[0].role, "system");
  EXPECT_NE(messages[0].content.find(R"({"type": "function", "function": {"name": "get_weather", )"), std::string::npos)
      << messages[0].content;
  EXPECT_EQ(messages[2].content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>");
  EXPECT_TRUE(messages[2].tool_calls.is_null());
  EXPECT_EQ(messages[3].role, "user");
  EXPECT_EQ(messages[3].content, "<tool_response>\n18 C\n</tool_response>");

  std::vector<ChatMessage> bad = {{.role = "assistant", .content = "", .tool_calls = Json("f()")}};
  EXPECT_EQ(WriteToolsIntoMessages(nullptr, &bad).code(), absl::StatusCode::kInvalidArgument);
}

std::string ReadTemplate(const std::string& name) {
  const char* root = std::getenv("PENG_SOURCE_DIR");  // set by ctest
  std::ifstream in(std::string(root != nullptr ? root : ".") + "/server/testdata/chat_templates/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ToolHistoryTest, TemplatesWithToolsGetArgumentsAsObjects) {
  absl::StatusOr<ChatTemplate> qwen = ChatTemplate::Parse(ReadTemplate("qwen2.5.jinja"));
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_TRUE(TemplateRendersTools(*qwen));
  absl::StatusOr<ChatTemplate> smol = ChatTemplate::Parse(ReadTemplate("smollm2.jinja"));
  ASSERT_TRUE(smol.ok()) << smol.status();
  EXPECT_FALSE(TemplateRendersTools(*smol));

  std::vector<ChatMessage> messages = {
      {.role = "user", .content = "Weather?"},
      {.role = "assistant", .content = "",
       .tool_calls = Json::parse(R"([{"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                       "arguments": "{\"city\": \"Paris\"}"}}])")}};
  ASSERT_TRUE(ArgumentsAsObjects(&messages).ok());
  const Json extra = {{"tools", Json::parse(kTwoTools)["tools"]}};
  absl::StatusOr<std::string> text = qwen->Render(messages, true, "", "<|im_end|>", extra);
  ASSERT_TRUE(text.ok()) << text.status();
  // Not the JSON text of the arguments, quoted again.
  EXPECT_NE(text->find(R"({"name": "get_weather", "arguments": {"city": "Paris"}})"), std::string::npos) << *text;
  EXPECT_NE(text->find("<tools>"), std::string::npos);
}

}  // namespace
}  // namespace peng::server
