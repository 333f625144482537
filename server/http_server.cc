#include "server/http_server.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/crash_report.h"
#include "base/log.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "boost/asio/write.hpp"
#include "server/chat_template.h"
#include "server/http_context.h"
#include "server/http_routes.h"
#include "server/http_session.h"
#include "server/request_metrics.h"

namespace peng::server {

namespace net = boost::asio;
using tcp = net::ip::tcp;

void HttpMetrics::Record(const std::string& route, int status, double seconds) const {
  if (requests == nullptr) return;
  requests->Labels({route, std::to_string(status)}).Inc();
  duration->Labels({route}).Observe(seconds);
}

struct HttpServer::Impl {
  std::shared_ptr<ServerContext> ctx;
  std::unique_ptr<net::io_context> ioc;
  std::unique_ptr<net::executor_work_guard<net::io_context::executor_type>> work;
  std::unique_ptr<tcp::acceptor> acceptor;  // on its own strand
  std::unique_ptr<net::steady_timer> retry_timer;

  // One connection over server.max_connections: a 503 in OpenAI's error shape, then close.
  void RejectOverCapacity(tcp::socket socket) {
    HttpReply reply = ErrorReply(MakeApiError(
        503, absl::StrCat("The server has ", ctx->options.max_connections,
                          " open connections, its limit (server.max_connections); retry later.")));
    reply.headers.emplace_back("Retry-After", std::to_string(std::max(1, ctx->options.retry_after_s)));
    auto bytes = std::make_shared<std::string>(SerializeReply(reply, /*keep_alive=*/false));
    auto sock = std::make_shared<tcp::socket>(std::move(socket));
    ctx->metrics.Record("other", 503, 0.0);
    net::async_write(*sock, net::buffer(*bytes), [sock, bytes](boost::system::error_code, size_t) {
      boost::system::error_code ignored;
      sock->shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  void DoAccept() {
    acceptor->async_accept(net::make_strand(*ioc), [this](boost::system::error_code ec,
                                                          tcp::socket socket) {
      if (!acceptor->is_open()) return;
      if (ec) {
        // Out of descriptors and the like: back off instead of spinning.
        Log(LogLevel::kError, "http", absl::StrCat("accept failed: ", ec.message()));
        retry_timer->expires_after(std::chrono::milliseconds(50));
        retry_timer->async_wait([this](boost::system::error_code) {
          if (acceptor->is_open()) DoAccept();
        });
        return;
      }
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // SSE chunks are small
      if (ctx->connections.load() >= ctx->options.max_connections) {
        RejectOverCapacity(std::move(socket));
      } else {
        std::make_shared<HttpSession>(std::move(socket), ctx)->Start();
      }
      DoAccept();
    });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(HttpServerOptions options,
                                                               HttpServerDeps deps) {
  if (deps.engine == nullptr || deps.tokenizer == nullptr) {
    return absl::InvalidArgumentError("HttpServer needs an engine loop and a tokenizer");
  }
  if (options.overload_status != 429 && options.overload_status != 503) {
    return absl::InvalidArgumentError(
        absl::StrCat("overload_status must be 429 or 503, got ", options.overload_status));
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port must be in [0, 65535], got ",
                                                   options.port));
  }
  if (options.num_threads < 1 || options.max_request_bytes < 1 || options.max_model_len < 1 ||
      options.max_connections < 1) {
    return absl::InvalidArgumentError(
        "num_threads, max_request_bytes and max_model_len must be positive");
  }
  auto impl = std::make_unique<Impl>();
  auto ctx = std::make_shared<ServerContext>();
  ctx->options = options;
  ctx->deps = deps;
  ctx->created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  ModelContext& m = ctx->model;
  m.model_name = options.model_name;
  m.max_model_len = options.max_model_len;
  m.max_logprobs = options.max_logprobs;
  m.tokenizer = deps.tokenizer;
  m.UseChatTemplate(deps.chat_template);
  ctx->responses = std::make_shared<ResponseStore>(static_cast<size_t>(std::max(options.stored_responses, 0)),
                                                   static_cast<size_t>(std::max<int64_t>(options.stored_response_bytes, 0)));
  if (deps.registry != nullptr) {
    ctx->metrics.requests = &deps.registry->AddCounter(
        "peng:http_requests_total", "HTTP requests by route and status code.",
        {"route", "status"});
    ctx->metrics.duration = &deps.registry->AddHistogram(
        "peng:http_request_duration_seconds",
        "HTTP request latency (to the last byte of the response) by route.",
        kRequestDurationBuckets, {"route"});
  }
  impl->ctx = std::move(ctx);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(std::chrono::milliseconds(0)); }

absl::Status HttpServer::Start() {
  if (started_) return absl::FailedPreconditionError("HttpServer already started");
  Impl& s = *impl_;
  s.ioc = std::make_unique<net::io_context>(s.ctx->options.num_threads);
  boost::system::error_code ec;
  tcp::resolver resolver(*s.ioc);
  auto endpoints = resolver.resolve(s.ctx->options.host, std::to_string(s.ctx->options.port),
                                    tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve host '",
                                                   s.ctx->options.host, "': ", ec.message()));
  }
  const tcp::endpoint endpoint = *endpoints.begin();
  s.acceptor = std::make_unique<tcp::acceptor>(net::make_strand(*s.ioc));
  s.retry_timer = std::make_unique<net::steady_timer>(s.acceptor->get_executor());
  const std::string where = absl::StrCat(s.ctx->options.host, ":", s.ctx->options.port);
  s.acceptor->open(endpoint.protocol(), ec);
  if (!ec) s.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor->bind(endpoint, ec);
  if (!ec) s.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    s.acceptor.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
  }
  bound_port_ = s.acceptor->local_endpoint().port();
  started_ = true;
  s.work = std::make_unique<net::executor_work_guard<net::io_context::executor_type>>(
      s.ioc->get_executor());
  net::post(s.acceptor->get_executor(), [&s] { s.DoAccept(); });
  for (int i = 0; i < s.ctx->options.num_threads; ++i) {
    threads_.emplace_back([&s] {
      SetThreadName("peng-http");
      s.ioc->run();
    });
  }
  return absl::OkStatus();
}

void HttpServer::StopAccepting() {
  Impl& s = *impl_;
  if (!started_ || stopped_ || s.acceptor == nullptr) return;
  std::promise<void> done;
  net::post(s.acceptor->get_executor(), [&s, &done] {
    boost::system::error_code ignored;
    s.acceptor->close(ignored);
    s.retry_timer->cancel();
    done.set_value();
  });
  done.get_future().wait();
}

void HttpServer::Stop(std::chrono::milliseconds flush) {
  if (!started_ || stopped_) return;
  StopAccepting();
  stopped_ = true;
  Impl& s = *impl_;
  // The engine has drained (or aborted) every request, so each open response has its last
  // bytes queued or on their way: let them reach the clients before the sockets close.
  const auto deadline = std::chrono::steady_clock::now() + flush;
  while (s.ctx->open_responses.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.ctx->gate.Close();  // the engine posts nothing more
  s.work.reset();
  s.ioc->stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  s.retry_timer.reset();
  s.acceptor.reset();
  // Destroying the io_context destroys every session still held by a pending operation;
  // a session with a running generation aborts it (HttpSession's destructor).
  s.ioc.reset();
}

}  // namespace peng::server
