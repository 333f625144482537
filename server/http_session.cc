#include "server/http_session.h"

#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/log.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/http/read.hpp"
#include "server/json_text.h"
#include "server/openai_error.h"
#include "server/openai_responses.h"
#include "server/sse.h"

namespace peng::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

constexpr size_t kMonitorReadBytes = 4096;
constexpr size_t kMaxPipelinedBytes = 64 * 1024;  // stop watching beyond this much read-ahead
constexpr std::chrono::seconds kLingerTimeout{5};

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Delivers one submitted request's events to its session's strand. Holds the session weakly:
// once the connection is gone (and its requests aborted) the remaining events are dropped.
class SessionStream final : public RequestStream {
 public:
  SessionStream(std::weak_ptr<HttpSession> session, std::shared_ptr<ServerContext> ctx,
                uint64_t seq, int prompt_index)
      : session_(std::move(session)), ctx_(std::move(ctx)), seq_(seq),
        prompt_index_(prompt_index) {}

  void OnEvent(TokenEvent event) override {
    ctx_->gate.RunIfOpen([&] {
      std::shared_ptr<HttpSession> s = session_.lock();
      if (s == nullptr) return;
      auto ex = s->executor();
      net::post(ex, [s = std::move(s), seq = seq_, p = prompt_index_,
                     ev = std::move(event)]() mutable { s->OnEngineEvent(seq, p, std::move(ev)); });
    });
  }

 private:
  std::weak_ptr<HttpSession> session_;
  std::shared_ptr<ServerContext> ctx_;
  uint64_t seq_;
  int prompt_index_;
};

}  // namespace

HttpSession::HttpSession(net::ip::tcp::socket socket, std::shared_ptr<ServerContext> ctx)
    : stream_(std::move(socket)), ctx_(std::move(ctx)) {
  ctx_->connections.fetch_add(1);
}

HttpSession::~HttpSession() {
  ctx_->connections.fetch_sub(1);
  // Backstop for teardown paths that did not see the disconnect (server stop).
  if (gen_ != nullptr && !gen_->ended) AbortUnfinished();
  SetResponseOpen(false);
}

void HttpSession::SetResponseOpen(bool open) {
  if (open == response_open_) return;
  response_open_ = open;
  ctx_->open_responses.fetch_add(open ? 1 : -1);
}

void HttpSession::Start() {
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->DoRead(); });
}

// ---------------------------------------------------------------------------------- reading

void HttpSession::DoRead() {
  if (closed_) return;
  cors_origin_.clear();  // set per request in Dispatch
  parser_.emplace();
  parser_->body_limit(static_cast<uint64_t>(ctx_->options.max_request_bytes));
  stream_.expires_after(ctx_->options.idle_timeout);
  http::async_read_header(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->OnHeader(ec);
                          });
}

void HttpSession::OnHeader(beast::error_code ec) {
  start_ = std::chrono::steady_clock::now();
  if (!ec) {
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
      static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                       [self = shared_from_this()](beast::error_code ec2, size_t) {
                         if (ec2) return self->Close();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
    return;
  }
  OnRead(ec);
}

void HttpSession::ReadBody() {
  if (parser_->is_done()) return OnRead({});
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
}

void HttpSession::OnRead(beast::error_code ec) {
  if (ec == http::error::body_limit) {
    match_ = MatchRoute(std::string(parser_->get().target()));
    keep_alive_ = false;  // the rest of the body is not read
    return Reply(ErrorReply(MakeApiError(
        413, absl::StrCat("The request body exceeds the limit of ",
                          ctx_->options.max_request_bytes, " bytes."))));
  }
  const bool malformed = ec && ec != http::error::end_of_stream &&
                         ec != http::error::partial_message &&
                         &ec.category() == &http::make_error_code(http::error::bad_method).category();
  if (malformed) {
    match_ = RouteMatch{Route::kNone, "other", "", "", {}};
    keep_alive_ = false;
    return Reply(ErrorReply(MakeApiError(400, absl::StrCat("Malformed HTTP request: ",
                                                           ec.message()))));
  }
  if (ec) return Close();  // the client went away, idle timeout, or a socket error
  stream_.expires_never();  // generation may take long; disconnects are detected by reads
  Dispatch();
}

void HttpSession::Dispatch() {
  const Request& req = parser_->get();
  keep_alive_ = req.keep_alive();
  // HTTP/1.0 has no chunked encoding (nginx proxies with it by default): a stream's body then
  // runs until the connection closes.
  http10_ = req.version() < 11;
  head_ = req.method() == http::verb::head;
  const std::string target(req.target());
  match_ = MatchRoute(target);
  const auto header = [&](http::field f) {
    const beast::string_view v = req[f];
    return std::string_view(v.data(), v.size());
  };
  cors_origin_ = CorsAllowOrigin(*ctx_, header(http::field::origin));
  // A CORS preflight carries no credentials: it is answered before the key check.
  if (!cors_origin_.empty() && req.method() == http::verb::options &&
      !req[http::field::access_control_request_method].empty()) {
    return Reply(CorsPreflightReply(header(http::field::access_control_request_headers)));
  }
  const bool under_v1 = target.rfind("/v1/", 0) == 0;
  const bool needs_auth = !ctx_->options.api_keys.empty() &&
                          (match_.route == Route::kNone ? under_v1
                                                        : RequiresAuth(*ctx_, match_.route));
  if (needs_auth && !Authorized(*ctx_, std::string(req[http::field::authorization]))) {
    return Reply(ErrorReply(MakeApiError(401, "Incorrect or missing API key. Send it as "
                                              "'Authorization: Bearer <key>'.")));
  }
  if (match_.route == Route::kNone) {
    return Reply(ErrorReply(MakeApiError(404, absl::StrCat("Not Found: ", target))));
  }
  // HEAD is GET without the body, wherever GET is allowed.
  const std::vector<absl::string_view> allowed = absl::StrSplit(match_.allowed, ", ");
  const bool get_allowed = absl::c_linear_search(allowed, "GET");
  const std::string method = head_ && get_allowed ? "GET" : std::string(req.method_string());
  if (!absl::c_linear_search(allowed, method)) {
    HttpReply r = ErrorReply(MakeApiError(
        405, absl::StrCat("Method ", std::string(req.method_string()), " is not allowed for ",
                          match_.label, "; use ", match_.allowed, ".")));
    r.headers.emplace_back("Allow", get_allowed ? absl::StrCat(match_.allowed, ", HEAD") : match_.allowed);
    return Reply(std::move(r));
  }
  // Bodies are read as sent: a compressed one would only fail later as "not valid JSON".
  if (const beast::string_view coding = req[http::field::content_encoding];
      !coding.empty() && !beast::iequals(coding, "identity")) {
    return Reply(ErrorReply(MakeApiError(
        415, absl::StrCat("Content-Encoding '", std::string(coding),
                          "' is not supported; send the request body uncompressed."))));
  }
  if (match_.route == Route::kChatCompletions || match_.route == Route::kCompletions ||
      match_.route == Route::kResponses) {
    return StartGeneration(match_.route, req.body());
  }
  Reply(HandleSimpleRoute(*ctx_, match_, method, req.body()));
}

// ------------------------------------------------------------------------------- generation

void HttpSession::StartGeneration(Route route, const std::string& body) {
  const ApiKind kind = route == Route::kCompletions ? ApiKind::kCompletion : ApiKind::kChat;
  const bool responses = route == Route::kResponses;
  const HttpServerOptions& opt = ctx_->options;
  auto error = [&](const absl::Status& s) {
    Reply(ErrorReply(ApiErrorFromStatus(responses ? AsResponsesError(s) : s, opt.overload_status,
                                        opt.retry_after_s)));
  };
  absl::StatusOr<nlohmann::json> parsed = ParseJsonBody(body);
  if (!parsed.ok()) return error(parsed.status());
  std::vector<std::string> ignored;
  // The Responses API runs as the chat request it translates to (openai_responses.h).
  nlohmann::ordered_json responses_request;
  nlohmann::ordered_json conversation;  // null: the response is not stored
  std::string chat_text;
  if (responses) {
    responses_request = nlohmann::ordered_json::parse(body);  // valid: ParseJsonBody read it
    absl::StatusOr<ResponsesChat> chat = ResponsesToChat(responses_request, ctx_->responses.get(), &ignored);
    if (!chat.ok()) return error(chat.status());
    chat_text = chat->chat.dump();
    *parsed = nlohmann::json::parse(chat_text);
    if (chat->store) conversation = std::move(chat->conversation);
  }
  absl::StatusOr<CompletionJob> job =
      ParseCompletionRequest(kind, *parsed, ctx_->model, responses ? nullptr : &ignored, responses ? chat_text : body);
  auto warn_ignored = [&](const std::string& request_id) {
    if (ignored.empty()) return;
    Log(LogLevel::kWarning, "http",
        absl::StrCat(match_.label, ": ignoring unknown field(s): ", absl::StrJoin(ignored, ", "),
                     request_id.empty() ? "" : " request_id=", request_id));
  };
  if (!job.ok()) {
    warn_ignored("");
    return error(job.status());
  }

  auto gen = std::make_unique<Generation>();
  gen->seq = next_seq_++;
  gen->stream = job->stream;
  gen->job = *std::move(job);
  const std::string id = RandomId(responses ? "resp_" : kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-", 32);
  if (responses) {
    ResponseStore* store = conversation.is_null() ? nullptr : ctx_->responses.get();
    gen->responder = std::make_unique<ResponsesResponder>(gen->job, std::move(responses_request),
                                                          *ctx_->deps.tokenizer, id, UnixNow(), store,
                                                          std::move(conversation));
  } else {
    gen->responder = std::make_unique<CompletionResponder>(gen->job, *ctx_->deps.tokenizer, id, UnixNow());
  }
  warn_ignored(id);
  const CompletionJob& j = gen->job;
  int64_t prompt_tokens = 0;
  for (const auto& prompt : j.prompts) prompt_tokens += static_cast<int64_t>(prompt.size()) * j.n;
  if (absl::Status s = ctx_->deps.engine->CheckQueueFits(static_cast<int64_t>(j.prompts.size()), prompt_tokens);
      !s.ok()) {
    return error(s);
  }
  gen_ = std::move(gen);
  for (size_t p = 0; p < j.prompts.size(); ++p) {
    auto req = std::make_unique<GenerateRequest>();
    req->id = j.prompts.size() == 1 ? id : absl::StrCat(id, "-", p);
    req->prompt = j.prompts[p];
    req->sampling = j.sampling;
    req->stop = j.stop;
    req->stop.max_tokens = j.MaxTokensFor(p);
    req->priority = j.priority;
    req->n = j.n;
    req->prompt_logprobs = j.prompt_logprobs;
    req->json_object = j.json_object;
    req->json_schema = j.json_schema;
    req->guided_choice = j.guided_choice;
    req->guided_regex = j.guided_regex;
    req->tool_call_schema = j.tool_call_schema;
    req->arrival = std::chrono::steady_clock::now();
    const std::string rid = req->id;
    auto stream = std::make_shared<SessionStream>(weak_from_this(), ctx_, gen_->seq,
                                                  static_cast<int>(p));
    absl::Status s = ctx_->deps.engine->Submit(std::move(req), std::move(stream));
    if (!s.ok()) {
      AbortUnfinished();  // the prompts of this request already submitted
      gen_.reset();
      return error(s);
    }
    gen_->request_ids.push_back(rid);
    gen_->choices_left.push_back(j.n);
  }
  SetResponseOpen(true);
  if (gen_->stream) {
    if (http10_) keep_alive_ = false;  // the end of the body is the end of the connection
    Write(SseResponseHead(keep_alive_, /*chunked=*/!http10_, CorsHeaders(cors_origin_)));
    for (const std::string& f : gen_->responder->StreamStart()) Write(BodyChunk(f));
  }
  StartMonitor();
}

void HttpSession::OnEngineEvent(uint64_t seq, int prompt_index, TokenEvent event) {
  if (closed_ || gen_ == nullptr || gen_->seq != seq || gen_->ended) return;
  if (prompt_index < 0 || prompt_index >= static_cast<int>(gen_->choices_left.size())) return;
  if (event.finish_reason != FinishReason::kNone && gen_->choices_left[prompt_index] > 0) {
    --gen_->choices_left[prompt_index];
  }
  if (event.finish_reason == FinishReason::kError) {
    return EndGenerationWithError(
        MakeApiError(500, event.error.empty() ? "internal engine error" : event.error));
  }
  Responder& r = *gen_->responder;
  if (gen_->stream) {
    for (const std::string& f : r.StreamEvent(prompt_index, event)) Write(BodyChunk(f));
    if (!r.done()) return;
    for (const std::string& f : r.StreamEnd()) Write(BodyChunk(f));
    gen_->ended = true;
    return FinishResponse(200, LastChunk());
  }
  r.Collect(prompt_index, event);
  if (!r.done()) return;
  gen_->ended = true;
  if (r.NothingServed()) {
    // Aborted before a token, which only a drain does to a connected client: a 503 that
    // clients and load balancers retry elsewhere, rather than a 200 with nothing in it.
    ApiError e = MakeApiError(503, "the server shut down before this request was served; retry it");
    e.retry_after_s = std::max(1, ctx_->options.retry_after_s);
    return Reply(ErrorReply(e));
  }
  Reply(JsonReply(200, r.Body()));
}

void HttpSession::EndGenerationWithError(const ApiError& error) {
  AbortUnfinished();
  gen_->ended = true;
  if (!gen_->stream) return Reply(ErrorReply(error));
  // Headers (200) are out: the error travels in the stream.
  for (const std::string& f : gen_->responder->StreamError(error)) Write(BodyChunk(f));
  FinishResponse(200, LastChunk());
}

void HttpSession::AbortUnfinished() {
  if (gen_ == nullptr) return;
  for (size_t p = 0; p < gen_->request_ids.size(); ++p) {
    if (gen_->choices_left[p] > 0) {
      gen_->choices_left[p] = 0;
      ctx_->deps.engine->Abort(gen_->request_ids[p]);
    }
  }
}

void HttpSession::StartMonitor() {
  if (closed_ || monitor_pending_) return;
  monitor_pending_ = true;
  stream_.async_read_some(buffer_.prepare(kMonitorReadBytes),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->OnMonitor(ec, n);
                          });
}

void HttpSession::OnMonitor(beast::error_code ec, size_t n) {
  monitor_pending_ = false;
  if (!ec) buffer_.commit(n);
  if (resume_after_monitor_) {  // cancelled (or raced with data) to read the next request
    resume_after_monitor_ = false;
    if (!ec || ec == net::error::operation_aborted) return DoRead();
    return Close();
  }
  if (closed_) return;
  if (ec) return ConnectionLost();  // EOF or reset: the client is gone
  // Read-ahead (a pipelined request) stays in buffer_ for the next DoRead.
  if (gen_ != nullptr && !gen_->ended && buffer_.size() < kMaxPipelinedBytes) StartMonitor();
}

// ---------------------------------------------------------------------------------- writing

void HttpSession::Reply(HttpReply reply) {
  for (auto& h : CorsHeaders(cors_origin_)) reply.headers.push_back(std::move(h));
  std::string bytes = SerializeReply(reply, keep_alive_);
  if (head_) bytes.resize(bytes.size() - reply.body.size());  // the headers alone, Content-Length kept
  FinishResponse(reply.status, std::move(bytes));
}

void HttpSession::LogRequest(int status, double seconds) const {
  // Probes and scrapes are the load balancer's and Prometheus's business (a 503 from /ready is
  // the answer they ask for): debug only.
  const bool routine = match_.route == Route::kHealth || match_.route == Route::kLive ||
                       match_.route == Route::kReady || match_.route == Route::kMetrics;
  // 429 and 503 are load shedding and draining, which the server does on purpose: warnings.
  const LogLevel level = routine                          ? LogLevel::kDebug
                         : status == 429 || status == 503 ? LogLevel::kWarning
                         : status >= 500                  ? LogLevel::kError
                                                          : LogLevel::kInfo;
  if (!LogEnabled(level)) return;
  std::string line = absl::StrFormat("%s %s %d %.3f s", parser_ ? std::string(parser_->get().method_string()) : "-",
                                     match_.label, status, seconds);
  if (gen_ != nullptr && !gen_->request_ids.empty()) {
    absl::StrAppend(&line, " request_id=", absl::StrJoin(gen_->request_ids, ","));
  }
  Log(level, "http", line);
}

std::string HttpSession::BodyChunk(std::string_view data) const {
  return http10_ ? std::string(data) : HttpChunk(data);
}

std::string HttpSession::LastChunk() const { return http10_ ? std::string() : std::string(kLastChunk); }

void HttpSession::Write(std::string bytes) {
  if (closed_) return;
  pending_ += bytes;
  if (!writing_) DoWrite();
}

void HttpSession::DoWrite() {
  inflight_.clear();
  inflight_.swap(pending_);  // coalesce everything queued into one write
  writing_ = true;
  net::async_write(stream_, net::buffer(inflight_),
                   [self = shared_from_this()](beast::error_code ec, size_t) {
                     self->OnWrite(ec);
                   });
}

void HttpSession::OnWrite(beast::error_code ec) {
  writing_ = false;
  if (ec) return ConnectionLost();
  if (!pending_.empty()) return DoWrite();
  if (response_done_) AfterResponse();
}

void HttpSession::FinishResponse(int status, std::string last_bytes) {
  status_ = status;
  response_done_ = true;
  // Recorded before the last bytes are queued: queueing may send them at once, and a client
  // that has read the response (and asks /metrics on another connection) must see it counted.
  if (!recorded_) {
    recorded_ = true;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    ctx_->metrics.Record(match_.label, status_, seconds);
    LogRequest(status_, seconds);
  }
  Write(std::move(last_bytes));
  if (!writing_ && pending_.empty()) AfterResponse();
}

void HttpSession::AfterResponse() {
  response_done_ = false;
  gen_.reset();
  SetResponseOpen(false);
  if (!keep_alive_) return Close();
  recorded_ = false;
  if (monitor_pending_) {
    // Nothing is being written now, so cancel() only stops the watch read; its handler
    // then starts the next request read.
    resume_after_monitor_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  DoRead();
}

void HttpSession::ConnectionLost() {
  if (closed_) return;
  if (gen_ != nullptr && !gen_->ended) {
    AbortUnfinished();
    gen_->ended = true;
    if (!recorded_) {
      recorded_ = true;  // 499: client closed the request (nginx's convention)
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      ctx_->metrics.Record(match_.label, 499, seconds);
      LogRequest(499, seconds);
    }
  }
  Close();
}

void HttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  SetResponseOpen(false);
  beast::error_code ignored;
  // Send FIN, then discard what the client still sends (e.g. the unread body after a 413)
  // until it closes or the linger timeout passes: closing with unread input would reset the
  // connection and could destroy the response still in flight.
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  if (monitor_pending_) {
    // Its handler sees closed_ and returns; the socket closes with the session.
    stream_.socket().cancel(ignored);
    return;
  }
  stream_.expires_after(kLingerTimeout);
  Linger();
}

void HttpSession::Linger() {
  stream_.async_read_some(net::buffer(linger_buf_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (!ec) return self->Linger();
                            beast::error_code ignored;
                            self->stream_.socket().close(ignored);
                          });
}

}  // namespace peng::server
