// The HTTP frontend end to end over real sockets, with FakeEngineLoop behind it: every route,
// error statuses and bodies, SSE framing, keep-alive, auth, limits, overload, disconnects.
#include "server/http_server.h"

#include <atomic>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fake_engine_loop.h"
#include "server/http_test_util.h"
#include "server/sse.h"
#include "nlohmann/json.hpp"

namespace peng::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::Client;
using testing::ClientResponse;
using testing::SseData;
using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kWait = 10s;

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(FakeEngineLoop::Options engine_options = {},
                   std::function<void(HttpServerOptions&)> tweak = nullptr,
                   const std::string& chat_template = testing::kChatMlTemplate) {
    tokenizer_ = testing::MakeTestTokenizer(chat_template);
    engine_ = std::make_unique<FakeEngineLoop>(std::move(engine_options));
    HttpServerOptions options;
    options.port = 0;
    options.model_name = "test-model";
    options.max_model_len = 128;
    if (tweak) tweak(options);
    HttpServerDeps deps;
    deps.engine = engine_.get();
    deps.tokenizer = tokenizer_.get();
    deps.registry = &registry_;
    deps.ready = &ready_;
    auto server = HttpServer::Create(options, deps);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  ClientResponse Send(const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const std::map<std::string, std::string>& headers = {}) {
    Client c(server_->port());
    return c.Send(method, target, body, headers);
  }
  ClientResponse Post(const std::string& target, const Json& body) {
    return Send("POST", target, body.dump());
  }
  static Json ChatBody(Json extra = Json::object()) {
    Json body{{"model", "test-model"},
              {"messages", {{{"role", "user"}, {"content", "hi"}}}},
              {"max_tokens", 3}};
    body.update(extra);
    return body;
  }
  // Asserts an OpenAI-shaped error with this status (and param when given).
  static void ExpectError(const ClientResponse& r, int status, const std::string& type,
                          const char* param = nullptr) {
    EXPECT_EQ(r.status, status) << r.body;
    Json j = r.Json();
    ASSERT_TRUE(j.contains("error")) << r.body;
    const Json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string());
    EXPECT_EQ(e["type"], type);
    EXPECT_EQ(e["code"], status);
    if (param != nullptr) {
      EXPECT_EQ(e["param"], param);
    } else {
      EXPECT_TRUE(e.contains("param"));
    }
  }

  metrics::Registry registry_;
  std::atomic<bool> ready_{true};
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<FakeEngineLoop> engine_;
  std::unique_ptr<HttpServer> server_;  // declared last: stops before the engine goes
};

TEST_F(HttpServerTest, ChatCompletionNonStreaming) {
  StartServer();
  ClientResponse r = Post("/v1/chat/completions", ChatBody());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.Header("content-type"), StartsWith("application/json"));
  Json j = r.Json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("chatcmpl-"));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "test-model");
  EXPECT_TRUE(j["created"].is_number_integer());
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"], Json({{"role", "assistant"}, {"content", "Hello world!"}}));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["logprobs"], nullptr);
  // The engine saw the rendered ChatML prompt with one BOS.
  ASSERT_EQ(engine_->submitted().size(), 1u);
  const GenerateRequest req = engine_->submitted()[0];
  std::vector<int32_t> want = tokenizer_->Encode(
      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", false, true);
  want.insert(want.begin(), 258);
  EXPECT_EQ(req.prompt, want);
  EXPECT_EQ(req.stop.max_tokens, 3);
  EXPECT_EQ(req.id, j["id"]);
  const int64_t p = static_cast<int64_t>(want.size());
  EXPECT_EQ(j["usage"], Json({{"prompt_tokens", p}, {"completion_tokens", 3},
                              {"total_tokens", p + 3},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
}

TEST_F(HttpServerTest, CompletionsBatchEchoAndTokenPrompts) {
  StartServer();
  ClientResponse r = Post("/v1/completions", {{"prompt", {"ab", "c"}}, {"max_tokens", 2},
                                              {"echo", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = r.Json();
  EXPECT_THAT(j["id"].get<std::string>(), StartsWith("cmpl-"));
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["text"], "abHello world");
  EXPECT_EQ(j["choices"][1]["text"], "cHello world");
  EXPECT_EQ(j["choices"][1]["index"], 1);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3 + 2);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(engine_->submitted().size(), 2u);

  ClientResponse ids = Post("/v1/completions", {{"prompt", {1, 2, 3}}});
  ASSERT_EQ(ids.status, 200) << ids.body;
  EXPECT_THAT(ids.Json()["choices"][0]["text"].get<std::string>(), StartsWith("Hello world!"));
  EXPECT_EQ(ids.Json()["usage"]["completion_tokens"], 16);
  EXPECT_EQ(engine_->submitted().back().prompt, std::vector<int32_t>({1, 2, 3}));
  // Default max_tokens: 16, OpenAI's for its legacy completions API.
  EXPECT_EQ(engine_->submitted().back().stop.max_tokens, 16);
  // Within the context: a 120-token prompt of a 128-token context gets the 8 left.
  ClientResponse near_end = Post("/v1/completions", {{"prompt", std::vector<int>(120, 5)}});
  ASSERT_EQ(near_end.status, 200) << near_end.body;
  EXPECT_EQ(engine_->submitted().back().stop.max_tokens, 8);
}

TEST_F(HttpServerTest, ChatStreamingFramesAndUsage) {
  StartServer();
  ClientResponse r = Post("/v1/chat/completions",
                          ChatBody({{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.Header("content-type"), StartsWith("text/event-stream"));
  EXPECT_THAT(r.body, ::testing::EndsWith("data: [DONE]\n\n"));
  std::vector<std::string> data = SseData(r.body);
  ASSERT_EQ(data.size(), 1u + 3u + 1u + 1u);  // role, 3 tokens, usage, [DONE]
  Json first = Json::parse(data[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 1; i <= 3; ++i) {
    Json c = Json::parse(data[i]);
    EXPECT_EQ(c["id"], first["id"]);
    ASSERT_TRUE(c.contains("usage"));  // OpenAI: null on every chunk before the last
    EXPECT_TRUE(c["usage"].is_null());
    text += c["choices"][0]["delta"]["content"].get<std::string>();
    EXPECT_EQ(c["choices"][0]["finish_reason"], i == 3 ? Json("length") : Json(nullptr));
  }
  EXPECT_EQ(text, "Hello world!");
  Json usage = Json::parse(data[4]);
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3);
  EXPECT_EQ(data[5], "[DONE]");
}

TEST_F(HttpServerTest, CompletionStreamingWithoutUsage) {
  StartServer();
  ClientResponse r = Post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2},
                                              {"stream", true}});
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> data = SseData(r.body);
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(Json::parse(data[0])["object"], "text_completion");
  EXPECT_EQ(Json::parse(data[0])["choices"][0]["text"], "Hello");
  EXPECT_FALSE(Json::parse(data[1]).contains("usage"));
  EXPECT_EQ(data[2], "[DONE]");
}

TEST_F(HttpServerTest, ErrorAfterFirstByteIsAnSseErrorThenDone) {
  FakeEngineLoop::Options eo;
  eo.error_after = 1;
  StartServer(eo);
  ClientResponse r = Post("/v1/chat/completions", ChatBody({{"stream", true}}));
  ASSERT_EQ(r.status, 200);
  std::vector<std::string> data = SseData(r.body);
  ASSERT_GE(data.size(), 3u);
  Json err = Json::parse(data[data.size() - 2]);
  EXPECT_EQ(err["error"]["code"], 500);
  EXPECT_EQ(err["error"]["type"], "InternalServerError");
  EXPECT_EQ(err["error"]["message"], "fake engine failure");
  EXPECT_EQ(data.back(), "[DONE]");
  // Without streaming the same failure is a 500.
  ExpectError(Post("/v1/chat/completions", ChatBody()), 500, "InternalServerError");
}

TEST_F(HttpServerTest, LogprobsInChatFormat) {
  StartServer();
  ClientResponse r = Post("/v1/chat/completions",
                          ChatBody({{"logprobs", true}, {"top_logprobs", 2}, {"max_tokens", 2}}));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json content = r.Json()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "d");  // id 100 is the byte 'd'
  EXPECT_EQ(content[0]["bytes"], Json({100}));
  EXPECT_DOUBLE_EQ(content[0]["logprob"].get<double>(), -0.25);
  ASSERT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "e");
  EXPECT_EQ(engine_->submitted()[0].sampling.logprobs, 2);
}

TEST_F(HttpServerTest, ValidationErrorsOverHttp) {
  StartServer();
  ExpectError(Send("POST", "/v1/chat/completions", "{not json"), 400, "BadRequestError");
  ExpectError(Post("/v1/chat/completions", ChatBody({{"temperature", "hot"}})), 400,
              "BadRequestError", "temperature");
  ExpectError(Post("/v1/chat/completions", ChatBody({{"n", 0}})), 400, "BadRequestError", "n");
  ExpectError(Post("/v1/chat/completions", ChatBody({{"model", "nope"}})), 404,
              "NotFoundError", "model");
  ClientResponse ctx = Post("/v1/completions", {{"prompt", "hello"}, {"max_tokens", 1000}});
  ExpectError(ctx, 400, "BadRequestError", "max_tokens");
  EXPECT_THAT(ctx.body, HasSubstr("However, you requested 1006 tokens (6 in the prompt, 1000 in "
                                  "the completion)"));
  // Unknown fields are ignored.
  EXPECT_EQ(Post("/v1/chat/completions", ChatBody({{"frobnicate", true}})).status, 200);
  EXPECT_TRUE(engine_->WaitForIdle(kWait));
}

TEST_F(HttpServerTest, RoutesModelsTokenizeVersionHealth) {
  StartServer();
  ClientResponse models = Send("GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.Json()["object"], "list");
  EXPECT_EQ(models.Json()["data"][0]["id"], "test-model");
  EXPECT_EQ(models.Json()["data"][0]["object"], "model");
  EXPECT_EQ(Send("GET", "/v1/models/test-model").Json()["id"], "test-model");
  ExpectError(Send("GET", "/v1/models/other"), 404, "NotFoundError", "model");

  ClientResponse tok = Post("/tokenize", {{"prompt", "ab"}});
  ASSERT_EQ(tok.status, 200) << tok.body;
  EXPECT_EQ(tok.Json()["tokens"], Json({258, 'a', 'b'}));
  EXPECT_EQ(tok.Json()["count"], 3);
  EXPECT_EQ(tok.Json()["max_model_len"], 128);
  ClientResponse chat_tok = Post("/tokenize", {{"messages", {{{"role", "user"}, {"content", "x"}}}}});
  ASSERT_EQ(chat_tok.status, 200) << chat_tok.body;
  EXPECT_EQ(chat_tok.Json()["tokens"][0], 256);  // <|im_start|>, no BOS for chat by default
  ClientResponse detok = Post("/detokenize", {{"tokens", {'h', 'i'}}});
  EXPECT_EQ(detok.Json()["prompt"], "hi");
  ExpectError(Post("/detokenize", {{"tokens", {99999}}}), 400, "BadRequestError", "tokens");

  EXPECT_EQ(Send("GET", "/version").Json()["version"], "0.1.0");
  EXPECT_EQ(Send("GET", "/health").status, 200);
  EXPECT_EQ(Send("GET", "/live").status, 200);
  EXPECT_EQ(Send("GET", "/ready").status, 200);
  ready_ = false;
  EXPECT_EQ(Send("GET", "/ready").status, 503);
  EXPECT_EQ(Send("GET", "/live").status, 200);

  ExpectError(Send("GET", "/v1/nothing"), 404, "NotFoundError");
  ExpectError(Send("GET", "/nothing"), 404, "NotFoundError");
  ClientResponse wrong = Send("GET", "/v1/chat/completions");
  ExpectError(wrong, 405, "MethodNotAllowedError");
  EXPECT_EQ(wrong.Header("allow"), "POST");
}

TEST_F(HttpServerTest, MetricsCountRequestsByRouteAndStatus) {
  StartServer();
  Send("GET", "/v1/models");
  Send("GET", "/v1/models/x");
  Post("/v1/chat/completions", ChatBody());
  ClientResponse m = Send("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(m.body, HasSubstr(R"(peng:http_requests_total{route="/v1/models",status="200"} 1)"));
  EXPECT_THAT(m.body,
              HasSubstr(R"(peng:http_requests_total{route="/v1/models/{id}",status="404"} 1)"));
  EXPECT_THAT(m.body, HasSubstr(
      R"(peng:http_requests_total{route="/v1/chat/completions",status="200"} 1)"));
  EXPECT_THAT(m.body,
              HasSubstr(R"(peng:http_request_duration_seconds_count{route="/v1/models"} 1)"));
}

TEST_F(HttpServerTest, ApiKeys) {
  StartServer({}, [](HttpServerOptions& o) { o.api_keys = {"k1", "k2"}; });
  ExpectError(Post("/v1/chat/completions", ChatBody()), 401, "AuthenticationError");
  ExpectError(Send("POST", "/v1/chat/completions", ChatBody().dump(),
                   {{"Authorization", "Bearer wrong"}}),
              401, "AuthenticationError");
  ExpectError(Send("GET", "/v1/models"), 401, "AuthenticationError");
  ExpectError(Send("POST", "/tokenize", R"({"prompt":"a"})"), 401, "AuthenticationError");
  EXPECT_EQ(Send("POST", "/v1/chat/completions", ChatBody().dump(),
                 {{"Authorization", "Bearer k2"}}).status, 200);
  EXPECT_EQ(Send("GET", "/v1/models", "", {{"Authorization", "Bearer k1"}}).status, 200);
  EXPECT_EQ(Send("GET", "/live").status, 200);
  EXPECT_EQ(Send("GET", "/ready").status, 200);
  EXPECT_EQ(Send("GET", "/health").status, 200);
  EXPECT_EQ(Send("GET", "/metrics").status, 200);
}

TEST_F(HttpServerTest, MetricsAuthClosesTheProbes) {
  StartServer({}, [](HttpServerOptions& o) {
    o.api_keys = {"k"};
    o.metrics_auth = true;
  });
  ExpectError(Send("GET", "/metrics"), 401, "AuthenticationError");
  ExpectError(Send("GET", "/ready"), 401, "AuthenticationError");
  EXPECT_EQ(Send("GET", "/metrics", "", {{"Authorization", "Bearer k"}}).status, 200);
}

// CORS is off by default; with allowed origins, a browser's preflight gets a 204 without a key,
// and every response to a listed origin (errors and streams included) carries
// Access-Control-Allow-Origin, so the page can read it.
const std::map<std::string, std::string> kPreflight = {{"Origin", "https://app.example"},
                                                       {"Access-Control-Request-Method", "POST"},
                                                       {"Access-Control-Request-Headers", "authorization, content-type"}};

TEST_F(HttpServerTest, CorsIsOffByDefault) {
  StartServer();
  ClientResponse pre = Send("OPTIONS", "/v1/chat/completions", "", kPreflight);
  EXPECT_EQ(pre.status, 405);
  EXPECT_EQ(pre.Header("access-control-allow-origin"), "");
  EXPECT_EQ(Send("GET", "/v1/models", "", {{"Origin", "https://app.example"}}).Header("access-control-allow-origin"), "");
}

TEST_F(HttpServerTest, CorsForListedOrigins) {
  StartServer({}, [](HttpServerOptions& o) {
    o.api_keys = {"k"};
    o.cors_allowed_origins = {"https://app.example"};
  });
  ClientResponse pre = Send("OPTIONS", "/v1/chat/completions", "", kPreflight);
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.Header("access-control-allow-origin"), "https://app.example");
  EXPECT_THAT(pre.Header("access-control-allow-methods"), HasSubstr("POST"));
  EXPECT_EQ(pre.Header("access-control-allow-headers"), "authorization, content-type");
  EXPECT_EQ(pre.Header("vary"), "Origin");
  EXPECT_EQ(pre.Header("content-length"), "");
  ClientResponse ok = Send("POST", "/v1/chat/completions", ChatBody().dump(),
                           {{"Origin", "https://app.example"}, {"Authorization", "Bearer k"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.Header("access-control-allow-origin"), "https://app.example");
  ClientResponse stream = Send("POST", "/v1/chat/completions", ChatBody({{"stream", true}}).dump(),
                               {{"Origin", "https://app.example"}, {"Authorization", "Bearer k"}});
  EXPECT_EQ(stream.status, 200) << stream.body;
  EXPECT_THAT(stream.Header("content-type"), StartsWith("text/event-stream"));
  EXPECT_EQ(stream.Header("access-control-allow-origin"), "https://app.example");
  ClientResponse denied = Send("POST", "/v1/chat/completions", ChatBody().dump(), {{"Origin", "https://app.example"}});
  EXPECT_EQ(denied.status, 401);
  EXPECT_EQ(denied.Header("access-control-allow-origin"), "https://app.example");
  ClientResponse other = Send("OPTIONS", "/v1/chat/completions", "",
                              {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "POST"}});
  EXPECT_NE(other.status, 204);
  EXPECT_EQ(other.Header("access-control-allow-origin"), "");
}

TEST_F(HttpServerTest, CorsWildcardAllowsAnyOrigin) {
  StartServer({}, [](HttpServerOptions& o) { o.cors_allowed_origins = {"*"}; });
  ClientResponse any = Send("GET", "/v1/models", "", {{"Origin", "https://anything.example"}});
  EXPECT_EQ(any.Header("access-control-allow-origin"), "*");
  EXPECT_EQ(any.Header("vary"), "");
}

// Past server.max_connections a new connection gets a 503 with Retry-After and is closed; once
// a connection goes away, a new one is served again.
TEST_F(HttpServerTest, ConnectionsBeyondTheLimitGet503) {
  StartServer({}, [](HttpServerOptions& o) { o.max_connections = 2; });
  auto held = std::make_unique<Client>(server_->port());
  Client second(server_->port());
  ASSERT_EQ(held->Send("GET", "/health").status, 200);  // both connections are sessions now
  ASSERT_EQ(second.Send("GET", "/health").status, 200);
  ClientResponse over = Send("GET", "/v1/models");
  ExpectError(over, 503, "ServiceUnavailableError");
  EXPECT_EQ(over.Header("retry-after"), "1");
  EXPECT_EQ(over.Header("connection"), "close");
  held.reset();  // the server sees the close and ends that session
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {
    status = Send("GET", "/v1/models").status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpServerTest, BodyLimitIs413) {
  StartServer({}, [](HttpServerOptions& o) { o.max_request_bytes = 256; });
  Json big = ChatBody({{"messages", {{{"role", "user"}, {"content", std::string(1000, 'a')}}}}});
  ExpectError(Post("/v1/chat/completions", big), 413, "RequestEntityTooLargeError");
  EXPECT_EQ(Post("/v1/chat/completions", ChatBody()).status, 200);
}

TEST_F(HttpServerTest, CompressedBodyIs415AndBadJsonSaysWhere) {
  StartServer();
  ClientResponse gz = Send("POST", "/v1/chat/completions", "\x1f\x8b\x08",
                           {{"Content-Encoding", "gzip"}});
  ExpectError(gz, 415, "UnsupportedMediaTypeError");
  EXPECT_THAT(gz.Json()["error"]["message"].get<std::string>(), HasSubstr("'gzip' is not supported"));
  EXPECT_EQ(Send("POST", "/v1/chat/completions", ChatBody().dump(), {{"Content-Encoding", "identity"}}).status,
            200);
  ClientResponse bad = Send("POST", "/v1/completions", R"({"prompt": "hi",})");
  ExpectError(bad, 400, "BadRequestError");
  EXPECT_THAT(bad.Json()["error"]["message"].get<std::string>(), HasSubstr("line 1, column 17"));
}

TEST_F(HttpServerTest, OverloadGives429WithRetryAfter) {
  FakeEngineLoop::Options eo;
  eo.capacity = 1;
  eo.hold = true;
  StartServer(eo, [](HttpServerOptions& o) { o.retry_after_s = 3; });
  Client held(server_->port());
  held.WriteRequest("POST", "/v1/chat/completions", ChatBody().dump());
  ASSERT_TRUE(engine_->WaitForSubmitted(1, kWait));
  ClientResponse r = Post("/v1/chat/completions", ChatBody());
  ExpectError(r, 429, "RateLimitError");
  EXPECT_EQ(r.Header("retry-after"), "3");
  engine_->Release();
  EXPECT_EQ(held.ReadResponse().status, 200);
  EXPECT_EQ(Send("GET", "/ready").status, 200);
}

TEST_F(HttpServerTest, OverloadStatus503AndDraining) {
  FakeEngineLoop::Options eo;
  eo.submit_status = absl::ResourceExhaustedError("queue full");
  StartServer(eo, [](HttpServerOptions& o) { o.overload_status = 503; });
  ClientResponse r = Post("/v1/completions", {{"prompt", "a"}});
  ExpectError(r, 503, "ServiceUnavailableError");
  EXPECT_EQ(r.Header("retry-after"), "1");
}

TEST_F(HttpServerTest, DisconnectMidStreamAbortsOnce) {
  FakeEngineLoop::Options eo;
  eo.hold = true;
  StartServer(eo);
  Client c(server_->port());
  c.WriteRequest("POST", "/v1/chat/completions", ChatBody({{"stream", true}}).dump());
  std::string head = c.ReadUntil("\"role\"");  // headers and the role chunk arrived
  EXPECT_THAT(head, HasSubstr("text/event-stream"));
  c.Close();
  ASSERT_TRUE(engine_->WaitForAborts(1, kWait));
  ASSERT_TRUE(engine_->WaitForIdle(kWait));
  EXPECT_EQ(engine_->aborts(), std::vector<std::string>{engine_->submitted()[0].id});
}

TEST_F(HttpServerTest, DisconnectWhileWaitingNonStreamingAborts) {
  FakeEngineLoop::Options eo;
  eo.hold = true;
  StartServer(eo);
  {
    Client c(server_->port());
    c.WriteRequest("POST", "/v1/completions", Json({{"prompt", {"a", "b"}}}).dump());
    ASSERT_TRUE(engine_->WaitForSubmitted(2, kWait));
    c.Close();
  }
  ASSERT_TRUE(engine_->WaitForAborts(2, kWait));
  ASSERT_TRUE(engine_->WaitForIdle(kWait));
  std::vector<std::string> aborts = engine_->aborts();
  std::sort(aborts.begin(), aborts.end());
  std::vector<std::string> ids = {engine_->submitted()[0].id, engine_->submitted()[1].id};
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(aborts, ids);
}

TEST_F(HttpServerTest, KeepAliveAcrossStreamingAndPlainResponses) {
  StartServer();
  Client c(server_->port());
  for (int i = 0; i < 3; ++i) {
    ClientResponse s = c.Send("POST", "/v1/chat/completions", ChatBody({{"stream", true}}).dump());
    ASSERT_EQ(s.status, 200);
    EXPECT_EQ(SseData(s.body).back(), "[DONE]");
    ClientResponse p = c.Send("POST", "/v1/completions", R"({"prompt":"a","max_tokens":1})");
    ASSERT_EQ(p.status, 200) << p.body;
    EXPECT_EQ(c.Send("GET", "/v1/models").status, 200);
  }
  EXPECT_TRUE(engine_->aborts().empty());
}

TEST_F(HttpServerTest, SixtyFourConcurrentStreamsComplete) {
  FakeEngineLoop::Options eo;
  eo.step_interval = 200us;
  StartServer(eo);
  constexpr int kStreams = 64;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      Client c(server_->port());
      ClientResponse r = c.Send(
          "POST", "/v1/completions",
          Json({{"prompt", "pq"}, {"user", std::to_string(i)}, {"max_tokens", 8}, {"stream", true},
                {"stream_options", {{"include_usage", true}}}})
              .dump());
      std::vector<std::string> data = SseData(r.body);
      if (r.status != 200 || data.size() != 8 + 2 || data.back() != "[DONE]") return;
      Json usage = Json::parse(data[data.size() - 2])["usage"];
      if (usage["completion_tokens"] == 8 && usage["prompt_tokens"] == 3) ++ok;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kStreams);
  EXPECT_TRUE(engine_->aborts().empty());
}

TEST_F(HttpServerTest, ModelWithoutChatTemplateStillServesCompletions) {
  StartServer({}, nullptr, /*chat_template=*/"");
  ClientResponse chat = Post("/v1/chat/completions", ChatBody());
  ExpectError(chat, 400, "BadRequestError");
  EXPECT_THAT(chat.body, HasSubstr("no chat template"));
  EXPECT_EQ(Post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 1}}).status, 200);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  StartServer();
  Client c(server_->port());
  const std::string body = R"({"prompt":"a","max_tokens":1})";
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  boost::asio::write(c.socket(), boost::asio::buffer(head));
  EXPECT_THAT(c.ReadUntil("\r\n\r\n"), StartsWith("HTTP/1.1 100 Continue\r\n"));
  boost::asio::write(c.socket(), boost::asio::buffer(body));
  ClientResponse r = c.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["choices"][0]["text"], "Hello");
}

TEST_F(HttpServerTest, StopAbortsInFlightRequests) {
  FakeEngineLoop::Options eo;
  eo.hold = true;
  StartServer(eo);
  Client c(server_->port());
  c.WriteRequest("POST", "/v1/completions", R"({"prompt":"a"})");
  ASSERT_TRUE(engine_->WaitForSubmitted(1, kWait));
  server_->Stop();
  EXPECT_EQ(engine_->aborts().size(), 1u);
}

TEST(SseEventTest, UnicodeLineSeparatorsAreEscaped) {
  // U+0085, U+2028, U+2029 in a string: \u escapes, so that no client splits the data line at
  // them; the JSON value is the same.
  const std::string text = "a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xa9" "d\xc3\xa9";
  const std::string payload = nlohmann::json{{"text", text}}.dump();
  const std::string event = SseEvent(payload);
  ASSERT_EQ(event.rfind("data: ", 0), 0u);
  const std::string data = event.substr(6, event.size() - 8);
  EXPECT_EQ(data.find("\xc2\x85"), std::string::npos);
  EXPECT_EQ(data.find("\xe2\x80\xa8"), std::string::npos);
  EXPECT_NE(data.find("\\u2029"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(data)["text"], text);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
}

}  // namespace
}  // namespace peng::server
