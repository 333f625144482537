#include "server/openai_responses.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/openai_error.h"
#include "server/response_store.h"

namespace peng::server {
namespace {

using OJson = nlohmann::ordered_json;

OJson Chat(const char* request) {
  std::vector<std::string> ignored;
  absl::StatusOr<ResponsesChat> chat = ResponsesToChat(OJson::parse(request), nullptr, &ignored);
  EXPECT_TRUE(chat.ok()) << chat.status();
  return chat.ok() ? chat->chat : OJson();
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
  absl::StatusOr<ResponsesChat> chat = ResponsesToChat(OJson::parse(R"({"input": "hi", "frobnicate": 1})"), nullptr, &ignored);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->chat["messages"], OJson::parse(R"([{"role": "user", "content": "hi"}])"));
  EXPECT_TRUE(chat->store);
  EXPECT_EQ(ignored, std::vector<std::string>{"frobnicate"});
}

TEST(ResponsesToChatTest, ChatErrorsNameTheResponsesFields) {
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("messages", "x"))), "input");
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("max_completion_tokens", "x"))), "max_output_tokens");
  EXPECT_EQ(ParamOf(AsResponsesError(BadParam("temperature", "x"))), "temperature");
  std::vector<std::string> ignored;
  const absl::Status unknown =
      ResponsesToChat(OJson::parse(R"({"input": "hi", "previous_response_id": "r"})"), nullptr, &ignored).status();
  EXPECT_TRUE(absl::IsNotFound(unknown)) << unknown;
  EXPECT_EQ(ParamOf(unknown), "previous_response_id");
  EXPECT_EQ(ParamOf(ResponsesToChat(OJson::parse(R"({"input": "hi", "store": "yes"})"), nullptr, &ignored).status()),
            "store");
}

TEST(ResponsesToChatTest, APreviousResponseComesBeforeTheInputButNotItsInstructions) {
  ResponseStore store(8, 1 << 20);
  store.Put("resp_1", {OJson{{"id", "resp_1"}},
                       OJson::parse(R"([{"role": "user", "content": "Call f."},
                                        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                                         "function": {"name": "f", "arguments": "{}"}}]}])"),
                       OJson()});
  std::vector<std::string> ignored;
  absl::StatusOr<ResponsesChat> chat = ResponsesToChat(
      OJson::parse(R"({"previous_response_id": "resp_1", "instructions": "Be brief.", "store": false,
                       "input": [{"type": "function_call_output", "call_id": "c1", "output": "42"}]})"),
      &store, &ignored);
  ASSERT_TRUE(chat.ok()) << chat.status();
  const OJson& m = chat->chat["messages"];
  ASSERT_EQ(m.size(), 4u) << m.dump();
  EXPECT_EQ(m[0]["role"], "system");
  EXPECT_EQ(m[1]["content"], "Call f.");
  EXPECT_EQ(m[2]["tool_calls"][0]["id"], "c1");
  EXPECT_EQ(m[3], (OJson{{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "42"}}));
  EXPECT_EQ(chat->conversation.size(), 3u);  // the instructions are not kept
  EXPECT_FALSE(chat->store);
}

TEST(ResponseStoreTest, KeepsTheNewestWithinItsBounds) {
  ResponseStore store(3, 4000);
  for (int i = 0; i < 5; ++i) store.Put(absl::StrCat("r", i), {OJson{{"i", i}}, OJson::array(), OJson()});
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.Get("r0"), nullptr);
  EXPECT_EQ(store.Get("r1"), nullptr);
  ASSERT_NE(store.Get("r4"), nullptr);
  EXPECT_EQ(store.Get("r4")->response["i"], 4);
  EXPECT_TRUE(store.Erase("r4"));
  EXPECT_FALSE(store.Erase("r4"));
  EXPECT_EQ(store.size(), 2u);
  // Bytes: a big entry pushes out the old ones; one over the whole budget is not kept.
  store.Put("big", {OJson{{"text", std::string(3980, 'x')}}, OJson::array(), OJson()});  // 3,996 bytes
  EXPECT_EQ(store.size(), 1u);
  EXPECT_NE(store.Get("big"), nullptr);
  store.Put("huge", {OJson{{"text", std::string(5000, 'x')}}, OJson::array(), OJson()});
  EXPECT_EQ(store.Get("huge"), nullptr);
  EXPECT_NE(store.Get("big"), nullptr);
  EXPECT_LE(store.bytes(), 4000u);
  // Replacing an id keeps one entry.
  store.Put("big", {OJson{{"text", "small"}}, OJson::array(), OJson()});
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.Get("big")->response["text"], "small");
  // server.stored_responses 0: nothing is kept.
  ResponseStore none(0, 4000);
  none.Put("r", {OJson{{"i", 1}}, OJson::array(), OJson()});
  EXPECT_EQ(none.Get("r"), nullptr);
}

}  // namespace
}  // namespace peng::server
