#include "server/grpc_server.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "peng/v1/inference.grpc.pb.h"
#include "server/grpc_convert.h"
#include "server/api_key.h"
#include "server/grpc_generate_call.h"
#include "server/grpc_metrics.h"

namespace peng::server {
namespace {

constexpr char kServiceName[] = "peng.v1.Inference";

void LogProtobuf(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  Log(level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kWarning : LogLevel::kDebug, "grpc",
      absl::StrCat("protobuf (", file, ":", line, "): ", message));
}

// grpc-core's own lines (a port it cannot bind, transport trouble): errors as warnings, the
// rest at debug, escaped like every line; Peng reports what failed in its own words too.
void LogGrpcCore(gpr_log_func_args* a) {
  const std::string file = a->file != nullptr ? a->file : "?";
  Log(a->severity == GPR_LOG_SEVERITY_ERROR ? LogLevel::kWarning : LogLevel::kDebug, "grpc",
      absl::StrCat("grpc-core (", file.substr(file.rfind('/') + 1), ":", a->line, "): ",
                   a->message != nullptr ? a->message : ""));
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, grpc::Status status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

}  // namespace

class InferenceService final : public v1::Inference::CallbackService {
 public:
  InferenceService(const GrpcServerOptions& options, EngineLoop* engine,
                   const Tokenizer* tokenizer)
      : options_(options), engine_(engine), tokenizer_(tokenizer) {
    info_.model_name = options.model_name;
    info_.max_model_len = options.max_model_len;
    info_.max_logprobs = options.max_logprobs;
    info_.tokenizer = tokenizer;
    info_.UseChatTemplate(options.chat_template);
    std::random_device rd;
    nonce_ = absl::StrCat(absl::Hex((uint64_t{rd()} << 32) | rd(), absl::kZeroPad16));
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override {
    if (grpc::Status s = Authorize(*context); !s.ok()) return FinishedGenerateCall(s);
    absl::StatusOr<GrpcGenerate> native = ToGenerateRequest(*request, info_);
    if (!native.ok()) return FinishedGenerateCall(ToGrpcStatus(native.status()));
    auto owned = std::make_unique<GenerateRequest>(std::move(native->request));
    owned->id = absl::StrCat(request->request_id().empty() ? "grpc" : request->request_id(),
                             "-", nonce_, "-", next_id_.fetch_add(1));
    return StartGenerateCall(context, engine_, tokenizer_, std::move(owned), std::move(native->tools),
                             options_.retry_after_s);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override {
    if (grpc::Status s = Authorize(*context); !s.ok()) return Reply(context, s);
    if (absl::Status s = CheckModel(request->model(), info_); !s.ok()) {
      return Reply(context, ToGrpcStatus(s));
    }
    // As HTTP /tokenize (vLLM): the flag is about BOS; control tokens written in the text are
    // recognised either way, as Generate recognises them.
    const bool add_bos = !request->has_add_special_tokens() || request->add_special_tokens();
    std::vector<int32_t> ids = tokenizer_->Encode(request->text(), add_bos, /*parse_special=*/true);
    response->mutable_token_ids()->Add(ids.begin(), ids.end());
    response->set_count(static_cast<int32_t>(ids.size()));
    response->set_max_model_len(options_.max_model_len);
    return Reply(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override {
    if (grpc::Status s = Authorize(*context); !s.ok()) return Reply(context, s);
    if (absl::Status s = CheckModel(request->model(), info_); !s.ok()) {
      return Reply(context, ToGrpcStatus(s));
    }
    const int vocab = tokenizer_->vocab_size();
    for (int i = 0; i < request->token_ids_size(); ++i) {
      const int32_t id = request->token_ids(i);
      if (id < 0 || id >= vocab) {
        return Reply(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                           absl::StrCat("token_ids[", i, "]: token id ", id,
                                                        " is outside the vocabulary [0, ",
                                                        vocab, ")")));
      }
    }
    std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
    response->set_text(tokenizer_->Decode(ids, request->skip_special_tokens()));
    return Reply(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest*,
                                       v1::ListModelsResponse* response) override {
    if (grpc::Status s = Authorize(*context); !s.ok()) return Reply(context, s);
    v1::Model* m = response->add_models();
    m->set_id(options_.model_name);
    m->set_max_model_len(options_.max_model_len);
    m->set_vocab_size(tokenizer_->vocab_size());
    m->set_owned_by("peng");
    return Reply(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest*,
                                    v1::LoadResponse* response) override {
    if (grpc::Status s = Authorize(*context); !s.ok()) return Reply(context, s);
    const EngineStats stats = engine_->Stats();
    response->set_running(stats.num_running);
    response->set_waiting(stats.num_waiting);
    response->set_kv_usage(stats.kv_usage);
    response->set_kv_total_pages(stats.kv_total_pages);
    response->set_kv_free_pages(stats.kv_free_pages);
    return Reply(context, grpc::Status::OK);
  }

 private:
  // OK when no keys are configured or the metadata holds "authorization: Bearer <key>" with a
  // configured key.
  grpc::Status Authorize(const grpc::CallbackServerContext& context) const {
    if (options_.api_keys.empty()) return grpc::Status::OK;
    const auto& md = context.client_metadata();
    auto it = md.find("authorization");
    if (it != md.end() && BearerKeyAccepted(std::string_view(it->second.data(), it->second.size()),
                                            options_.api_keys)) {
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a valid API key is required: send metadata "
                        "'authorization: Bearer <key>'");
  }

  const GrpcServerOptions options_;
  EngineLoop* const engine_;
  const Tokenizer* const tokenizer_;
  ModelContext info_;
  std::string nonce_;  // per server: request ids stay unique across restarts and frontends
  std::atomic<uint64_t> next_id_{0};
};

GrpcServer::GrpcServer(GrpcServerOptions options, EngineLoop* engine, const Tokenizer* tokenizer,
                       metrics::Registry* registry)
    : options_(std::move(options)),
      engine_(engine),
      tokenizer_(tokenizer),
      metrics_(registry != nullptr ? std::make_unique<GrpcMetrics>(*registry) : nullptr) {}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::system_clock::now()); }

absl::Status GrpcServer::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("the gRPC server is running");
  if (engine_ == nullptr || tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("GrpcServer needs an engine loop and a tokenizer");
  }
  if (options_.port < 0 || options_.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("grpc port ", options_.port,
                                                   " is outside [0, 65535]"));
  }
  // Process-wide switches; both must be set before a ServerBuilder is made.
  grpc::EnableDefaultHealthCheckService(true);
  // protobuf's complaints (a request with invalid UTF-8 in a string field, ...) and grpc-core's
  // go to our log, one escaped line each, instead of raw to stderr.
  static std::once_flag library_logs;
  std::call_once(library_logs, [] {
    google::protobuf::SetLogHandler(&LogProtobuf);
    gpr_set_log_function(&LogGrpcCore);
  });
  // grpc++'s health service carries no descriptors: naming ours (proto/grpc/health/v1) links
  // them in, and reflection then describes grpc.health.v1.Health like our own service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  service_ = std::make_unique<InferenceService>(options_, engine_, tokenizer_);
  const bool v6 = options_.host.find(':') != std::string::npos;
  const std::string address = v6 ? absl::StrCat("[", options_.host, "]:", options_.port)
                                 : absl::StrCat(options_.host, ":", options_.port);
  int selected_port = 0;
  grpc::ServerBuilder builder;
  // A port already in use must fail Start(), not be shared.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(options_.max_request_bytes, INT32_MAX)));
  builder.RegisterService(service_.get());
  if (metrics_ != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(metrics_->InterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || selected_port == 0) {
    server_.reset();
    service_.reset();
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address,
                                               " (address in use or invalid host)"));
  }
  bound_port_ = selected_port;
  SetServing(true);
  return absl::OkStatus();
}

void GrpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // "" (the whole server) and every registered service
  health->SetServingStatus(kServiceName, serving);
}

void GrpcServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (server_ == nullptr) return;
  SetServing(false);
  server_->Shutdown(deadline);
  server_->Wait();
  server_.reset();
  service_.reset();
}

}  // namespace peng::server
