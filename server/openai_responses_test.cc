#include "server/openai_responses.h"

#include <gtest/gtest.h>

#include "server/openai_error.h"

namespace peng::server {
namespace {

using OJson = nlohmann::ordered_json;

OJson Chat(const char* request) {
  std::vector<std::string> ignored;
  absl::StatusOr<OJson> chat = ResponsesToChat(OJson::parse(request), &ignored);
  EXPECT_TRUE(chat.ok()) << chat.status();
  return chat.ok() ? *chat : OJson();
}

TEST(ResponsesToChatTest, ItemsBecomeMessages) {
  const OJson chat = Chat(R"({"model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0,
      "input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\": 1}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": {"n": 2}}],
      "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true}},
      "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
      "tool_choice": {"type": "function", "name": "f"}, "store": true, "metadata": {"k": "v"}})");
  const OJson& m = chat["messages"];
  ASSERT_EQ(m.size(), 5u) << chat.dump();
  EXPECT_EQ(m[0], (OJson{{"role", "system"}, {"content", "Be brief."}}));
  EXPECT_EQ(m[1]["content"][1]["text"], "b");
  EXPECT_EQ(m[2]["role"], "assistant");
  ASSERT_EQ(m[2]["tool_calls"].size(), 2u);  // both calls belong to the assistant message
  EXPECT_EQ(m[2]["tool_calls"][1]["function"]["name"], "g");
  EXPECT_EQ(m[3], (OJson{{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "one"}}));
  EXPECT_EQ(m[4]["content"], "{\"n\":2}");
  EXPECT_EQ(chat["max_completion_tokens"], 9);
  EXPECT_EQ(chat["temperature"], 0);
  EXPECT_EQ(chat["response_format"]["json_schema"]["name"], "r");
  EXPECT_EQ(chat["tools"][0]["function"]["name"], "f");
  EXPECT_EQ(chat["tool_choice"]["function"]["name"], "f");
  EXPECT_FALSE(chat.contains("store"));
  EXPECT_FALSE(chat.contains("metadata"));
}

TEST(ResponsesToChatTest, TextInputAndUnknownFields) {
  std::vector<std::string> ignored;
  absl::StatusOr<OJson> chat = ResponsesToChat(OJson::parse(R"({"input": "hi", "frobnicate": 1})"), &ignored);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ((*chat)["messages"], OJson::parse(R"([{"role": "user", "content": "hi"}])"));
  EXPECT_EQ(ignored, std::vector<std::string>{"frobnicate"});
}

TEST(ResponsesToChatTest, ChatErrorsNameTheResponsesFields) {
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("messages", "x"))), "input");
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("max_completion_tokens", "x"))), "max_output_tokens");
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("temperature", "x"))), "temperature");
  std::vector<std::string> ignored;
  EXPECT_EQ(ParamOf(ResponsesToChat(OJson::parse(R"({"input": "hi", "previous_response_id": "r"})"), &ignored).status()),
            "previous_response_id");
}

}  // namespace
}  // namespace peng::server
