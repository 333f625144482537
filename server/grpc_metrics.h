// gRPC calls in /metrics, as HTTP requests are: peng:grpc_requests_total{method,code} and
// peng:grpc_request_duration_seconds{method} (from the call's arrival to its status), for every
// service on the server (peng.v1.Inference, grpc.health.v1.Health, reflection). A server
// interceptor sees each call's method and final status without the handlers' help.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "base/metrics.h"
#include "grpcpp/support/server_interceptor.h"

namespace peng::server {

// A call cancelled this close to its deadline, or past it, ended by the client's deadline: the
// server's deadline is the client's timeout from when the call arrived, so it falls a transit
// time after the client's own (a tester saw 1 of 12 expiries labelled CANCELLED).
inline constexpr std::chrono::milliseconds kDeadlineSlack{100};
inline bool DeadlineEnded(std::chrono::system_clock::time_point deadline) {
  return deadline != std::chrono::system_clock::time_point::max() &&
         std::chrono::system_clock::now() + kDeadlineSlack >= deadline;
}

// The two families, registered in a registry that must outlive every server using them.
// Calls to paths that are no method of the server's services are counted as method="unknown".
class GrpcMetrics {
 public:
  explicit GrpcMetrics(metrics::Registry& registry);
  // An interceptor factory for ServerBuilder::experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory() const;

 private:
  absl::flat_hash_set<std::string> methods_;
  metrics::Family<metrics::Counter>* requests_;
  metrics::Family<metrics::Histogram>* duration_;
};

}  // namespace peng::server
