#include "server/config.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ErrorOf(absl::string_view yaml, const std::map<std::string, std::string>& flags = {}) {
  absl::StatusOr<ServeConfig> c = ParseConfig(yaml, "test.yaml", flags);
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << yaml;
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(ConfigTest, EmptyDocumentGivesValidDefaults) {
  absl::StatusOr<ServeConfig> c = ParseConfig("", "empty.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.path, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(ServedModelName(c->model), "SmolLM2-135M-Instruct");
  EXPECT_EQ(c->server.host, "127.0.0.1");
  EXPECT_EQ(c->server.http_port, 8000);
  EXPECT_EQ(c->server.grpc_port, 50051);
  EXPECT_TRUE(c->server.api_keys.empty());
  EXPECT_EQ(c->engine.kv_budget_bytes, int64_t{1} << 30);
  EXPECT_EQ(c->engine.kv_format, kernels::KvFormat::kF16);
  EXPECT_EQ(c->scheduler.overload_status, 429);
  EXPECT_EQ(c->log.level, LogConfig::Level::kInfo);
  EXPECT_TRUE(ValidateConfig(ServeConfig{}).ok());
}

TEST(ConfigTest, FullFileSetsEveryField) {
  absl::StatusOr<ServeConfig> c = ParseConfig(R"(
model:
  path: /m/qwen.gguf
  name: qwen
  chat_template: "{{ messages }}"
  max_model_len: 2048
server:
  host: 0.0.0.0
  http_port: 9000
  grpc_port: 0
  api_keys: [k1, "k2"]
  metrics_auth: true
  drain_timeout_s: 2.5
  max_request_bytes: 4MiB
engine:
  threads: 8
  pin_threads: false
  kv_budget: 1.5GiB
  kv_format: bf16
  tokens_per_page: 32
  enable_prefix_caching: false
scheduler:
  max_num_seqs: 16
  max_num_batched_tokens: 1024
  max_long_prefills: 2
  long_prefill_threshold: 0
  max_waiting_requests: 10
  max_waiting_tokens: 5000
  overload_status: 503
  retry_after_s: 5
log:
  level: debug
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.path, "/m/qwen.gguf");
  EXPECT_EQ(ServedModelName(c->model), "qwen");
  EXPECT_EQ(c->model.chat_template, "{{ messages }}");
  EXPECT_EQ(c->model.max_model_len, 2048);
  EXPECT_EQ(c->server.host, "0.0.0.0");
  EXPECT_EQ(c->server.http_port, 9000);
  EXPECT_EQ(c->server.grpc_port, 0);
  EXPECT_THAT(c->server.api_keys, testing::ElementsAre("k1", "k2"));
  EXPECT_TRUE(c->server.metrics_auth);
  EXPECT_EQ(c->server.drain_timeout_s, 2.5);
  EXPECT_EQ(c->server.max_request_bytes, 4 << 20);
  EXPECT_EQ(c->engine.threads, 8);
  EXPECT_EQ(c->engine.pin_threads, Pinning::kNone);
  EXPECT_EQ(c->engine.kv_budget_bytes, int64_t{3} << 29);
  EXPECT_EQ(c->engine.kv_format, kernels::KvFormat::kBF16);
  EXPECT_EQ(c->engine.tokens_per_page, 32);
  EXPECT_FALSE(c->engine.enable_prefix_caching);
  EXPECT_EQ(c->scheduler.max_num_seqs, 16);
  EXPECT_EQ(c->scheduler.max_num_batched_tokens, 1024);
  EXPECT_EQ(c->scheduler.max_long_prefills, 2);
  EXPECT_EQ(c->scheduler.long_prefill_threshold, 0);
  EXPECT_EQ(c->scheduler.max_waiting_requests, 10);
  EXPECT_EQ(c->scheduler.max_waiting_tokens, 5000);
  EXPECT_EQ(c->scheduler.overload_status, 503);
  EXPECT_EQ(c->scheduler.retry_after_s, 5);
  EXPECT_EQ(c->log.level, LogConfig::Level::kDebug);
}

TEST(ConfigTest, PartialSectionsKeepOtherDefaultsAndNullMeansDefault) {
  absl::StatusOr<ServeConfig> c = ParseConfig("server:\n  http_port: 8080\n  api_keys:\nengine:\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.http_port, 8080);
  EXPECT_EQ(c->server.grpc_port, 50051);
  EXPECT_EQ(c->engine.threads, 0);  // one per usable CPU
  EXPECT_EQ(c->engine.ComputeThreads(), ThreadPool::UsableCpuCount());
}

TEST(ConfigTest, EveryErrorIsReportedTogetherWithItsPath) {
  const std::string msg = ErrorOf(R"(
model:
  path: ""
server:
  http_port: 70000
  http_prot: 1
  grpc_port: abc
  api_keys: secret
engine:
  threads: -1
  kv_budget: 12 parsecs
  kv_format: fp16
  tokens_per_page: 12
schedular:
  max_num_seqs: 1
scheduler:
  max_num_seqs: 64
  max_num_batched_tokens: 32
  overload_status: 500
  retry_after_s: [1]
log:
  level: verbose
)");
  EXPECT_THAT(msg, HasSubstr("test.yaml (14 errors):"));
  EXPECT_THAT(msg, HasSubstr("\n  model.path: must not be empty (line 3, column 9)"));
  EXPECT_THAT(msg, HasSubstr("\n  server.http_port: must be in [1, 65535], got 70000 (line 5, column 14)"));
  EXPECT_THAT(msg, HasSubstr("\n  server.http_prot: unknown key; did you mean http_port? (line 6, column 3)"));
  EXPECT_THAT(msg, HasSubstr("\n  server.grpc_port: expected an integer, got \"abc\""));
  EXPECT_THAT(msg, HasSubstr("\n  server.api_keys: expected a list of strings, got \"secret\""));
  EXPECT_THAT(msg, HasSubstr("\n  engine.threads: must be in [0, 1024], got -1"));
  EXPECT_THAT(msg, HasSubstr("\n  engine.kv_budget: expected a byte size like 64MiB"));
  EXPECT_THAT(msg, HasSubstr("\n  engine.kv_format: expected f32, f16, bf16, or k<bits>[g<groups>]v<bits>[g<groups>] with bits 1, 2, 4, 8 "
                                 "and groups 1, 2, 4 (e.g. k8v8, k8v4, k4v2, k8g2v4g4), got \"fp16\"; did you mean f16?"));
  EXPECT_THAT(msg, HasSubstr("\n  engine.tokens_per_page: must be a power of two in [1, 1024], got 12"));
  EXPECT_THAT(msg, HasSubstr("\n  schedular: unknown key; did you mean scheduler?"));
  EXPECT_THAT(msg, HasSubstr("\n  scheduler.max_num_batched_tokens: must be >= scheduler.max_num_seqs (64)"));
  EXPECT_THAT(msg, HasSubstr("\n  scheduler.overload_status: must be 429 or 503, got 500"));
  EXPECT_THAT(msg, HasSubstr("\n  scheduler.retry_after_s: expected an integer, got a list"));
  EXPECT_THAT(msg, HasSubstr("\n  log.level: expected one of debug, info, warning, error, got \"verbose\""));
  // Listed in file order, whichever check found them.
  EXPECT_LT(msg.find("model.path"), msg.find("server.http_port"));
  EXPECT_LT(msg.find("server.http_port"), msg.find("server.http_prot"));
  EXPECT_LT(msg.find("engine.tokens_per_page"), msg.find("schedular"));
  EXPECT_LT(msg.find("scheduler.retry_after_s"), msg.find("log.level"));
}

TEST(ConfigTest, WrongTypesNameTheKeyAndTheValue) {
  EXPECT_THAT(ErrorOf("server:\n  http_port: \"eighty\"\n"),
              HasSubstr("server.http_port: expected an integer, got \"eighty\""));
  EXPECT_THAT(ErrorOf("server:\n  http_port: 80.5\n"),
              HasSubstr("server.http_port: expected an integer, got \"80.5\""));
  EXPECT_THAT(ErrorOf("server:\n  http_port: 99999999999\n"),
              HasSubstr("server.http_port: expected a 32-bit integer, got 99999999999"));
  EXPECT_THAT(ErrorOf("server:\n  metrics_auth: maybe\n"),
              HasSubstr("server.metrics_auth: expected true or false, got \"maybe\""));
  EXPECT_THAT(ErrorOf("server:\n  drain_timeout_s: soon\n"),
              HasSubstr("server.drain_timeout_s: expected a number, got \"soon\""));
  EXPECT_THAT(ErrorOf("server: 8000\n"), HasSubstr("server: expected a mapping, got \"8000\""));
  EXPECT_THAT(ErrorOf("model:\n  path: {a: 1}\n"), HasSubstr("model.path: expected a string, got a mapping"));
  EXPECT_THAT(ErrorOf("server:\n  api_keys: [a, [b]]\n"),
              HasSubstr("server.api_keys[1]: expected a string, got a list"));
  EXPECT_THAT(ErrorOf("- a\n- b\n"), HasSubstr("<root>: expected a mapping of sections"));
  EXPECT_THAT(ErrorOf("server:\n  http_port: 1\n  http_port: 2\n"),
              HasSubstr("server.http_port: duplicate key (line 3, column 3)"));
}

TEST(ConfigTest, DeepNestingSaysSoWithTheLimit) {
  const std::string deep = "server: " + std::string(3000, '[') + std::string(3000, ']') + "\n";
  EXPECT_THAT(ErrorOf(deep), testing::ContainsRegex(
                                 "test\\.yaml:1:[0-9]+: invalid YAML: nested too deeply: more than [0-9]+ levels"));
  EXPECT_THAT(ErrorOf(deep), Not(HasSubstr("bad file")));
}

TEST(ConfigTest, ASecondDocumentIsAnError) {
  EXPECT_THAT(ErrorOf("server:\n  http_port: 8100\n---\nserver:\n  http_port: 8200\n"),
              HasSubstr("test.yaml:4:1: invalid YAML: a second document (after ---); a config file holds one"));
  // One document with its markers, or an empty one after it, is fine.
  absl::StatusOr<ServeConfig> c = ParseConfig("---\nserver:\n  http_port: 8100\n...\n---\n", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.http_port, 8100);
}

TEST(ConfigTest, BadYamlSyntaxGivesLineAndColumn) {
  const std::string msg = ErrorOf("server:\n  http_port: [8000\n  host: x\n");
  EXPECT_THAT(msg, HasSubstr("test.yaml:"));
  EXPECT_THAT(msg, HasSubstr("invalid YAML"));
  EXPECT_THAT(msg, testing::ContainsRegex("test\\.yaml:[0-9]+:[0-9]+: invalid YAML: "));
  EXPECT_THAT(ErrorOf("model: {path: a\n"), testing::ContainsRegex("test\\.yaml:[0-9]+:[0-9]+: invalid YAML"));
}

TEST(ConfigTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576);
  EXPECT_EQ(*ParseByteSize("64MiB"), 64 << 20);
  EXPECT_EQ(*ParseByteSize("64 mib"), 64 << 20);
  EXPECT_EQ(*ParseByteSize("2KiB"), 2048);
  EXPECT_EQ(*ParseByteSize("2KB"), 2000);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000);
  EXPECT_EQ(*ParseByteSize("3GiB"), int64_t{3} << 30);
  EXPECT_EQ(*ParseByteSize("0.1KB"), 100);
  EXPECT_EQ(*ParseByteSize("512B"), 512);
  EXPECT_FALSE(ParseByteSize("1.3KiB").ok());  // 1331.2 bytes
  EXPECT_FALSE(ParseByteSize("-1MiB").ok());
  EXPECT_FALSE(ParseByteSize("MiB").ok());
  EXPECT_FALSE(ParseByteSize("1e9").ok());
  EXPECT_FALSE(ParseByteSize("99999999TB").ok());
  EXPECT_THAT(std::string(ParseByteSize("4 Mebibytes").status().message()), HasSubstr("\"4 Mebibytes\""));
  EXPECT_EQ(*ParseByteSize(" 4MIB "), 4 << 20);
  // A bare K, M, G or T gets the binary unit as a suggestion; a far-off unit gets none.
  for (const auto& [text, suggestion] : std::vector<std::pair<std::string, std::string>>{
           {"64G", "64GiB"}, {"64K", "64KiB"}, {"64m", "64MiB"}, {"1.5t", "1.5TiB"}, {"64 mibs", "64MiB"}}) {
    EXPECT_THAT(std::string(ParseByteSize(text).status().message()),
                AllOf(HasSubstr(absl::StrCat("got \"", text, "\"; did you mean ", suggestion, "?")),
                      Not(HasSubstr("did you mean ?"))));
  }
  EXPECT_THAT(std::string(ParseByteSize("4 Mebibytes").status().message()), Not(HasSubstr("did you mean")));
  EXPECT_EQ(FormatByteSize(64 << 20), "64MiB");
  EXPECT_EQ(FormatByteSize(1536), "1536");  // not a whole number of KiB
  EXPECT_EQ(FormatByteSize(int64_t{3} << 30), "3GiB");
  EXPECT_EQ(FormatByteSize(1000), "1000");
}

TEST(ConfigTest, FlagsOverrideTheFile) {
  absl::StatusOr<ServeConfig> c = ParseConfig("server:\n  http_port: 8001\n  host: 0.0.0.0\n", "f.yaml",
                                              {{"http-port", "9001"}, {"--kv-budget", "256MiB"},
                                               {"model", "x/tiny.Q8_0.gguf"}, {"api-key", "sk-1"},
                                               {"threads", "4"}, {"grpc-port", "0"},
                                               {"metrics-auth", ""}, {"kv-format", "f32"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.http_port, 9001);
  EXPECT_EQ(c->server.host, "0.0.0.0");  // from the file, no flag
  EXPECT_EQ(c->engine.kv_budget_bytes, 256 << 20);
  EXPECT_EQ(c->model.path, "x/tiny.Q8_0.gguf");
  EXPECT_EQ(ServedModelName(c->model), "tiny");
  EXPECT_THAT(c->server.api_keys, testing::ElementsAre("sk-1"));
  EXPECT_EQ(c->engine.threads, 4);
  EXPECT_EQ(c->server.grpc_port, 0);
  EXPECT_TRUE(c->server.metrics_auth);
  EXPECT_EQ(c->engine.kv_format, kernels::KvFormat::kF32);

  ServeConfig d;
  EXPECT_EQ(d.engine.pin_threads, Pinning::kAuto);
  ASSERT_TRUE(ApplyFlags(d, {{"host", "::1"}, {"http-port", "1234"}, {"enable-prefix-caching", "0"},
                             {"pin-threads", "false"}}).ok());
  EXPECT_FALSE(d.engine.enable_prefix_caching);
  EXPECT_EQ(d.engine.pin_threads, Pinning::kNone);
  EXPECT_EQ(d.server.host, "::1");
  EXPECT_EQ(d.server.http_port, 1234);
}

TEST(ConfigTest, AFlagReplacesABadValueInTheFile) {
  const char* yaml = "server:\n  http_port: \"abc\"\n  api_keys: [\"has space\"]\n";
  absl::StatusOr<ServeConfig> c = ParseConfig(yaml, "f.yaml", {{"http-port", "8201"}, {"api-key", "sk-1"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.http_port, 8201);
  EXPECT_THAT(c->server.api_keys, testing::ElementsAre("sk-1"));
  // Without the flags, the file's values are blamed on the file; a bad flag on the flag.
  const std::string msg = ErrorOf(yaml);
  EXPECT_THAT(msg, HasSubstr("server.http_port: expected an integer, got \"abc\" (line 2, column 14)"));
  EXPECT_THAT(msg, HasSubstr("server.api_keys[0]: must be non-empty without whitespace"));
  EXPECT_THAT(ErrorOf(yaml, {{"http-port", "x"}, {"api-key", "sk-1"}}),
              AllOf(HasSubstr("(1 error)"), HasSubstr("got \"x\" (from --http-port)"), Not(HasSubstr("abc"))));
}

TEST(ConfigTest, CorsOriginsAreCheckedOriginsOrAStar) {
  absl::StatusOr<ServeConfig> c =
      ParseConfig("server:\n  cors_allowed_origins: [\"https://app.example\", \"http://localhost:3000\", \"*\"]\n", "f.yaml", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->server.cors_allowed_origins, testing::ElementsAre("https://app.example", "http://localhost:3000", "*"));
  const std::string msg = ErrorOf("server:\n  cors_allowed_origins: [\"app.example\", \"https://app.example/\"]\n");
  EXPECT_THAT(msg, HasSubstr("server.cors_allowed_origins[0]: must be \"*\" or an origin"));
  EXPECT_THAT(msg, HasSubstr("server.cors_allowed_origins[1]: an origin is scheme://host[:port]"));
}

TEST(ConfigTest, MaxConnectionsIsAtLeastOne) {
  EXPECT_THAT(ErrorOf("server:\n  max_connections: 0\n"), HasSubstr("server.max_connections"));
  absl::StatusOr<ServeConfig> c = ParseConfig("server:\n  max_connections: 50000\n", "f.yaml", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.max_connections, 50000);
}

TEST(ConfigTest, SwitchFlagsStandAloneOrTakeOneOfTheirValues) {
  for (const char* flag : {"metrics-auth", "enable-prefix-caching", "pin-threads"}) {
    EXPECT_FALSE(ConfigFlagTakesArgument(flag, nullptr)) << flag;       // last: means true
    EXPECT_FALSE(ConfigFlagTakesArgument(flag, "--http-port")) << flag;  // never swallows a flag
    EXPECT_FALSE(ConfigFlagTakesArgument(flag, "8210")) << flag;
    EXPECT_TRUE(ConfigFlagTakesArgument(flag, "false")) << flag;
    EXPECT_TRUE(ConfigFlagTakesArgument(flag, "TRUE")) << flag;
  }
  EXPECT_TRUE(ConfigFlagTakesArgument("pin-threads", "auto"));
  EXPECT_FALSE(ConfigFlagTakesArgument("metrics-auth", "auto"));
  EXPECT_TRUE(ConfigFlagTakesArgument("http-port", "8210"));
  EXPECT_TRUE(ConfigFlagTakesArgument("http-port", nullptr));  // the caller reports the missing value
  EXPECT_TRUE(ConfigFlagTakesArgument("model", "--weird-but-a-path"));
  EXPECT_FALSE(ConfigFlagTakesArgument("no-such-flag", "x"));

  absl::StatusOr<ServeConfig> c =
      ParseConfig("", "x", {{"metrics-auth", ""}, {"enable-prefix-caching", "FALSE"}, {"pin-threads", ""}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->server.metrics_auth);
  EXPECT_FALSE(c->engine.enable_prefix_caching);
  EXPECT_EQ(c->engine.pin_threads, Pinning::kAlways);
}

TEST(ConfigTest, BadFlagsAreReportedWithTheFlagAndLeaveTheConfigAlone) {
  ServeConfig c;
  absl::Status s = ApplyFlags(c, {{"http-port", "70000"}, {"threads", "many"}, {"kv-budgte", "1GiB"},
                                  {"kv-budget", "lots"}});
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr("(4 errors)"));
  EXPECT_THAT(msg, HasSubstr("server.http_port: must be in [1, 65535], got 70000 (from --http-port)"));
  EXPECT_THAT(msg, HasSubstr("engine.threads: expected an integer, got \"many\" (from --threads)"));
  EXPECT_THAT(msg, HasSubstr("--kv-budgte: unknown config flag; did you mean --kv-budget?"));
  EXPECT_THAT(msg, HasSubstr("engine.kv_budget: expected a byte size"));
  EXPECT_EQ(c.server.http_port, 8000);
  EXPECT_EQ(c.engine.threads, 0);  // the default, untouched
  for (const auto& [flag, path] : ConfigFlagNames()) EXPECT_THAT(path, HasSubstr(".")) << flag;
}

TEST(ConfigTest, WorkerDeviceKeyAndFlags) {
  absl::StatusOr<ServeConfig> c = ParseConfig("engine:\n  device: cuda\n  cuda_device: 1\n", "gpu.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine.device, EngineConfig::Device::kCuda);
  EXPECT_EQ(c->engine.cuda_device, 1);
  EXPECT_THAT(ToYaml(*c), AllOf(HasSubstr("device: cuda"), HasSubstr("cuda_device: 1")));
  EXPECT_EQ(ParseConfig("", "x", {{"device", "cuda"}})->engine.device, EngineConfig::Device::kCuda);
  EXPECT_THAT(ErrorOf("engine:\n  device: gpu\n"),
              HasSubstr("engine.device: expected one of cpu, cuda, got \"gpu\""));
  EXPECT_THAT(ErrorOf("engine:\n  cuda_device: -1\n"), HasSubstr("engine.cuda_device"));
  const char* root = std::getenv("PENG_SOURCE_DIR");
  absl::StatusOr<ServeConfig> gpu = LoadConfigFile(std::string(root ? root : ".") + "/configs/gpu.yaml");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->engine.device, EngineConfig::Device::kCuda);
}

TEST(ConfigTest, MatmulActivationsKeyAndFlag) {
  EXPECT_EQ(ParseConfig("")->engine.activations, EngineConfig::Activations::kInt8);
  absl::StatusOr<ServeConfig> c = ParseConfig("engine:\n  activations: f32\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine.activations, EngineConfig::Activations::kF32);
  EXPECT_THAT(ToYaml(*c), HasSubstr("activations: f32"));
  EXPECT_EQ(ParseConfig("", "x", {{"activations", "f32"}})->engine.activations, EngineConfig::Activations::kF32);
  EXPECT_THAT(ErrorOf("engine:\n  activations: fp8\n"),
              HasSubstr("engine.activations: expected one of int8, f32, got \"fp8\""));
}

TEST(ConfigTest, ToYamlRoundTrips) {
  ServeConfig c;
  c.model.path = "models/a b.gguf";
  c.model.name = "true";  // strings that look like other types stay strings
  c.model.chat_template = "{% for m in messages %}{{ m.content }}\n{% endfor %}: \"#x\"";
  c.server.api_keys = {"k1", "with,comma", "null"};
  c.server.drain_timeout_s = 0.1;
  c.server.max_request_bytes = 12345;
  c.engine.kv_budget_bytes = int64_t{5} << 30;
  c.engine.kv_format = kernels::KvFormat::kBF16;
  c.engine.enable_prefix_caching = false;
  c.scheduler.max_waiting_tokens = int64_t{1} << 40;
  c.log.level = LogConfig::Level::kWarning;
  const std::string yaml = ToYaml(c);
  EXPECT_THAT(yaml, AllOf(HasSubstr("kv_budget: 5GiB"), HasSubstr("kv_format: bf16"),
                          HasSubstr("drain_timeout_s: 0.1\n"), HasSubstr("max_request_bytes: 12345\n"),
                          HasSubstr("level: warning")));
  absl::StatusOr<ServeConfig> back = ParseConfig(yaml, "printed");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(ToYaml(*back), yaml);
  EXPECT_EQ(back->model.path, c.model.path);
  EXPECT_EQ(back->model.name, "true");
  EXPECT_EQ(back->model.chat_template, c.model.chat_template);
  EXPECT_EQ(back->server.api_keys, c.server.api_keys);
  EXPECT_EQ(back->server.drain_timeout_s, 0.1);
  EXPECT_EQ(back->server.max_request_bytes, 12345);
  EXPECT_EQ(back->engine.kv_budget_bytes, c.engine.kv_budget_bytes);
  EXPECT_EQ(back->scheduler.max_waiting_tokens, c.scheduler.max_waiting_tokens);
  EXPECT_FALSE(back->engine.enable_prefix_caching);
  EXPECT_EQ(back->log.level, LogConfig::Level::kWarning);

  EXPECT_EQ(ToYaml(*ParseConfig("")), ToYaml(ServeConfig{}));
}

TEST(ConfigTest, RedactedKeysCannotLoadBackAsKeys) {
  ServeConfig c;
  c.server.api_keys = {"sk-1", "sk-2", "sk-3"};
  const std::string yaml = ToYaml(c, /*redact_api_keys=*/true);
  EXPECT_THAT(yaml, AllOf(HasSubstr("api_keys: \"<redacted: 3 keys>\"\n"), Not(HasSubstr("sk-"))));
  EXPECT_THAT(ErrorOf(yaml), HasSubstr("server.api_keys: expected a list of strings, got \"<redacted: 3 keys>\""));
  c.server.api_keys = {};
  EXPECT_THAT(ToYaml(c, /*redact_api_keys=*/true), HasSubstr("api_keys: []\n"));  // nothing to hide
}

TEST(ConfigTest, ServedModelNameStripsExtensionAndQuantTag) {
  auto name = [](std::string path) {
    ServedModelConfig m;
    m.path = std::move(path);
    return ServedModelName(m);
  };
  EXPECT_EQ(name("models/SmolLM2-135M-Instruct.Q4_1.gguf"), "SmolLM2-135M-Instruct");
  EXPECT_EQ(name("m/Llama-3.2-1B.IQ4_XS.gguf"), "Llama-3.2-1B");
  EXPECT_EQ(name("m/Llama-3.2-1B.BF16.gguf"), "Llama-3.2-1B");
  EXPECT_EQ(name("m/Llama-3.2-1B.gguf"), "Llama-3.2-1B");
  EXPECT_EQ(name("models/Qwen2-0.5B/"), "Qwen2-0.5B");
  ServedModelConfig named;
  named.name = "mine";
  EXPECT_EQ(ServedModelName(named), "mine");
}

TEST(ConfigTest, DefaultYamlInTheRepositoryLoads) {
  const char* root = std::getenv("PENG_SOURCE_DIR");
  const std::string path = std::string(root ? root : ".") + "/configs/default.yaml";
  absl::StatusOr<ServeConfig> c = LoadConfigFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.path, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_EQ(ServedModelName(c->model), "SmolLM2-135M-Instruct");
  EXPECT_EQ(c->server.host, "127.0.0.1");
  EXPECT_EQ(c->server.http_port, 8000);
  EXPECT_EQ(c->server.grpc_port, 50051);
}

TEST(ConfigTest, AMissingFileOrADirectoryIsAnError) {
  absl::Status missing = LoadConfigFile("/nonexistent.yaml").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);  // peng exits 2, as for a bad file
  EXPECT_THAT(std::string(missing.message()), HasSubstr("cannot read config file /nonexistent.yaml: No such file"));
  const std::string dir = ::testing::TempDir();
  absl::Status directory = LoadConfigFile(dir).status();
  EXPECT_EQ(directory.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.message()), HasSubstr(absl::StrCat("config file ", dir, " is a directory")));
}

}  // namespace
}  // namespace peng
