// ServerContext: what every HTTP session shares, built once by HttpServer::Create and
// immutable afterwards (except the instruments, which are thread-safe, and the event gate).
// Sessions hold it by shared_ptr so that a session outliving the server's threads (destroyed
// with the io_context) still finds it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "base/metrics.h"
#include "server/http_server.h"
#include "server/openai_request.h"
#include "server/response_store.h"

namespace peng::server {

// Open while the server runs. Engine-thread callbacks post to a session's strand only while
// holding the gate open, so that nothing is posted to an io_context being torn down.
class EventGate {
 public:
  template <typename F>
  void RunIfOpen(F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_) f();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
  }

 private:
  std::mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
};

// peng:http_requests_total{route,status} and peng:http_request_duration_seconds{route}.
struct HttpMetrics {
  metrics::Family<metrics::Counter>* requests = nullptr;
  metrics::Family<metrics::Histogram>* duration = nullptr;

  void Record(const std::string& route, int status, double seconds) const;
};

struct ServerContext {
  HttpServerOptions options;
  HttpServerDeps deps;
  ModelContext model;               // model.chat_template: the override or the model's own
  HttpMetrics metrics;
  std::shared_ptr<ResponseStore> responses;  // the Responses API's stored responses
  int64_t created = 0;              // unix seconds at startup (model card "created")
  EventGate gate;
  // Generations whose response has not been fully written yet: Stop waits for them to flush
  // (the engine has sent every stream its final event by then) before tearing down.
  std::atomic<int> open_responses{0};
  std::atomic<int> connections{0};  // live HttpSessions (options.max_connections bounds it)
};

}  // namespace peng::server
