#include "engine/tool_call_grammar.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace peng {
namespace {

using OJson = nlohmann::ordered_json;

std::shared_ptr<const JsonSchema> CallSchema() {
  auto s = JsonSchema::Compile(OJson::parse(R"({"anyOf": [
      {"type": "object", "properties": {"name": {"const": "get_weather"},
        "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
       "required": ["name", "arguments"]},
      {"type": "object", "properties": {"name": {"const": "ping"}, "arguments": {"type": "object", "properties": {}}},
       "required": ["name", "arguments"]}]})"),
                               /*object_root=*/false);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

TEST(ToolCallBlockGrammarTest, OneCallThenTheClosingTag) {
  const auto schema = CallSchema();
  const auto accepts = [&](std::string_view text) {
    ToolCallBlockGrammar g(schema.get());
    return g.FeedAll(text) && g.Complete();
  };
  EXPECT_TRUE(accepts("\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"));
  EXPECT_TRUE(accepts("{\"name\":\"ping\",\"arguments\":{}}</tool_call>"));
  EXPECT_FALSE(accepts("{\"name\": \"ping\", \"arguments\": {}}"));  // no closing tag yet
  EXPECT_FALSE(accepts("{\"name\": \"ping\", \"arguments\": {}} and </tool_call>"));
  EXPECT_FALSE(accepts("{\"name\": \"pong\", \"arguments\": {}}</tool_call>"));
  EXPECT_FALSE(accepts("{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>"));  // city is required
  EXPECT_FALSE(accepts("{\"name\": \"ping\", \"arguments\": {}}</tool_call> "));  // nothing after the tag
}

// A toy vocabulary: the text is free until "<tool_call>" is written (in pieces), then only a
// call of the schema and the closing tag, then free again.
TEST(ToolCallTriggerTest, FreeTextThenAConstrainedBlockThenFreeText) {
  auto vocab = std::make_shared<JsonVocabulary>();
  const std::vector<std::string> pieces = {"Hello", " <", "tool", "_call", ">\n", "{\"name\": \"", "ping",
                                           "get_weather", "\", \"arguments\": {", "}}", "\n</tool_call>", "!",
                                           "<tool_call>{", "<tool_call>x", "\"name\": \""};
  for (const std::string& p : pieces) {
    vocab->pieces.push_back(p);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->pieces.push_back("");
  vocab->kinds.push_back(JsonVocabulary::Kind::kEndOfGeneration);
  vocab->Index();
  const int eos = static_cast<int>(pieces.size());
  const auto id = [&](std::string_view p) { return static_cast<int>(std::find(pieces.begin(), pieces.end(), p) - pieces.begin()); };
  ToolCallTrigger trigger(vocab, CallSchema());
  const auto allowed = [&] {
    std::vector<float> logits(vocab->pieces.size(), 0.0f);
    trigger.Mask(logits);
    std::vector<std::string> out;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == 0.0f) out.push_back(static_cast<int>(i) == eos ? "<end>" : pieces[i]);
    }
    return out;
  };
  EXPECT_EQ(allowed().size(), vocab->pieces.size());  // free
  for (const char* p : {"Hello", " <", "tool", "_call"}) {
    trigger.Accept(id(p));
    EXPECT_FALSE(trigger.InBlock()) << p;
  }
  trigger.Accept(id(">\n"));  // the tag is complete; "\n" is the block's first byte
  EXPECT_TRUE(trigger.InBlock());
  EXPECT_EQ(allowed(), (std::vector<std::string>{"{\"name\": \""}));
  trigger.Accept(id("{\"name\": \""));
  EXPECT_EQ(allowed(), (std::vector<std::string>{"ping", "get_weather"}));
  trigger.Accept(id("ping"));
  EXPECT_EQ(allowed(), (std::vector<std::string>{"\", \"arguments\": {"}));
  trigger.Accept(id("\", \"arguments\": {"));
  EXPECT_EQ(allowed(), (std::vector<std::string>{"}}"}));
  trigger.Accept(id("}}"));
  // The closing tag (" <" too: a space, then its first byte); no end inside a block.
  EXPECT_EQ(allowed(), (std::vector<std::string>{" <", "\n</tool_call>"}));
  trigger.Accept(id("\n</tool_call>"));
  EXPECT_FALSE(trigger.InBlock());
  EXPECT_EQ(allowed().size(), vocab->pieces.size());  // free again
  // A tag and the block's first byte in one token.
  trigger.Accept(id("<tool_call>{"));
  EXPECT_TRUE(trigger.InBlock());
  EXPECT_EQ(allowed(), (std::vector<std::string>{"\"name\": \""}));
}

TEST(ToolCallTriggerTest, ATagRunningOnIntoWhatNoCallHoldsLeavesTheTextFree) {
  auto vocab = std::make_shared<JsonVocabulary>();
  for (const char* p : {"<tool_call>x", "a"}) {
    vocab->pieces.push_back(p);
    vocab->kinds.push_back(JsonVocabulary::Kind::kText);
  }
  vocab->Index();
  ToolCallTrigger trigger(vocab, CallSchema());
  trigger.Accept(0);
  EXPECT_FALSE(trigger.InBlock());
}

}  // namespace
}  // namespace peng
