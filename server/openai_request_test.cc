// Parsing and validation of OpenAI request bodies (no sockets): every field's mapping into
// GenerateRequest terms, every 400/404 with its `param`, and the response JSON shapes.
#include "server/openai_request.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/chat_template.h"
#include "server/http_test_util.h"
#include "server/openai_error.h"
#include "server/openai_response.h"

namespace peng::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

class OpenAiRequestTest : public ::testing::Test {
 protected:
  OpenAiRequestTest() : tok_(testing::MakeTestTokenizer()) {
    auto t = ChatTemplate::Parse(testing::kChatMlTemplate);
    EXPECT_TRUE(t.ok()) << t.status();
    template_ = std::make_unique<ChatTemplate>(*std::move(t));
    ctx_.model_name = "m";
    ctx_.max_model_len = 64;
    ctx_.tokenizer = tok_.get();
    ctx_.chat_template = template_.get();
  }

  absl::StatusOr<CompletionJob> Chat(Json body) {
    if (!body.contains("messages")) body["messages"] = {{{"role", "user"}, {"content", "hi"}}};
    return ParseCompletionRequest(ApiKind::kChat, body, ctx_, &ignored_);
  }
  absl::StatusOr<CompletionJob> Completion(Json body) {
    if (!body.contains("prompt")) body["prompt"] = "hi";
    return ParseCompletionRequest(ApiKind::kCompletion, body, ctx_, &ignored_);
  }
  // Asserts a 400 naming `param`.
  void ExpectBad(const absl::StatusOr<CompletionJob>& r, const std::string& param) {
    ASSERT_FALSE(r.ok());
    ApiError e = ApiErrorFromStatus(r.status());
    EXPECT_EQ(e.status, 400) << r.status();
    EXPECT_EQ(e.type, "BadRequestError");
    EXPECT_EQ(e.param.value_or("<none>"), param) << r.status();
  }

  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<ChatTemplate> template_;
  ModelContext ctx_;
  std::vector<std::string> ignored_;
};

TEST_F(OpenAiRequestTest, ChatRendersTemplateAddsBosOnceAndDefaultsMaxTokens) {
  auto job = Chat({{"messages", {{{"role", "system"}, {"content", "s"}},
                                 {{"role", "user"},
                                  {"content", {{{"type", "text"}, {"text", "a"}},
                                               {{"type", "text"}, {"text", "b"}}}}}}}});
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string text =
      "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\na\nb<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(job->prompt_texts[0], text);
  std::vector<int32_t> want = tok_->Encode(text, false, true);
  want.insert(want.begin(), 258);  // BOS, once
  EXPECT_EQ(job->prompts[0], want);
  EXPECT_EQ(job->stop.max_tokens, 64 - static_cast<int64_t>(want.size()));
  EXPECT_EQ(job->n, 1);
  EXPECT_FALSE(job->stream);
}

TEST_F(OpenAiRequestTest, ContinueFinalMessageLeavesTheLastTurnOpen) {
  const Json messages = {{{"role", "user"}, {"content", "q"}}, {{"role", "assistant"}, {"content", "The answer is "}}};
  auto job = Chat({{"messages", messages}, {"continue_final_message", true}, {"add_generation_prompt", false}});
  ASSERT_TRUE(job.ok()) << job.status();
  // The template keeps the trailing space, so the cut keeps it too.
  EXPECT_EQ(job->prompt_texts[0], "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nThe answer is ");
  // add_generation_prompt defaults to true, which continue_final_message excludes (as vLLM).
  ExpectBad(Chat({{"messages", messages}, {"continue_final_message", true}}), "continue_final_message");
  ExpectBad(Chat({{"messages", {{{"role", "user"}, {"content", "  "}}}},
                  {"continue_final_message", true}, {"add_generation_prompt", false}}),
            "continue_final_message");
  ExpectBad(Chat({{"messages", messages}, {"continue_final_message", "yes"}}), "continue_final_message");
}

TEST(CutAfterFinalMessageTest, KeepsOrTrimsTrailingWhitespaceAsTheTemplateDid) {
  EXPECT_EQ(*CutAfterFinalMessage("<u>hi</u><a>go on </a>", "go on "), "<u>hi</u><a>go on ");
  EXPECT_EQ(*CutAfterFinalMessage("<u>hi</u><a>go on</a>", "go on \n"), "<u>hi</u><a>go on");
  EXPECT_EQ(*CutAfterFinalMessage("<a>x</a><a>x</a>", "x"), "<a>x</a><a>x");  // the last one
  EXPECT_FALSE(CutAfterFinalMessage("<a>X</a>", "x").ok());
}

TEST_F(OpenAiRequestTest, SamplingStopAndLogprobFieldsMap) {
  auto job = Chat({{"temperature", 0.5}, {"top_p", 0.9}, {"top_k", 5}, {"min_p", 0.1},
                   {"seed", 42}, {"stop", "x"}, {"stop_token_ids", {7}},
                   {"presence_penalty", 0.5}, {"frequency_penalty", -0.5},
                   {"repetition_penalty", 1.1}, {"logit_bias", {{"65", 5}}},
                   {"logprobs", true}, {"top_logprobs", 3}, {"n", 2},
                   {"max_completion_tokens", 5}, {"ignore_eos", true}, {"priority", -1},
                   {"user", "u"}, {"stream", true},
                   {"stream_options", {{"include_usage", true}}}, {"mystery", 1}});
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_FLOAT_EQ(job->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(job->sampling.top_p, 0.9f);
  EXPECT_EQ(job->sampling.top_k, 5);
  EXPECT_FLOAT_EQ(job->sampling.min_p, 0.1f);
  EXPECT_EQ(job->sampling.seed, 42u);
  EXPECT_FLOAT_EQ(job->sampling.logit_bias.at(65), 5.0f);
  EXPECT_EQ(job->sampling.logprobs, 3);
  EXPECT_THAT(job->stop.stop, ElementsAre("x"));
  EXPECT_THAT(job->stop.stop_token_ids, ElementsAre(7));
  EXPECT_TRUE(job->stop.ignore_eos);
  EXPECT_EQ(job->stop.max_tokens, 5);
  EXPECT_EQ(job->n, 2);
  EXPECT_EQ(job->priority, -1);
  EXPECT_TRUE(job->include_usage);
  EXPECT_THAT(ignored_, ElementsAre("mystery"));
}

TEST_F(OpenAiRequestTest, PromptForms) {
  auto one = Completion({{"prompt", "ab"}, {"max_tokens", 3}});
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(one->prompts, ElementsAre(ElementsAre(258, 'a', 'b')));
  auto list = Completion({{"prompt", {"a", "bc"}}});
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->prompts.size(), 2u);
  // No max_tokens: OpenAI's legacy default of 16 for every prompt (a chat request gets the rest
  // of the context instead: ChatDefaultMaxTokensIsTheRestOfTheContext).
  EXPECT_EQ(list->MaxTokensFor(0), kDefaultCompletionTokens);
  EXPECT_EQ(list->MaxTokensFor(1), kDefaultCompletionTokens);
  auto ids = Completion({{"prompt", {1, 2, 3}}});
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(ids->prompts, ElementsAre(ElementsAre(1, 2, 3)));
  auto id_lists = Completion({{"prompt", {{1}, {2, 3}}}});
  ASSERT_TRUE(id_lists.ok());
  EXPECT_THAT(id_lists->prompts, ElementsAre(ElementsAre(1), ElementsAre(2, 3)));
  ExpectBad(Completion({{"prompt", {1, 9999}}}), "prompt");
  ExpectBad(Completion({{"prompt", Json::array()}}), "prompt");
  ExpectBad(Completion({{"prompt", 5}}), "prompt");
  ExpectBad(Completion({{"prompt", {"a", 1}}}), "prompt");
  ExpectBad(ParseCompletionRequest(ApiKind::kCompletion, Json::object(), ctx_, nullptr),
            "prompt");
}

TEST_F(OpenAiRequestTest, RangeAndTypeErrorsNameTheField) {
  ExpectBad(Chat({{"temperature", -1}}), "temperature");
  ExpectBad(Chat({{"temperature", "hot"}}), "temperature");
  ExpectBad(Chat({{"top_p", 0}}), "top_p");
  ExpectBad(Chat({{"top_p", 1.5}}), "top_p");
  ExpectBad(Chat({{"min_p", 2}}), "min_p");
  ExpectBad(Chat({{"top_k", -2}}), "top_k");
  ExpectBad(Chat({{"top_k", 1.5}}), "top_k");
  ExpectBad(Chat({{"presence_penalty", 3}}), "presence_penalty");
  ExpectBad(Chat({{"frequency_penalty", -3}}), "frequency_penalty");
  ExpectBad(Chat({{"repetition_penalty", 0}}), "repetition_penalty");
  ExpectBad(Chat({{"n", 0}}), "n");
  ExpectBad(Chat({{"n", 2}, {"temperature", 0}}), "n");
  ExpectBad(Chat({{"max_tokens", 0}}), "max_tokens");
  ExpectBad(Chat({{"max_completion_tokens", -1}}), "max_completion_tokens");
  ExpectBad(Chat({{"stream", "yes"}}), "stream");
  ExpectBad(Chat({{"stream_options", {{"include_usage", true}}}}), "stream_options");
  ExpectBad(Chat({{"stop", 3}}), "stop");
  ExpectBad(Chat({{"stop_token_ids", {999}}}), "stop_token_ids");
  ExpectBad(Chat({{"logit_bias", {{"abc", 1}}}}), "logit_bias");
  ExpectBad(Chat({{"logit_bias", {{"5", 500}}}}), "logit_bias");
  ExpectBad(Chat({{"logit_bias", {{"100000", 1}}}}), "logit_bias");
  ExpectBad(Chat({{"top_logprobs", 3}}), "top_logprobs");
  ExpectBad(Chat({{"logprobs", true}, {"top_logprobs", 21}}), "top_logprobs");
  ExpectBad(Completion({{"logprobs", 30}}), "logprobs");
  ExpectBad(Completion({{"max_tokens", 0}}), "max_tokens");  // 0 only with echo
  ExpectBad(Completion({{"echo", true}, {"max_tokens", -1}}), "max_tokens");
  ExpectBad(Chat({{"messages", Json::array()}}), "messages");
  ExpectBad(Chat({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}), "messages");
  ExpectBad(Chat({{"messages", {{{"role", "user"}, {"content", 5}}}}}), "messages");
  ExpectBad(Chat({{"messages", {{{"role", "user"},
                                 {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}}}),
            "messages");
}

TEST_F(OpenAiRequestTest, UnknownModelIs404WithParamModel) {
  auto r = Chat({{"model", "gpt-4"}});
  ASSERT_FALSE(r.ok());
  ApiError e = ApiErrorFromStatus(r.status());
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(e.type, "NotFoundError");
  EXPECT_EQ(e.param.value_or(""), "model");
  EXPECT_TRUE(Chat({{"model", "m"}}).ok());
}

TEST_F(OpenAiRequestTest, ContextOverflowStatesTheArithmetic) {
  auto r = Completion({{"prompt", "abcdefghij"}, {"max_tokens", 60}});  // 11 + 60 > 64
  ExpectBad(r, "max_tokens");
  EXPECT_THAT(r.status().message(),
              HasSubstr("maximum context length is 64 tokens. However, you requested 71 "
                        "tokens (11 in the prompt, 60 in the completion)"));
  auto too_long = Completion({{"prompt", std::string(70, 'a')}});
  ExpectBad(too_long, "prompt");
  EXPECT_THAT(too_long.status().message(), HasSubstr("71 input tokens"));
  EXPECT_TRUE(Completion({{"prompt", "abcdefghij"}, {"max_tokens", 53}}).ok());
}

TEST_F(OpenAiRequestTest, InvalidJsonAndNonObjectBodies) {
  EXPECT_EQ(ApiErrorFromStatus(ParseJsonBody("{nope").status()).status, 400);
  EXPECT_EQ(ApiErrorFromStatus(ParseJsonBody("[1]").status()).status, 400);
  EXPECT_TRUE(ParseJsonBody(R"({"a":1})").ok());
}

TEST_F(OpenAiRequestTest, InvalidJsonSaysWhereAndWhy) {
  // The parser's reason reaches the client, without nlohmann's exception tag.
  const auto syntax = ParseJsonBody(R"({"prompt": "hi",})").status();
  EXPECT_THAT(syntax.message(), HasSubstr("not valid JSON: parse error at line 1, column 17"));
  EXPECT_THAT(syntax.message(), Not(HasSubstr("json.exception")));
  EXPECT_THAT(ParseJsonBody(R"({"prompt": "a \ud800 b"})").status().message(), HasSubstr("surrogate"));
  EXPECT_THAT(ParseJsonBody(R"({"temperature": 1e309})").status().message(), HasSubstr("1e309"));
  // A long bad token is cut (at a UTF-8 boundary), not echoed whole.
  const std::string long_bad = "{\"prompt\": \"" + std::string(1000, 'a') + "\\u00\"}";
  const std::string msg(ParseJsonBody(long_bad).status().message());
  EXPECT_LT(msg.size(), 320u);
  EXPECT_THAT(msg, ::testing::EndsWith("…"));
}

TEST_F(OpenAiRequestTest, ErrorBodyShape) {
  ApiError e = ApiErrorFromStatus(BadParam("top_p", "bad"));
  Json j = Json::parse(e.Body());
  EXPECT_EQ(j, Json::parse(R"({"error":{"message":"bad","type":"BadRequestError",
                              "param":"top_p","code":400}})"));
  ApiError busy = ApiErrorFromStatus(absl::ResourceExhaustedError("full"), 503, 7);
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.retry_after_s, 7);
  EXPECT_EQ(Json::parse(busy.Body())["error"]["param"], nullptr);
  EXPECT_EQ(ApiErrorFromStatus(absl::InternalError("x")).type, "InternalServerError");
}

TEST_F(OpenAiRequestTest, CompletionLogprobsFormat) {
  auto job = Completion({{"prompt", "a"}, {"logprobs", 1}, {"max_tokens", 2}});
  ASSERT_TRUE(job.ok());
  CompletionResponder r(*job, *tok_, "cmpl-1", 5);
  TokenEvent ev;
  ev.token_ids = {'x'};
  ev.text = "x";
  ev.logprobs = {{'x', -0.5f, {{'y', -0.25f}}}};
  ev.prompt_tokens = 2;
  ev.completion_tokens = 1;
  r.Collect(0, ev);
  ev.token_ids = {'z'};
  ev.text = "z";
  ev.logprobs = {{'z', -1.0f, {{'z', -1.0f}}}};
  ev.completion_tokens = 2;
  ev.finish_reason = FinishReason::kLength;
  r.Collect(0, ev);
  ASSERT_TRUE(r.done());
  Json body = Json::parse(r.Body());
  EXPECT_EQ(body["object"], "text_completion");
  const Json& lp = body["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], Json({"x", "z"}));
  EXPECT_EQ(lp["token_logprobs"], Json({-0.5, -1.0}));
  EXPECT_EQ(lp["top_logprobs"][0], Json({{"x", -0.5}, {"y", -0.25}}));
  EXPECT_EQ(lp["text_offset"], Json({0, 1}));
  EXPECT_EQ(body["choices"][0]["text"], "xz");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"], Json({{"prompt_tokens", 2}, {"completion_tokens", 2},
                                 {"total_tokens", 4},
                                 {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
  // Alternatives most likely first, as OpenAI's (the chosen token last when they miss it).
  EXPECT_NE(r.Body().find(R"("top_logprobs":[{"y":-0.25,"x":-0.5},{"z":-1.0}])"), std::string::npos)
      << r.Body();
}

TEST_F(OpenAiRequestTest, EchoWithLogprobsAsksForPromptLogprobs) {
  auto job = Completion({{"prompt", "ab"}, {"echo", true}, {"logprobs", 3}, {"max_tokens", 0}});
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->prompt_logprobs, 3);
  EXPECT_EQ(job->MaxTokensFor(0), 0);
  EXPECT_EQ(job->stop.max_tokens, 0);
  auto plain = Completion({{"prompt", "ab"}, {"logprobs", 3}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->prompt_logprobs, -1);
  EXPECT_EQ(plain->MaxTokensFor(0), kDefaultCompletionTokens);  // not given
}

TEST_F(OpenAiRequestTest, ChatDefaultMaxTokensIsTheRestOfTheContext) {
  auto job = Chat(Json::object());
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->prompts.size(), 1u);
  EXPECT_EQ(job->MaxTokensFor(0), 64 - static_cast<int64_t>(job->prompts[0].size()));
}

}  // namespace
}  // namespace peng::server
