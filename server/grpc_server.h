// GrpcServer: the peng.v1.Inference gRPC frontend (proto/peng/v1/inference.proto) on gRPC's
// callback API, plus the standard grpc.health.v1.Health service and server reflection.
// Generate streams through one GenerateCall reactor per call (server/grpc_generate_call.h);
// the unary methods answer inline. Requests are validated and converted at this edge
// (server/grpc_convert.h) and reach the engine only through EngineLoop::Submit/Abort/Stats.
//
// Lifetime: the EngineLoop and Tokenizer must outlive the GrpcServer. Start, SetServing and
// Shutdown are called from one controlling thread; gRPC's own threads serve the calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/metrics.h"
#include "engine/tokenizer.h"
#include "scheduler/engine_loop.h"
#include "server/chat_template.h"

namespace grpc {
class Server;
}

namespace peng::server {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 50051;                    // 0 = an ephemeral port (see GrpcServer::port())
  std::vector<std::string> api_keys;   // empty = no authentication
  std::string model_name = "peng";     // the served model id
  int64_t max_model_len = 2048;        // context limit (prompt + completion tokens)
  int max_logprobs = 20;               // cap on sampling.logprobs
  int retry_after_s = 1;               // "retry-after" trailing metadata on RESOURCE_EXHAUSTED
  int64_t max_request_bytes = 4 << 20; // largest request message (server.max_request_bytes)
  // Generate's chat: this template (outliving the server); null = the model's own.
  const ChatTemplate* chat_template = nullptr;
};

class InferenceService;
class GrpcMetrics;

class GrpcServer {
 public:
  // With a `registry` (outliving the server), every call is counted in it (server/grpc_metrics.h).
  GrpcServer(GrpcServerOptions options, EngineLoop* engine, const Tokenizer* tokenizer,
             metrics::Registry* registry = nullptr);
  ~GrpcServer();  // Shutdown(now) if still running
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Binds and starts serving; health reports SERVING. Errors: bad options, address in use.
  absl::Status Start();
  // The bound port (useful with options.port = 0); 0 before Start().
  int port() const { return bound_port_; }
  // Health status of "" and "peng.v1.Inference": false (NOT_SERVING) while draining.
  void SetServing(bool serving);
  // Health NOT_SERVING, stop accepting calls, let running calls finish until `deadline`, then
  // cancel the rest (each cancelled Generate aborts its request). Blocks until every call is
  // done. Idempotent.
  void Shutdown(std::chrono::system_clock::time_point deadline);

 private:
  GrpcServerOptions options_;
  EngineLoop* engine_;
  const Tokenizer* tokenizer_;
  std::unique_ptr<GrpcMetrics> metrics_;  // null without a registry
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int bound_port_ = 0;
};

}  // namespace peng::server
