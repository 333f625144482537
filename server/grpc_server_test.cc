// GrpcServer end to end over a real loopback channel, with FakeEngineLoop standing in for the
// engine: streaming, cancellation, error codes, auth, health and the unary methods.
#include "server/grpc_server.h"
#include "server/http_test_util.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "engine/tokenizer_unicode.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "peng/v1/inference.grpc.pb.h"
#include "server/fake_engine_loop.h"

namespace peng::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;


class GrpcServerTest : public ::testing::Test {
 protected:
  void StartServer(FakeEngineLoop::Options engine_options = {},
                   std::vector<std::string> api_keys = {}) {
    tokenizer_ = testing::MakeTestTokenizer();  // bytes + <|im_start|> <|im_end|> <s>
    engine_ = std::make_unique<FakeEngineLoop>(std::move(engine_options));
    GrpcServerOptions options;
    options.port = 0;
    options.model_name = "test-model";
    options.max_model_len = max_model_len_;
    options.api_keys = std::move(api_keys);
    options.retry_after_s = 3;
    server_ = std::make_unique<GrpcServer>(options, engine_.get(), tokenizer_.get(), &registry_);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Inference::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 5s);
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + 10s);
  }

  // A unary call by path with raw message bytes (services with no generated stub here).
  grpc::Status GenericUnary(const std::string& method, const std::string& request, std::string* response = nullptr) {
    grpc::GenericStub generic(channel_);
    grpc::Slice slice(request);
    grpc::ByteBuffer req(&slice, 1), resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      status = std::move(s);
      done = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    if (response != nullptr && status.ok()) {
      std::vector<grpc::Slice> slices;
      resp.Dump(&slices);
      response->clear();
      for (const auto& sl : slices) response->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
    return status;
  }

  // Reads the whole stream.
  grpc::Status Generate(const v1::GenerateRequest& req, std::vector<v1::GenerateResponse>* out,
                        grpc::ClientContext* ctx = nullptr) {
    grpc::ClientContext local;
    if (ctx == nullptr) ctx = &local;
    SetDeadline(ctx);
    auto reader = stub_->Generate(ctx, req);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) out->push_back(msg);
    return reader->Finish();
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int64_t max_tokens) {
    v1::GenerateRequest req;
    req.set_text(text);
    req.set_max_tokens(max_tokens);
    return req;
  }

  static v1::GenerateRequest ChatRequest(const std::string& user, int64_t max_tokens) {
    v1::GenerateRequest req;
    v1::ChatMessage* m = req.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(user);
    req.set_max_tokens(max_tokens);
    return req;
  }

  static std::string Text(const std::vector<v1::GenerateResponse>& msgs) {
    std::string text;
    for (const auto& m : msgs) text += m.text();
    return text;
  }

  int64_t max_model_len_ = 64;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<FakeEngineLoop> engine_;
  metrics::Registry registry_;  // outlives server_
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

TEST_F(GrpcServerTest, GenerateStreamsTokensAndEndsWithUsage) {
  StartServer();
  v1::GenerateRequest req = TextRequest("hi", 4);
  req.set_request_id("client-7");
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_seed(42);
  req.mutable_sampling()->set_logprobs(2);
  req.add_stop("END");
  req.add_stop_token_ids(5);
  req.set_priority(-1);
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(req, &msgs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(msgs.empty());

  std::vector<int32_t> ids;
  std::string text;
  int logprobs = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_THAT(msgs[i].request_id(), HasSubstr("client-7-"));
    ids.insert(ids.end(), msgs[i].token_ids().begin(), msgs[i].token_ids().end());
    text += msgs[i].text();
    logprobs += msgs[i].logprobs_size();
    for (const auto& lp : msgs[i].logprobs()) EXPECT_EQ(lp.top_logprobs_size(), 2);
    if (i + 1 < msgs.size()) {
      EXPECT_EQ(msgs[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
      EXPECT_FALSE(msgs[i].has_usage());
    }
  }
  EXPECT_THAT(ids, ElementsAre(100, 101, 102, 103));
  EXPECT_EQ(text, "Hello world!Hello");
  EXPECT_EQ(logprobs, 4);
  const v1::GenerateResponse& last = msgs.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 3);  // <s> h i
  EXPECT_EQ(last.usage().completion_tokens(), 4);

  // What the engine was given.
  std::vector<GenerateRequest> submitted = engine_->submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_THAT(submitted[0].prompt, ElementsAre(258, 'h', 'i'));
  EXPECT_EQ(submitted[0].stop.max_tokens, 4);
  EXPECT_THAT(submitted[0].stop.stop, ElementsAre("END"));
  EXPECT_THAT(submitted[0].stop.stop_token_ids, ElementsAre(5));
  EXPECT_EQ(submitted[0].priority, -1);
  EXPECT_EQ(submitted[0].sampling.temperature, 0.0f);
  EXPECT_EQ(submitted[0].sampling.seed, 42u);
  EXPECT_EQ(submitted[0].sampling.logprobs, 2);
  EXPECT_EQ(submitted[0].id, last.request_id());
  EXPECT_TRUE(engine_->aborts().empty());
}

TEST_F(GrpcServerTest, ChatIsRenderedWithTheTemplate) {
  StartServer({.stop_after = 3});
  v1::GenerateRequest req = ChatRequest("hi", 8);
  v1::ChatMessage* sys = req.mutable_chat()->mutable_messages()->Add();
  req.mutable_chat()->mutable_messages()->SwapElements(0, 1);  // system first
  sys->set_role("system");
  sys->set_content("be brief");
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(req, &msgs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Text(msgs), "Hello world!");
  EXPECT_EQ(msgs.back().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(msgs.back().tool_calls_size(), 0);
  // The ChatML rendering, tokenized as /v1/chat/completions tokenizes it (one BOS).
  const std::string rendered =
      "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
  ASSERT_EQ(engine_->submitted().size(), 1u);
  EXPECT_EQ(engine_->submitted()[0].prompt, tokenizer_->Encode(rendered, true, true));
  EXPECT_EQ(msgs.back().usage().prompt_tokens(), static_cast<int64_t>(engine_->submitted()[0].prompt.size()));

  // add_generation_prompt false: the conversation alone.
  req.mutable_chat()->set_add_generation_prompt(false);
  msgs.clear();
  ASSERT_TRUE(Generate(req, &msgs).ok());
  EXPECT_EQ(engine_->submitted()[1].prompt,
            tokenizer_->Encode("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n", true, true));
}

constexpr char kWeatherTools[] =
    R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])";

TEST_F(GrpcServerTest, ChatToolCallsComeBackOnTheLastMessage) {
  max_model_len_ = 2048;  // the tools go into the system message
  StartServer({.pieces = {"Let me check.", "<tool_call>", R"({"name": "get_weather", )",
                          R"("arguments": {"city": "Paris"}})", "</tool_call>"},
               .stop_after = 5});
  v1::GenerateRequest req = ChatRequest("weather in Paris?", 32);
  req.mutable_chat()->set_tools(kWeatherTools);
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(req, &msgs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Text(msgs), "Let me check.");  // the call is not text
  const v1::GenerateResponse& last = msgs.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  ASSERT_EQ(last.tool_calls_size(), 1);
  EXPECT_EQ(last.tool_calls(0).name(), "get_weather");
  EXPECT_EQ(nlohmann::json::parse(last.tool_calls(0).arguments()), nlohmann::json({{"city", "Paris"}}));
  EXPECT_THAT(last.tool_calls(0).id(), ::testing::StartsWith("call_"));
  EXPECT_EQ(last.usage().completion_tokens(), 5);
  // The tools reached the prompt, and "auto" constrains a <tool_call> block the model opens.
  ASSERT_EQ(engine_->submitted().size(), 1u);
  const GenerateRequest sent = engine_->submitted()[0];
  EXPECT_THAT(tokenizer_->Decode(sent.prompt, false), HasSubstr("get_weather"));
  EXPECT_NE(sent.tool_call_schema, nullptr);
  EXPECT_EQ(sent.json_schema, nullptr);
}

TEST_F(GrpcServerTest, ChatToolChoiceRequiredConstrainsTheReply) {
  max_model_len_ = 2048;
  StartServer({.pieces = {R"([{"name": "get_weather", "arguments": {"city": "Oslo"}}])"}, .stop_after = 1});
  v1::GenerateRequest req = ChatRequest("weather in Oslo?", 64);
  req.mutable_chat()->set_tools(kWeatherTools);
  req.mutable_chat()->set_tool_choice("get_weather");
  req.mutable_chat()->set_parallel_tool_calls(false);
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(req, &msgs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Text(msgs), "");
  ASSERT_EQ(msgs.back().tool_calls_size(), 1);
  EXPECT_EQ(msgs.back().tool_calls(0).name(), "get_weather");
  EXPECT_EQ(msgs.back().finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  ASSERT_EQ(engine_->submitted().size(), 1u);
  EXPECT_NE(engine_->submitted()[0].json_schema, nullptr);

  // An earlier call and its result go into the history.
  v1::GenerateRequest next = req;
  next.mutable_chat()->set_tool_choice("none");
  v1::ChatMessage* call = next.mutable_chat()->add_messages();
  call->set_role("assistant");
  v1::ToolCall* tc = call->add_tool_calls();
  tc->set_id("call_1");
  tc->set_name("get_weather");
  tc->set_arguments(R"({"city": "Oslo"})");
  v1::ChatMessage* result = next.mutable_chat()->add_messages();
  result->set_role("tool");
  result->set_tool_call_id("call_1");
  result->set_content("-3 C, snow");
  msgs.clear();
  s = Generate(next, &msgs);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(msgs.back().tool_calls_size(), 0);  // "none": text
  const std::string prompt = tokenizer_->Decode(engine_->submitted()[1].prompt, false);
  EXPECT_THAT(prompt, HasSubstr("-3 C, snow"));
  EXPECT_THAT(prompt, HasSubstr("\"city\": \"Oslo\""));
}

TEST_F(GrpcServerTest, BadChatsAreInvalidArgumentNamingTheField) {
  max_model_len_ = 2048;
  StartServer();
  struct Case {
    std::function<void(v1::GenerateRequest*)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](v1::GenerateRequest* r) { r->mutable_chat()->clear_messages(); }, "chat: 'messages' must be a non-empty list"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->mutable_messages(0)->set_role("robot"); },
       "chat: messages[0].role 'robot'"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->set_tools("[{"); }, "chat.tools is not valid JSON"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->set_tools(std::string(100, '[') + std::string(100, ']')); },
       "chat.tools nests arrays and objects 100 deep"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->set_tools(R"({"type": "function"})"); }, "chat: 'tools' must be a list"},
      {[](v1::GenerateRequest* r) {
         r->mutable_chat()->set_tools(kWeatherTools);
         r->mutable_chat()->set_tool_choice("get_time");
       },
       "get_time"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->set_tool_choice("required"); }, "chat: "},
      {[](v1::GenerateRequest* r) {
         r->mutable_chat()->set_tools(kWeatherTools);
         r->mutable_chat()->set_tool_choice("required");
         r->set_json_object(true);
       },
       "chat: tool_choice 'required' or a named function constrains the reply already"},
      {[](v1::GenerateRequest* r) { r->mutable_chat()->set_chat_template_kwargs("[1]"); }, "chat: 'chat_template_kwargs' must be an object"},
      {[](v1::GenerateRequest* r) {
         r->mutable_chat()->set_add_generation_prompt(true);
         r->mutable_chat()->set_continue_final_message(true);
       },
       "chat: continue_final_message and add_generation_prompt"},
      {[](v1::GenerateRequest* r) { r->set_json_schema(std::string(5000, '[') + std::string(5000, ']')); },
       "json_schema nests arrays and objects 5000 deep"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = ChatRequest("hi", 4);
    c.mutate(&req);
    std::vector<v1::GenerateResponse> msgs;
    grpc::Status s = Generate(req, &msgs);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
    EXPECT_TRUE(msgs.empty());
  }
  EXPECT_TRUE(engine_->submitted().empty());
}

TEST_F(GrpcServerTest, TokenIdPromptAndDefaultMaxTokensFillTheContext) {
  StartServer({.stop_after = 2});
  v1::GenerateRequest req;
  for (int id : {1, 2, 3}) req.mutable_token_ids()->add_ids(id);
  std::vector<v1::GenerateResponse> msgs;
  ASSERT_TRUE(Generate(req, &msgs).ok());
  EXPECT_EQ(msgs.back().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(msgs.back().usage().completion_tokens(), 2);
  ASSERT_EQ(engine_->submitted().size(), 1u);
  EXPECT_THAT(engine_->submitted()[0].prompt, ElementsAre(1, 2, 3));
  EXPECT_EQ(engine_->submitted()[0].stop.max_tokens, 64 - 3);
  EXPECT_EQ(engine_->submitted()[0].sampling.temperature, 1.0f);  // OpenAI default
  EXPECT_EQ(engine_->submitted()[0].sampling.logprobs, -1);
}

TEST_F(GrpcServerTest, ConcurrentStreamsAllComplete) {
  StartServer();
  constexpr int kCalls = 16;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < kCalls; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(ctxs.back().get());
    readers.push_back(stub_->Generate(ctxs.back().get(), TextRequest("x", 8 + i)));
  }
  for (int i = 0; i < kCalls; ++i) {
    v1::GenerateResponse msg, last;
    int tokens = 0;
    while (readers[i]->Read(&msg)) {
      tokens += msg.token_ids_size();
      last = msg;
    }
    ASSERT_TRUE(readers[i]->Finish().ok());
    EXPECT_EQ(tokens, 8 + i);
    EXPECT_EQ(last.usage().completion_tokens(), 8 + i);
  }
}

TEST_F(GrpcServerTest, CancelMidStreamAbortsOnce) {
  StartServer({.step_interval = 5ms});
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto reader = stub_->Generate(&ctx, TextRequest("hi", 60));
  v1::GenerateResponse msg;
  ASSERT_TRUE(reader->Read(&msg));  // the request is running
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(engine_->WaitForAborts(1, 5s));
  ASSERT_TRUE(engine_->WaitForIdle(5s));
  ASSERT_EQ(engine_->submitted().size(), 1u);
  EXPECT_THAT(engine_->aborts(), ElementsAre(engine_->submitted()[0].id));
}

TEST_F(GrpcServerTest, CancelWhileQueuedAborts) {
  StartServer({.hold = true});  // accepted, never scheduled
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto reader = stub_->Generate(&ctx, TextRequest("hi", 5));
  ASSERT_TRUE(engine_->WaitForSubmitted(1, 5s));
  ctx.TryCancel();
  v1::GenerateResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(engine_->WaitForAborts(1, 5s));
  ASSERT_TRUE(engine_->WaitForIdle(5s));
  EXPECT_EQ(engine_->aborts().size(), 1u);
  // Counted in /metrics as the client saw it.
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  EXPECT_THAT(registry_.Render(),
              HasSubstr(R"(peng:grpc_requests_total{method="/peng.v1.Inference/Generate",code="CANCELLED"} 1)"));
}

TEST_F(GrpcServerTest, ClientDeadlineAborts) {
  StartServer({.hold = true});
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 200ms);
  auto reader = stub_->Generate(&ctx, TextRequest("hi", 5));
  v1::GenerateResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(engine_->WaitForAborts(1, 5s));
  EXPECT_EQ(engine_->aborts().size(), 1u);
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  EXPECT_THAT(registry_.Render(),
              HasSubstr(R"(peng:grpc_requests_total{method="/peng.v1.Inference/Generate",code="DEADLINE_EXCEEDED"} 1)"));
}

TEST_F(GrpcServerTest, FinishedRequestIsNotAborted) {
  StartServer();
  std::vector<v1::GenerateResponse> msgs;
  ASSERT_TRUE(Generate(TextRequest("hi", 3), &msgs).ok());
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  server_.reset();
  EXPECT_TRUE(engine_->aborts().empty());
}

TEST_F(GrpcServerTest, ShutdownCancelsRunningStreamsAndAbortsThem) {
  StartServer({.hold = true});
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto reader = stub_->Generate(&ctx, TextRequest("hi", 5));
  ASSERT_TRUE(engine_->WaitForSubmitted(1, 5s));
  server_->Shutdown(std::chrono::system_clock::now() + 50ms);
  v1::GenerateResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_FALSE(reader->Finish().ok());
  EXPECT_TRUE(engine_->WaitForAborts(1, 5s));
}

TEST_F(GrpcServerTest, EngineErrorEndsStreamWithInternal) {
  StartServer({.error_after = 2});
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(TextRequest("hi", 10), &msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(s.error_message(), HasSubstr("fake engine failure"));
  int tokens = 0;
  for (const auto& m : msgs) tokens += m.token_ids_size();
  EXPECT_EQ(tokens, 2);  // what was generated before the error was delivered
}

struct BadCase {
  const char* name;
  void (*edit)(v1::GenerateRequest*);
  grpc::StatusCode code;
  const char* field;  // must appear in the message
};

TEST_F(GrpcServerTest, ValidationErrorsNameTheField) {
  StartServer();
  const BadCase cases[] = {
      {"no prompt", [](v1::GenerateRequest* r) { r->clear_prompt(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt"},
      {"empty text", [](v1::GenerateRequest* r) { r->set_text(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "text"},
      {"empty ids", [](v1::GenerateRequest* r) { r->mutable_token_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids"},
      {"id out of vocab", [](v1::GenerateRequest* r) { r->mutable_token_ids()->add_ids(9999); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids[0]"},
      {"temperature", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"top_p", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_k", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_k(-5); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"},
      {"presence", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_presence_penalty(3); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.presence_penalty"},
      {"bias id",
       [](v1::GenerateRequest* r) { (*r->mutable_sampling()->mutable_logit_bias())[-3] = 1; },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.logit_bias"},
      {"logprobs", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_logprobs(21); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.logprobs"},
      {"max_tokens 0", [](v1::GenerateRequest* r) { r->set_max_tokens(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"context", [](v1::GenerateRequest* r) { r->set_max_tokens(62); },  // 3 + 62 > 64
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"long prompt", [](v1::GenerateRequest* r) { r->set_text(std::string(80, 'a')); },
       grpc::StatusCode::INVALID_ARGUMENT, "text"},
      {"stop id", [](v1::GenerateRequest* r) { r->add_stop_token_ids(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_token_ids[0]"},
      {"model", [](v1::GenerateRequest* r) { r->set_model("gpt-4"); },
       grpc::StatusCode::NOT_FOUND, "gpt-4"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    v1::GenerateRequest req = TextRequest("hi", 4);
    c.edit(&req);
    std::vector<v1::GenerateResponse> msgs;
    grpc::Status s = Generate(req, &msgs);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.field));
    EXPECT_TRUE(msgs.empty());
  }
  EXPECT_TRUE(engine_->submitted().empty());
  // The served model's own name is accepted.
  v1::GenerateRequest ok = TextRequest("hi", 2);
  ok.set_model("test-model");
  std::vector<v1::GenerateResponse> msgs;
  EXPECT_TRUE(Generate(ok, &msgs).ok());
}

TEST_F(GrpcServerTest, QueueFullIsResourceExhaustedWithRetryAfter) {
  StartServer({.capacity = 1, .hold = true});
  grpc::ClientContext first;
  SetDeadline(&first);
  auto reader = stub_->Generate(&first, TextRequest("hi", 5));
  ASSERT_TRUE(engine_->WaitForSubmitted(1, 5s));

  grpc::ClientContext second;
  std::vector<v1::GenerateResponse> msgs;
  grpc::Status s = Generate(TextRequest("hi", 5), &msgs, &second);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  const auto& trailers = second.GetServerTrailingMetadata();
  auto it = trailers.find("retry-after");
  ASSERT_NE(it, trailers.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "3");

  engine_->Release();
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(GrpcServerTest, DrainingIsUnavailableAndHealthNotServing) {
  StartServer();
  auto health = [&](const std::string& service) {
    // grpc.health.v1.HealthCheckRequest{service}: field 1, length-delimited.
    std::string req;
    if (!service.empty()) req = std::string("\x0a", 1) + char(service.size()) + service;
    std::string out;
    const grpc::Status status = GenericUnary("/grpc.health.v1.Health/Check", req, &out);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return out;  // HealthCheckResponse{status}: "\x08\x01" SERVING, "\x08\x02" NOT_SERVING
  };
  EXPECT_EQ(health(""), std::string("\x08\x01", 2));
  EXPECT_EQ(health("peng.v1.Inference"), std::string("\x08\x01", 2));

  server_->SetServing(false);
  engine_->Drain(0ms);
  EXPECT_EQ(health(""), std::string("\x08\x02", 2));
  EXPECT_EQ(health("peng.v1.Inference"), std::string("\x08\x02", 2));
  std::vector<v1::GenerateResponse> msgs;
  EXPECT_EQ(Generate(TextRequest("hi", 2), &msgs).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(GrpcServerTest, ApiKeysAreRequiredOnEveryMethod) {
  StartServer({}, {"k1", "secret"});
  auto call_all = [&](const char* auth) {
    std::vector<grpc::StatusCode> codes;
    auto prep = [&](grpc::ClientContext* ctx) {
      SetDeadline(ctx);
      if (auth != nullptr) ctx->AddMetadata("authorization", auth);
    };
    {
      grpc::ClientContext ctx;
      prep(&ctx);
      std::vector<v1::GenerateResponse> msgs;
      codes.push_back(Generate(TextRequest("hi", 2), &msgs, &ctx).error_code());
    }
    {
      grpc::ClientContext ctx;
      prep(&ctx);
      v1::TokenizeRequest req;
      req.set_text("a");
      v1::TokenizeResponse resp;
      codes.push_back(stub_->Tokenize(&ctx, req, &resp).error_code());
    }
    {
      grpc::ClientContext ctx;
      prep(&ctx);
      v1::DetokenizeResponse resp;
      codes.push_back(stub_->Detokenize(&ctx, {}, &resp).error_code());
    }
    {
      grpc::ClientContext ctx;
      prep(&ctx);
      v1::ListModelsResponse resp;
      codes.push_back(stub_->ListModels(&ctx, {}, &resp).error_code());
    }
    {
      grpc::ClientContext ctx;
      prep(&ctx);
      v1::LoadResponse resp;
      codes.push_back(stub_->GetLoad(&ctx, {}, &resp).error_code());
    }
    return codes;
  };
  const auto kUnauth = grpc::StatusCode::UNAUTHENTICATED;
  const auto kOk = grpc::StatusCode::OK;
  EXPECT_THAT(call_all(nullptr), ElementsAre(kUnauth, kUnauth, kUnauth, kUnauth, kUnauth));
  EXPECT_THAT(call_all("Bearer wrong"), ElementsAre(kUnauth, kUnauth, kUnauth, kUnauth, kUnauth));
  EXPECT_THAT(call_all("secret"), ElementsAre(kUnauth, kUnauth, kUnauth, kUnauth, kUnauth));
  EXPECT_THAT(call_all("Bearer secret"), ElementsAre(kOk, kOk, kOk, kOk, kOk));
  EXPECT_THAT(call_all("Bearer k1"), ElementsAre(kOk, kOk, kOk, kOk, kOk));
  EXPECT_EQ(engine_->submitted().size(), 2u);

  // Every call is in /metrics by method and code (counted when the call is done: after Shutdown).
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  const std::string m = registry_.Render();
  EXPECT_THAT(m, HasSubstr(R"(peng:grpc_requests_total{method="/peng.v1.Inference/Generate",code="OK"} 2)"));
  EXPECT_THAT(m, HasSubstr(R"(peng:grpc_requests_total{method="/peng.v1.Inference/Generate",code="UNAUTHENTICATED"} 3)"));
  EXPECT_THAT(m, HasSubstr(R"(peng:grpc_requests_total{method="/peng.v1.Inference/ListModels",code="OK"} 2)"));
  EXPECT_THAT(m, HasSubstr(R"(peng:grpc_request_duration_seconds_count{method="/peng.v1.Inference/GetLoad"} 5)"));
}

// A path that is no method of the server is UNIMPLEMENTED and counted under method="unknown":
// made-up paths cannot add series to /metrics.
TEST_F(GrpcServerTest, UnknownMethodsShareOneSeries) {
  StartServer();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(GenericUnary("/made.up/Method" + std::to_string(i), "").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  const std::string m = registry_.Render();
  EXPECT_THAT(m, HasSubstr(R"(peng:grpc_requests_total{method="unknown",code="UNIMPLEMENTED"} 3)"));
  EXPECT_THAT(m, ::testing::Not(HasSubstr("made.up")));
}

TEST_F(GrpcServerTest, TokenizeDetokenizeRoundTrip) {
  StartServer();
  grpc::ClientContext c1;
  SetDeadline(&c1);
  v1::TokenizeRequest treq;
  treq.set_text("héllo");
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub_->Tokenize(&c1, treq, &tresp).ok());
  EXPECT_EQ(tresp.token_ids(0), 258);  // BOS by default
  EXPECT_EQ(tresp.count(), tresp.token_ids_size());
  EXPECT_EQ(tresp.max_model_len(), 64);

  grpc::ClientContext c2;
  SetDeadline(&c2);
  v1::DetokenizeRequest dreq;
  *dreq.mutable_token_ids() = tresp.token_ids();
  dreq.set_skip_special_tokens(true);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub_->Detokenize(&c2, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), "héllo");

  grpc::ClientContext c3;
  SetDeadline(&c3);
  treq.set_add_special_tokens(false);
  ASSERT_TRUE(stub_->Tokenize(&c3, treq, &tresp).ok());
  EXPECT_EQ(tresp.count(), 6);  // bytes, no BOS

  grpc::ClientContext c3b;  // control tokens are recognised with or without BOS, as over HTTP
  SetDeadline(&c3b);
  treq.set_text("<|im_start|>x");
  ASSERT_TRUE(stub_->Tokenize(&c3b, treq, &tresp).ok());
  ASSERT_EQ(tresp.count(), 2);
  EXPECT_EQ(tresp.token_ids(0), *tokenizer_->FindToken("<|im_start|>"));

  grpc::ClientContext c4;
  SetDeadline(&c4);
  dreq.add_token_ids(100000);
  grpc::Status s = stub_->Detokenize(&c4, dreq, &dresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("token_ids["));

  grpc::ClientContext c5;
  SetDeadline(&c5);
  treq.set_model("other");
  EXPECT_EQ(stub_->Tokenize(&c5, treq, &tresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServerTest, ListModelsAndGetLoad) {
  StartServer({.hold = true});
  grpc::ClientContext c1;
  SetDeadline(&c1);
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&c1, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), "test-model");
  EXPECT_EQ(models.models(0).max_model_len(), 64);
  EXPECT_EQ(models.models(0).vocab_size(), 259);

  grpc::ClientContext gen;
  SetDeadline(&gen);
  auto reader = stub_->Generate(&gen, TextRequest("hi", 5));
  ASSERT_TRUE(engine_->WaitForSubmitted(1, 5s));
  grpc::ClientContext c2;
  SetDeadline(&c2);
  v1::LoadResponse load;
  ASSERT_TRUE(stub_->GetLoad(&c2, {}, &load).ok());
  EXPECT_EQ(load.running(), 1);
  gen.TryCancel();
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
  }
  reader->Finish();
  ASSERT_TRUE(engine_->WaitForIdle(5s));
  grpc::ClientContext c3;
  SetDeadline(&c3);
  ASSERT_TRUE(stub_->GetLoad(&c3, {}, &load).ok());
  EXPECT_EQ(load.running(), 0);
}

TEST_F(GrpcServerTest, ReflectionListsTheService) {
  StartServer();
  // grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with list_services = "*"
  // (field 7). The reply lists services by name; look for ours in the raw bytes.
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::CompletionQueue cq;
  auto call = generic.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::string req = std::string("\x3a\x01*", 3);
  grpc::Slice slice(req);
  grpc::ByteBuffer buf(&slice, 1);
  call->Write(buf, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer resp;
  call->Read(&resp, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::vector<grpc::Slice> slices;
  resp.Dump(&slices);
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_THAT(out, HasSubstr("peng.v1.Inference"));
  EXPECT_THAT(out, HasSubstr("grpc.health.v1.Health"));
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  EXPECT_THAT(registry_.Render(), HasSubstr(R"(peng:grpc_requests_total{method="/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",code="OK"} 1)"));
}

TEST_F(GrpcServerTest, PortInUseFailsStart) {
  StartServer();
  GrpcServerOptions options;
  options.port = server_->port();
  GrpcServer second(options, engine_.get(), tokenizer_.get());
  absl::Status s = second.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(server_->port())));
}

}  // namespace
}  // namespace peng::server
