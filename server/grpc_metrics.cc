#include "server/grpc_metrics.h"

#include <chrono>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "server/request_metrics.h"

namespace peng::server {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::experimental::InterceptionHookPoints;

struct GrpcFamilies {
  metrics::Family<metrics::Counter>* requests;
  metrics::Family<metrics::Histogram>* duration;
};

// One call: the clock starts when the call is created; the code is the status the server
// sends. A call that ends without one (the client went away first) counts as CANCELLED.
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcFamilies families, std::string method)
      : families_(families), method_(std::move(method)) {}

  ~MetricsInterceptor() override {
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const grpc::StatusCode code = code_.value_or(grpc::StatusCode::CANCELLED);
    // gRPC's codes are absl's, number for number ("OK", "INVALID_ARGUMENT", ...).
    families_.requests->Labels({method_, absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}).Inc();
    families_.duration->Labels({method_}).Observe(seconds);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      code_ = methods->GetSendStatus().error_code();
    }
    methods->Proceed();
  }

 private:
  const GrpcFamilies families_;
  const std::string method_;
  const Clock::time_point start_ = Clock::now();
  std::optional<grpc::StatusCode> code_;
};

class MetricsInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcFamilies families) : families_(families) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(families_, info->method() != nullptr ? info->method() : "unknown");
  }

 private:
  const GrpcFamilies families_;
};

}  // namespace

GrpcMetrics::GrpcMetrics(metrics::Registry& registry)
    : requests_(&registry.AddCounter("peng:grpc_requests_total", "gRPC calls by method and status code.",
                                     {"method", "code"})),
      duration_(&registry.AddHistogram("peng:grpc_request_duration_seconds",
                                       "gRPC call latency (from its arrival to its status) by method.",
                                       kRequestDurationBuckets, {"method"})) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> GrpcMetrics::InterceptorFactory() const {
  return std::make_unique<MetricsInterceptorFactory>(GrpcFamilies{requests_, duration_});
}

}  // namespace peng::server
