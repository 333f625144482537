// HttpServer: the OpenAI-compatible HTTP/1.1 frontend on Boost.Beast. One io_context run by a
// small fixed pool of threads serves every connection and every SSE stream asynchronously
// (no thread per connection or stream); each connection is a strand-serialised session.
// Generation requests go to the EngineLoop; its TokenEvents are posted back to the session's
// strand and forwarded as one JSON response or as SSE chunks. A client that disconnects while
// its request is queued or running causes exactly one EngineLoop::Abort per submitted request.
//
// Lifetime: the EngineLoop, Tokenizer, ChatTemplate, Registry and readiness flag must outlive
// the HttpServer. Start/Stop/StopAccepting/port may be called from any one controlling thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/metrics.h"
#include "engine/tokenizer.h"
#include "scheduler/engine_loop.h"

namespace peng {
class ChatTemplate;
}

namespace peng::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                      // 0 = an ephemeral port (see HttpServer::port())
  int num_threads = 2;                  // io_context threads
  std::vector<std::string> api_keys;    // empty = no authentication
  bool metrics_auth = false;            // also require a key on /live /ready /health /metrics
  std::vector<std::string> cors_allowed_origins;  // CORS: origins ("*" = any); empty = off
  int64_t max_request_bytes = 1 << 20;  // larger bodies get 413
  std::string model_name = "peng";      // the served model id
  int64_t max_model_len = 2048;         // context limit (prompt + completion tokens)
  int max_logprobs = 20;                // cap on logprobs / top_logprobs
  int overload_status = 429;            // 429 or 503 when the engine's queue is full
  int retry_after_s = 1;                // Retry-After on 429/503
  std::string version = "0.1.0";        // GET /version
  std::chrono::seconds idle_timeout{75};  // keep-alive: close an idle connection after this
  // Open connections at most; one more gets a 503 (Retry-After) and is closed, so a flood of
  // idle or slow clients cannot take every file descriptor the engine and models need.
  int max_connections = 1024;
  // Responses API: stored responses at most, and their bytes (server/response_store.h).
  int stored_responses = 1024;
  int64_t stored_response_bytes = 64 << 20;
};

// What the server uses but does not own.
struct HttpServerDeps {
  EngineLoop* engine = nullptr;             // required
  const Tokenizer* tokenizer = nullptr;     // required
  // The chat template override; null = parse tokenizer->chat_template() (if the model has
  // none, chat completions answer 400).
  const ChatTemplate* chat_template = nullptr;
  metrics::Registry* registry = nullptr;    // null = no /metrics content, no HTTP metrics
  const std::atomic<bool>* ready = nullptr; // null = always ready; false: /ready answers 503
};

class HttpServer {
 public:
  // Validates options and deps and parses the model's chat template when no override is given.
  // A model template the interpreter cannot parse is logged; chat requests then get a 400
  // naming the parse error, and completions still work.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(HttpServerOptions options,
                                                            HttpServerDeps deps);
  ~HttpServer();  // Stop() without waiting for responses to flush
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (errors: address in use, bad host), then starts the io threads.
  absl::Status Start();
  // The bound port (useful with options.port = 0); 0 before Start().
  int port() const { return bound_port_; }
  // Closes the listening socket; connections in progress continue (SIGTERM drain).
  void StopAccepting();
  // Stops accepting, waits up to `flush` for responses whose generations have ended to be
  // written out, then stops the io threads and closes every connection; requests still in the
  // engine are aborted. Idempotent.
  void Stop(std::chrono::milliseconds flush = std::chrono::milliseconds(2000));

  struct Impl;  // public so the .cc's session code can name it; defined there

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  int bound_port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace peng::server
