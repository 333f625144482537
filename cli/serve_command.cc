// `peng serve`: load the model, start the engine loop and the HTTP (OpenAI) frontend, serve
// until SIGTERM/SIGINT, then drain: stop accepting, /ready -> 503, let in-flight requests
// finish up to server.drain_timeout_s, exit 0.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "cli/common.h"
#include "cli/flags.h"
#include "engine/model.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/interleaved.h"
#include "memory/kv_manager.h"
#include "scheduler/local_engine_loop.h"
#include "server/chat_template.h"
#include "server/config.h"
#include "server/grpc_server.h"
#include "server/http_server.h"

namespace peng::cli {
namespace {

// Every HTTP connection holds a descriptor: raise the soft limit to the hard one (as nginx and
// most daemons do), and warn when server.max_connections cannot fit under it.
void RaiseDescriptorLimit(int max_connections) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  constexpr rlim_t kReserve = 64;  // model files, the gRPC server, logs
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < static_cast<rlim_t>(max_connections) + kReserve) {
    Log(LogLevel::kWarning, "", absl::StrCat("server.max_connections is ", max_connections,
                                            " but this process may open only ", r.rlim_cur,
                                            " files (ulimit -n): connections beyond that fail to be accepted"));
  }
}

// The EngineLoop frontends talk to from the start: Unavailable (503 / UNAVAILABLE) while the
// model loads, then it forwards to the real loop.
class LoadingEngineLoop : public EngineLoop {
 public:
  void Set(EngineLoop* target) { target_.store(target); }
  absl::Status Submit(std::unique_ptr<GenerateRequest> request, std::shared_ptr<RequestStream> stream) override {
    EngineLoop* t = target_.load();
    return t ? t->Submit(std::move(request), std::move(stream)) : absl::UnavailableError("the model is loading");
  }
  absl::Status CheckQueueFits(int64_t requests, int64_t prompt_tokens) const override {
    EngineLoop* t = target_.load();
    return t ? t->CheckQueueFits(requests, prompt_tokens) : absl::OkStatus();
  }
  void Abort(const std::string& id) override {
    if (EngineLoop* t = target_.load()) t->Abort(id);
  }
  EngineStats Stats() const override {
    EngineLoop* t = target_.load();
    return t ? t->Stats() : EngineStats{};
  }
  int64_t Drain(std::chrono::milliseconds timeout) override {
    EngineLoop* t = target_.load();
    return t ? t->Drain(timeout) : 0;
  }

 private:
  std::atomic<EngineLoop*> target_{nullptr};
};

void Info(const std::string& line) { Log(LogLevel::kInfo, "", line); }

LogLevel LevelOf(LogConfig::Level level) {
  switch (level) {
    case LogConfig::Level::kDebug: return LogLevel::kDebug;
    case LogConfig::Level::kWarning: return LogLevel::kWarning;
    case LogConfig::Level::kError: return LogLevel::kError;
    default: return LogLevel::kInfo;
  }
}

// Splits argv into config-flag overrides plus the command's own switches.
absl::Status ParseArgs(int argc, char** argv, std::string* config_path, bool* print_config,
                       std::map<std::string, std::string>* flags) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "print-config") {  // a switch, as every command's (cli/flags.h)
      if (!has_value && i + 1 < argc && SwitchValue(argv[i + 1])) {
        value = argv[++i];
      } else if (!has_value) {
        value = "true";
      }
      const std::optional<bool> on = SwitchValue(value);
      if (!on) return absl::InvalidArgumentError(absl::StrCat("--print-config takes true or false, got '", value, "'"));
      *print_config = *on;
      continue;
    }
    // A switch (--metrics-auth) takes the next argument only when it is one of its values.
    const bool takes_value =
        name == "config" || ConfigFlagTakesArgument(name, i + 1 < argc ? argv[i + 1] : nullptr);
    if (!has_value && takes_value) {
      PENG_ASSIGN_OR_RETURN(value, NextValue(name, argc, argv, &i));
    }
    if (name == "config") {
      *config_path = value;
    } else {
      (*flags)[name] = value;  // unknown names are reported by the config loader
    }
  }
  return absl::OkStatus();
}

absl::Status RunServe(int argc, char** argv) {
  std::string config_path;
  bool print_config = false;
  std::map<std::string, std::string> flags;
  PENG_RETURN_IF_ERROR(ParseArgs(argc, argv, &config_path, &print_config, &flags));
  absl::StatusOr<ServeConfig> loaded =
      config_path.empty() ? ParseConfig("{}", "<defaults>", flags) : LoadConfigFile(config_path, flags);
  if (!loaded.ok()) return loaded.status();
  const ServeConfig& cfg = *loaded;
  if (print_config) {
    std::fputs(ToYaml(cfg, /*redact_api_keys=*/true).c_str(), stdout);
    return absl::OkStatus();
  }
  SetLogLevel(LevelOf(cfg.log.level));
  RaiseDescriptorLimit(cfg.server.max_connections);

  // Signals are taken by one thread with sigwait; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Metadata and tokenizer first (fast), so the frontends can listen while the weights load:
  // /ready answers 503 and gRPC health NOT_SERVING until the engine runs.
  const Device device = cfg.engine.device == EngineConfig::Device::kCuda ? Device::kCuda : Device::kCpu;
  PENG_RETURN_IF_ERROR(Annotate(CheckDevice(device), "engine.device"));
  PENG_ASSIGN_OR_RETURN(const ModelConfig mc, LoadModelConfig(cfg.model.path));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(cfg.model.path));

  LocalEngineLoopOptions lo;
  lo.threads = cfg.engine.ComputeThreads();
  lo.pinning = cfg.engine.pin_threads;
  lo.int8_activations = cfg.engine.activations == EngineConfig::Activations::kInt8;
  lo.amx_prompts = cfg.engine.amx_prompts;
  lo.amx_attention = cfg.engine.amx_attention;
  lo.device = device;
  lo.cuda_device = cfg.engine.cuda_device;
  lo.kv = KvOptionsOf(cfg);
  lo.scheduler.max_num_seqs = cfg.scheduler.max_num_seqs;
  lo.scheduler.max_num_batched_tokens = cfg.scheduler.max_num_batched_tokens;
  lo.scheduler.max_long_prefills = cfg.scheduler.max_long_prefills;
  lo.scheduler.long_prefill_threshold = cfg.scheduler.long_prefill_threshold;
  lo.scheduler.max_waiting_requests = cfg.scheduler.max_waiting_requests;
  lo.scheduler.max_waiting_tokens = cfg.scheduler.max_waiting_tokens;
  const int64_t max_model_len = cfg.model.max_model_len > 0
                                    ? std::min<int64_t>(cfg.model.max_model_len, mc.context_length)
                                    : mc.context_length;
  lo.scheduler.max_model_len = max_model_len;
  if (cfg.model.max_model_len > mc.context_length) {
    Log(LogLevel::kWarning, "",
        absl::StrFormat("model.max_model_len %d exceeds the model's context length; serving %d",
                        cfg.model.max_model_len, mc.context_length));
  }
  if (lo.kv.leankv && cfg.engine.enable_prefix_caching) {
    // configs/default.yaml turns caching on, so this is a note, not an error.
    Log(LogLevel::kWarning, "",
        "engine.enable_prefix_caching is ignored with kv.mode leankv: a compressed page depends on "
        "its whole request, so leankv pages are never shared (memory/README.md)");
  }
  const memory::KvShape shape{mc.num_layers, mc.num_kv_heads, mc.head_dim};
  PENG_RETURN_IF_ERROR(Annotate(memory::KvManager::Validate(shape, lo.kv),
                                lo.kv.leankv ? "engine.kv_budget / kv" : "engine.kv_budget"));
  // A sequence can never hold more tokens than the KV budget: advertise that as the limit.
  const int64_t kv_tokens = memory::KvManager::CapacityTokens(shape, lo.kv);
  const int64_t served_len = std::min<int64_t>(max_model_len, kv_tokens);
  if (served_len < max_model_len) {
    Log(LogLevel::kWarning, "",
        absl::StrFormat("max_model_len %d exceeds what the KV budget holds for one sequence; a sequence "
                        "gets at most %d tokens (raise engine.kv_budget for longer contexts)",
                        max_model_len, served_len));
  }

  std::unique_ptr<ChatTemplate> chat_override;
  if (!cfg.model.chat_template.empty()) {
    PENG_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::Parse(cfg.model.chat_template));
    chat_override = std::make_unique<ChatTemplate>(std::move(t));
  }

  metrics::Registry registry;
  LoadingEngineLoop loading;
  std::atomic<bool> ready{false};
  server::HttpServerOptions ho;
  ho.host = cfg.server.host;
  ho.port = cfg.server.http_port;
  ho.api_keys = cfg.server.api_keys;
  ho.metrics_auth = cfg.server.metrics_auth;
  ho.cors_allowed_origins = cfg.server.cors_allowed_origins;
  ho.max_connections = cfg.server.max_connections;
  ho.max_request_bytes = cfg.server.max_request_bytes;
  ho.stored_responses = cfg.server.stored_responses;
  ho.stored_response_bytes = cfg.server.stored_response_bytes;
  ho.model_name = ServedModelName(cfg.model);
  ho.max_model_len = served_len;
  ho.overload_status = cfg.scheduler.overload_status;
  ho.retry_after_s = cfg.scheduler.retry_after_s;
  server::HttpServerDeps deps;
  deps.engine = &loading;
  deps.tokenizer = tokenizer.get();
  deps.chat_template = chat_override.get();
  deps.registry = &registry;
  deps.ready = &ready;
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<server::HttpServer> http, server::HttpServer::Create(ho, deps));
  PENG_RETURN_IF_ERROR(http->Start());
  std::unique_ptr<server::GrpcServer> grpc;
  if (cfg.server.grpc_port != 0) {
    server::GrpcServerOptions go;
    go.host = cfg.server.host;
    go.port = cfg.server.grpc_port;
    go.api_keys = cfg.server.api_keys;
    go.model_name = ho.model_name;
    go.max_model_len = served_len;
    go.retry_after_s = cfg.scheduler.retry_after_s;
    go.max_request_bytes = cfg.server.max_request_bytes;
    go.chat_template = chat_override.get();
    grpc = std::make_unique<server::GrpcServer>(go, &loading, tokenizer.get(), &registry);
    PENG_RETURN_IF_ERROR(grpc->Start());
    grpc->SetServing(false);
  }

  PENG_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModelWithProgress(cfg.model.path));
  absl::StatusOr<std::unique_ptr<LocalEngineLoop>> created = LocalEngineLoop::Create(*model, lo, &registry);
  if (!created.ok()) {
    return Annotate(created.status(), absl::StrCat("engine.device ", DeviceName(cfg.engine.device)));
  }
  LocalEngineLoop& engine = **created;
  // What the CPU worker's interleaved matmuls run on (engine/README.md): int8 needs AVX-512 VNNI.
  std::string matmuls;
  if (cfg.engine.device == EngineConfig::Device::kCpu) {
    matmuls = cfg.engine.activations == EngineConfig::Activations::kF32 ? "; matmul activations f32"
              : kernels::HasInt8MatMul() ? "; matmul activations int8 (AVX-512 VNNI)"
                                         : "; matmul activations f32 (engine.activations int8 needs AVX-512 VNNI, "
                                           "which this build's CPU target lacks)";
    if (cfg.engine.activations == EngineConfig::Activations::kInt8 && kernels::HasInt8MatMul()) {
      matmuls += !cfg.engine.amx_prompts      ? ", prompts too (engine.amx_prompts false)"
                 : kernels::HasAmxBf16() ? (cfg.engine.amx_attention ? ", prompts of 64+ tokens bf16 on AMX (matmuls and attention)"
                                                                     : ", prompts of 64+ tokens bf16 on AMX (matmuls)")
                                         : ", prompts too (no AMX-BF16 on this CPU)";
    }
  }
  if (cfg.engine.device == EngineConfig::Device::kCpu) {
    const int cpus = ThreadPool::AllowedCpuCount();
    matmuls += absl::StrFormat("; %d compute thread%s%s, %s (engine.pin_threads %s, %d CPU%s allowed)", lo.threads,
                               lo.threads == 1 ? "" : "s", cfg.engine.threads == 0 ? " (engine.threads 0: the usable CPUs)" : "",
                               ThreadPool::Pins(lo.threads, lo.pinning) ? "pinned" : "not pinned",
                               PinThreadsName(cfg.engine.pin_threads), cpus, cpus == 1 ? "" : "s");
  }
  Info(absl::StrFormat("worker: %s%s%s", DeviceName(cfg.engine.device),
                      cfg.engine.device == EngineConfig::Device::kCuda
                          ? absl::StrFormat(" (device %d)", cfg.engine.cuda_device) : std::string(),
                      matmuls));
  const memory::KvManager& kv = engine.kv();
  Info(absl::StrFormat("model %s (%s): %d layers, d_model %d, %d heads / %d kv heads, context %d",
                      mc.name, cfg.model.path, mc.num_layers, mc.d_model, mc.num_heads, mc.num_kv_heads,
                      mc.context_length));
  const memory::LeanKv* lean = kv.lean();
  const std::string kv_kind =
      lean == nullptr
          ? absl::StrFormat("KV %s", kernels::KvFormatName(kv.options().format))
          : absl::StrFormat("KV leankv (high %s, low %s, alpha_prune %g, alpha_quant %g, window %d; "
                            "page-size rule over [%d, %d] B chose %d B: %d high / %d low tokens per page)",
                            kernels::KvFormatName(lean->options().high), kernels::KvFormatName(lean->options().low),
                            lean->options().alpha_prune, lean->options().alpha_quant, lean->options().window,
                            lean->options().page_bytes_min, lean->options().page_bytes_max,
                            lean->pages().page_bytes, lean->pages().high_tokens, lean->pages().low_tokens);
  Info(absl::StrFormat("weights %.1f MiB; %s, %.0f bytes per token%s, budget %.1f MiB = %d pages of %d bytes "
                      "= %d KV tokens; max concurrency at full context (%d tokens): %.2f",
                      model->weights.bytes() / 1048576.0, kv_kind, kv.bytes_per_token(),
                      lean == nullptr ? "" : " before pruning", cfg.engine.kv_budget_bytes / 1048576.0,
                      kv.total_pages(), kv.page_bytes(), kv.max_tokens(), served_len,
                      static_cast<double>(kv.max_tokens()) / served_len));
  engine.Start();
  loading.Set(&engine);
  if (grpc) grpc->SetServing(true);
  ready.store(true);
  Info(absl::StrFormat("serving %s: HTTP http://%s:%d (OpenAI API, /metrics)%s", ho.model_name, ho.host,
                      http->port(),
                      grpc ? absl::StrFormat(", gRPC %s:%d (peng.v1.Inference, health, reflection)",
                                             cfg.server.host, grpc->port())
                           : std::string()));

  int sig = 0;
  sigwait(&signals, &sig);
  // A second signal during the drain ends the process at once (as with vLLM and most
  // servers): an operator who asks twice does not want to wait for the timeout.
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    Log(LogLevel::kWarning, "", "second signal: exiting without finishing the drain");
    std::_Exit(1);
  }).detach();
  Info(absl::StrFormat("received %s: draining (up to %.0f s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                      cfg.server.drain_timeout_s));
  ready.store(false);
  http->StopAccepting();
  const auto drain = std::chrono::milliseconds(static_cast<int64_t>(cfg.server.drain_timeout_s * 1000));
  // Requests still running at the drain timeout are aborted, and their streams then get a
  // final message (finish reason "abort", usage): the frontends get this long to send it
  // before their connections are cut.
  constexpr auto kFlush = std::chrono::milliseconds(2000);
  std::thread grpc_drain;
  if (grpc) {
    grpc->SetServing(false);
    grpc_drain = std::thread([&] { grpc->Shutdown(std::chrono::system_clock::now() + drain + kFlush); });
  }
  const int64_t aborted = engine.Drain(drain);
  http->Stop(kFlush);
  if (grpc_drain.joinable()) grpc_drain.join();
  if (aborted > 0) {
    Info(absl::StrFormat("drain timed out after %.0f s: aborted %d unfinished sequences; bye",
                        cfg.server.drain_timeout_s, aborted));
  } else {
    Info("drained; bye");
  }
  return absl::OkStatus();
}

}  // namespace

int RunServeCommand(int argc, char** argv) {
  absl::Status s = RunServe(argc, argv);
  return s.ok() ? 0 : Fail("serve", s);
}

}  // namespace peng::cli
