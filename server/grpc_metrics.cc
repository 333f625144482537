#include "server/grpc_metrics.h"

#include <chrono>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/server_context.h"
#include "server/request_metrics.h"

namespace peng::server {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::experimental::InterceptionHookPoints;

struct GrpcFamilies {
  metrics::Family<metrics::Counter>* requests;
  metrics::Family<metrics::Histogram>* duration;
  const absl::flat_hash_set<std::string>* methods;  // the label values a method may take
};

// One call: the clock starts when the call is created; the code is the status the server
// sends, except that a call the client cancelled or let run past its deadline counts as
// CANCELLED or DEADLINE_EXCEEDED, as the client sees it (gRPC's own services send other codes
// then: health's Watch sends UNKNOWN). A call that ends without a status counts as CANCELLED.
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcFamilies families, grpc::experimental::ServerRpcInfo* info)
      : families_(families), info_(info) {
    const char* method = info->method();
    // Paths of no registered method share one series: a client could otherwise add series
    // (and /metrics bytes) without end, one per made-up path.
    method_ = method != nullptr && families.methods->contains(method) ? method : "unknown";
  }

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
      const grpc::ServerContextBase* context = info_->server_context();
      if (context != nullptr && context->IsCancelled()) {
        code_ = DeadlineEnded(context->deadline()) ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED;
      }
    }
    methods->Proceed();
  }

 private:
  const GrpcFamilies families_;
  grpc::experimental::ServerRpcInfo* const info_;  // valid for the call's lifetime
  std::string method_;
  const Clock::time_point start_ = Clock::now();
  std::optional<grpc::StatusCode> code_;
};

class MetricsInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcFamilies families) : families_(families) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(families_, info);
  }

 private:
  const GrpcFamilies families_;
};

// "/service/Method" for every method of the services a Peng server registers (theirs are in
// the generated descriptor pool: Peng's protos and grpc++'s reflection).
absl::flat_hash_set<std::string> ServedMethods() {
  absl::flat_hash_set<std::string> out;
  for (const char* service : {"peng.v1.Inference", "grpc.health.v1.Health",
                              "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}) {
    const google::protobuf::ServiceDescriptor* d =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    if (d == nullptr) continue;
    for (int i = 0; i < d->method_count(); ++i) out.insert(absl::StrCat("/", service, "/", d->method(i)->name()));
  }
  return out;
}

}  // namespace

GrpcMetrics::GrpcMetrics(metrics::Registry& registry)
    : methods_(ServedMethods()),
      requests_(&registry.AddCounter("peng:grpc_requests_total", "gRPC calls by method and status code.",
                                     {"method", "code"})),
      duration_(&registry.AddHistogram("peng:grpc_request_duration_seconds",
                                       "gRPC call latency (from its arrival to its status) by method.",
                                       kRequestDurationBuckets, {"method"})) {}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> GrpcMetrics::InterceptorFactory() const {
  return std::make_unique<MetricsInterceptorFactory>(GrpcFamilies{requests_, duration_, &methods_});
}

}  // namespace peng::server
