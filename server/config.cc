#include "server/config.h"

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "server/config_text.h"
#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/yaml.h"

namespace peng {
namespace {

using kernels::KvFormat;

template <typename E>
using EnumNames = std::vector<std::pair<E, const char*>>;

const EnumNames<EngineConfig::Device>& DeviceNames() {
  using D = EngineConfig::Device;
  static const auto* names = new EnumNames<D>{{D::kCpu, "cpu"}, {D::kCuda, "cuda"}};
  return *names;
}

const EnumNames<EngineConfig::Activations>& ActivationNames() {
  using A = EngineConfig::Activations;
  static const auto* names = new EnumNames<A>{{A::kInt8, "int8"}, {A::kF32, "f32"}};
  return *names;
}

const EnumNames<Pinning>& PinThreadsNames() {
  static const auto* names =
      new EnumNames<Pinning>{{Pinning::kAuto, "auto"}, {Pinning::kAlways, "true"}, {Pinning::kNone, "false"}};
  return *names;
}

const EnumNames<KvConfig::Mode>& KvModeNames() {
  using M = KvConfig::Mode;
  static const auto* names = new EnumNames<M>{{M::kDense, "dense"}, {M::kQuantized, "quantized"}, {M::kLeanKv, "leankv"}};
  return *names;
}

const EnumNames<LogConfig::Level>& LogLevelNames() {
  using L = LogConfig::Level;
  static const auto* names = new EnumNames<L>{
      {L::kDebug, "debug"}, {L::kInfo, "info"}, {L::kWarning, "warning"}, {L::kError, "error"}};
  return *names;
}

// ---- problems, collected rather than returned one by one ----

// Where a value came from: "line 3, column 14" or "from --threads". Problems are listed in
// file order; those without a line (flags, defaults) come last.
struct Where {
  std::string text;
  int line = std::numeric_limits<int>::max();
};

Where WhereOf(const YAML::Mark& m) {
  if (m.is_null()) return {};
  return {absl::StrCat("line ", m.line + 1, ", column ", m.column + 1), m.line};
}

class Problems {
 public:
  // `where` defaults to the origin recorded for `path`, if any.
  void Add(std::string path, std::string message, Where where = {}) {
    list_.push_back({std::move(path), std::move(message), std::move(where)});
  }
  void SetOrigin(const std::string& path, Where where) { origin_[path] = std::move(where); }
  // Drops the problems found so far at `path` and below it (`path[0]`): a flag replaced the
  // file's value there.
  void Forget(const std::string& path) {
    std::erase_if(list_, [&](const Entry& e) {
      return e.path == path || absl::StartsWith(e.path, absl::StrCat(path, "["));
    });
  }
  bool empty() const { return list_.empty(); }

  absl::Status ToStatus(absl::string_view source) const {
    if (list_.empty()) return absl::OkStatus();
    std::vector<Entry> list = list_;
    for (Entry& e : list) {
      if (auto it = origin_.find(e.path); e.where.text.empty() && it != origin_.end()) e.where = it->second;
    }
    std::stable_sort(list.begin(), list.end(),
                     [](const Entry& a, const Entry& b) { return a.where.line < b.where.line; });
    std::string msg = absl::StrCat("invalid configuration", source.empty() ? "" : " ", source,
                                   " (", list.size(), list.size() == 1 ? " error" : " errors", "):");
    for (const Entry& e : list) {
      absl::StrAppend(&msg, "\n  ", e.path, ": ", e.message);
      if (!e.where.text.empty()) absl::StrAppend(&msg, " (", e.where.text, ")");
    }
    return absl::InvalidArgumentError(msg);
  }

 private:
  struct Entry {
    std::string path, message;
    Where where;
  };
  std::vector<Entry> list_;
  std::map<std::string, Where> origin_;
};

// ---- every field, once: the reader, the writer and the flag table walk this ----

template <typename Config, typename Visitor>
void VisitConfig(Config& c, Visitor& v) {
  v.Section("model", [&] {
    v.Field("path", c.model.path);
    v.Field("name", c.model.name);
    v.Field("chat_template", c.model.chat_template);
    v.Field("max_model_len", c.model.max_model_len);
  });
  v.Section("server", [&] {
    v.Field("host", c.server.host);
    v.Field("http_port", c.server.http_port);
    v.Field("grpc_port", c.server.grpc_port);
    v.Field("api_keys", c.server.api_keys);
    v.Field("metrics_auth", c.server.metrics_auth);
    v.Field("cors_allowed_origins", c.server.cors_allowed_origins);
    v.Field("max_connections", c.server.max_connections);
    v.Field("stored_responses", c.server.stored_responses);
    v.Size("stored_response_bytes", c.server.stored_response_bytes);
    v.Field("drain_timeout_s", c.server.drain_timeout_s);
    v.Size("max_request_bytes", c.server.max_request_bytes);
  });
  v.Section("engine", [&] {
    v.Enum("device", c.engine.device, DeviceNames());
    v.Field("cuda_device", c.engine.cuda_device);
    v.Field("threads", c.engine.threads);
    v.Enum("pin_threads", c.engine.pin_threads, PinThreadsNames());
    v.Size("kv_budget", c.engine.kv_budget_bytes);
    v.KvFormatField("kv_format", c.engine.kv_format);
    v.Field("tokens_per_page", c.engine.tokens_per_page);
    v.Field("enable_prefix_caching", c.engine.enable_prefix_caching);
    v.Enum("activations", c.engine.activations, ActivationNames());
    v.Field("amx_prompts", c.engine.amx_prompts);
    v.Field("amx_attention", c.engine.amx_attention);
  });
  v.Section("kv", [&] {
    v.Enum("mode", c.kv.mode, KvModeNames());
    v.KvFormatField("high_format", c.kv.high_format);
    v.KvFormatField("low_format", c.kv.low_format);
    v.Field("alpha_prune", c.kv.alpha_prune);
    v.Field("alpha_quant", c.kv.alpha_quant);
    v.Field("window", c.kv.window);
    v.Size("page_bytes_min", c.kv.page_bytes_min);
    v.Size("page_bytes_max", c.kv.page_bytes_max);
  });
  v.Section("scheduler", [&] {
    v.Field("max_num_seqs", c.scheduler.max_num_seqs);
    v.Field("max_num_batched_tokens", c.scheduler.max_num_batched_tokens);
    v.Field("max_long_prefills", c.scheduler.max_long_prefills);
    v.Field("long_prefill_threshold", c.scheduler.long_prefill_threshold);
    v.Field("max_waiting_requests", c.scheduler.max_waiting_requests);
    v.Field("max_waiting_tokens", c.scheduler.max_waiting_tokens);
    v.Field("overload_status", c.scheduler.overload_status);
    v.Field("retry_after_s", c.scheduler.retry_after_s);
  });
  v.Section("log", [&] { v.Enum("level", c.log.level, LogLevelNames()); });
}

// Reads a YAML tree into a ServeConfig, keeping defaults for absent or null keys and reporting
// type errors, duplicate keys and unknown keys (with suggestions) to `problems`.
class YamlReader {
 public:
  explicit YamlReader(Problems* problems) : problems_(problems) {}

  void Read(const YAML::Node& root, ServeConfig& config) {
    if (!root.IsDefined() || root.IsNull()) return;
    if (!root.IsMap()) {
      problems_->Add("<root>",
                     absl::StrCat("expected a mapping of sections (model, server, ...), got ", KindName(root)),
                     WhereOf(root.Mark()));
      return;
    }
    frames_.push_back({root, "", {}});
    VisitConfig(config, *this);
    EndFrame();
  }

  template <typename Body>
  void Section(const char* key, Body body) {
    YAML::Node node = Child(key);
    if (!node.IsDefined() || node.IsNull()) return;
    const std::string path = PathOf(key);
    if (!node.IsMap()) {
      problems_->Add(path, absl::StrCat("expected a mapping, got ", KindName(node)), WhereOf(node.Mark()));
      return;
    }
    frames_.push_back({node, path, {}});
    body();
    EndFrame();
  }

  void Field(const char* key, std::string& v) {
    if (auto s = Scalar(key, "a string")) v = *s;
  }
  void Field(const char* key, bool& v) {
    auto s = Scalar(key, "true or false");
    if (!s) return;
    const std::string lower = absl::AsciiStrToLower(*s);
    // "1" and "0" too: cli::Flags records a switch given without a value as "1".
    if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") v = true;
    else if (lower == "false" || lower == "no" || lower == "off" || lower == "0") v = false;
    else Fail(key, absl::StrCat("expected true or false, got ", Quoted(*s)));
  }
  void Field(const char* key, int& v) {
    int64_t wide = v;
    if (ReadInt(key, wide)) {
      if (wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) {
        Fail(key, absl::StrCat("expected a 32-bit integer, got ", wide));
      } else {
        v = static_cast<int>(wide);
      }
    }
  }
  void Field(const char* key, int64_t& v) { ReadInt(key, v); }
  void Field(const char* key, double& v) {
    auto s = Scalar(key, "a number");
    if (!s) return;
    double d;
    if (!absl::SimpleAtod(*s, &d) || !std::isfinite(d)) {
      Fail(key, absl::StrCat("expected a number, got ", Quoted(*s)));
    } else {
      v = d;
    }
  }
  void Field(const char* key, std::vector<std::string>& v) {
    YAML::Node node = Child(key);
    if (!node.IsDefined() || node.IsNull()) return;
    Note(key, node);
    if (!node.IsSequence()) {
      Fail(key, absl::StrCat("expected a list of strings, got ", KindName(node)));
      return;
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < node.size(); ++i) {
      if (!node[i].IsScalar()) {
        problems_->Add(absl::StrCat(PathOf(key), "[", i, "]"),
                       absl::StrCat("expected a string, got ", KindName(node[i])), WhereOf(node[i].Mark()));
        return;
      }
      out.push_back(node[i].Scalar());
    }
    v = std::move(out);
  }
  void Size(const char* key, int64_t& v) {
    auto s = Scalar(key, "a byte size");
    if (!s) return;
    absl::StatusOr<int64_t> bytes = ParseByteSize(*s);
    if (bytes.ok()) v = *bytes;
    else Fail(key, std::string(bytes.status().message()));
  }
  // A KV format: dense, or quantized with any bits and groups (kernels/kv_format.h).
  void KvFormatField(const char* key, KvFormat& v) {
    auto s = Scalar(key, kernels::kKvFormatSyntax);
    if (!s) return;
    if (!kernels::ParseKvFormat(*s, &v)) {
      const std::vector<std::string> common = {"f32", "f16", "bf16", "k8v8", "k8v4", "k4v2"};
      Fail(key, absl::StrCat("expected ", kernels::kKvFormatSyntax, ", got ", Quoted(*s), DidYouMean(*s, common)));
    }
  }

  template <typename E>
  void Enum(const char* key, E& v, const EnumNames<E>& names) {
    std::vector<std::string> choices;
    for (const auto& [value, name] : names) choices.push_back(name);
    auto s = Scalar(key, absl::StrCat("one of ", absl::StrJoin(choices, ", ")));
    if (!s) return;
    for (const auto& [value, name] : names) {
      if (*s == name) {
        v = value;
        return;
      }
    }
    Fail(key, absl::StrCat("expected one of ", absl::StrJoin(choices, ", "), ", got ", Quoted(*s),
                           DidYouMean(*s, choices)));
  }

 private:
  struct Frame {
    YAML::Node node;
    std::string path;
    std::vector<std::string> known;  // keys the visitor asked for
  };

  static std::string KindName(const YAML::Node& n) {
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a list";
    if (n.IsNull()) return "null";
    return Quoted(n.Scalar());
  }

  std::string PathOf(const std::string& key) const {
    const std::string& base = frames_.back().path;
    return base.empty() ? key : absl::StrCat(base, ".", key);
  }

  // The value under `key` in the current mapping (undefined node when absent).
  YAML::Node Child(const char* key) {
    Frame& f = frames_.back();
    f.known.push_back(key);
    for (auto it = f.node.begin(); it != f.node.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
    }
    return YAML::Node(YAML::NodeType::Undefined);
  }

  // Records where `key`'s value was written, for messages from later validation.
  void Note(const char* key, const YAML::Node& node) {
    if (!node.Mark().is_null()) problems_->SetOrigin(PathOf(key), WhereOf(node.Mark()));
  }
  void Fail(const char* key, std::string message) { problems_->Add(PathOf(key), std::move(message)); }

  // The scalar text under `key`; nullopt when absent, null, or not a scalar (reported).
  std::optional<std::string> Scalar(const char* key, absl::string_view expected) {
    YAML::Node node = Child(key);
    if (!node.IsDefined() || node.IsNull()) return std::nullopt;
    Note(key, node);
    if (!node.IsScalar()) {
      Fail(key, absl::StrCat("expected ", expected, ", got ", KindName(node)));
      return std::nullopt;
    }
    return node.Scalar();
  }

  bool ReadInt(const char* key, int64_t& v) {
    auto s = Scalar(key, "an integer");
    if (!s) return false;
    int64_t i;
    if (!absl::SimpleAtoi(*s, &i)) {
      Fail(key, absl::StrCat("expected an integer, got ", Quoted(*s)));
      return false;
    }
    v = i;
    return true;
  }

  // Reports duplicate and unknown keys of the mapping being left.
  void EndFrame() {
    Frame f = std::move(frames_.back());
    frames_.pop_back();
    std::set<std::string> seen;
    auto path_of = [&](const std::string& key) { return f.path.empty() ? key : absl::StrCat(f.path, ".", key); };
    for (auto it = f.node.begin(); it != f.node.end(); ++it) {
      if (!it->first.IsScalar()) {
        problems_->Add(f.path.empty() ? "<root>" : f.path,
                       absl::StrCat("keys must be plain names, got ", KindName(it->first)),
                       WhereOf(it->first.Mark()));
        continue;
      }
      const std::string& key = it->first.Scalar();
      if (!seen.insert(key).second) {
        problems_->Add(path_of(key), "duplicate key", WhereOf(it->first.Mark()));
      } else if (std::find(f.known.begin(), f.known.end(), key) == f.known.end()) {
        problems_->Add(path_of(key), absl::StrCat("unknown key", DidYouMean(key, f.known)),
                       WhereOf(it->first.Mark()));
      }
    }
  }

  Problems* problems_;
  std::vector<Frame> frames_;
};

// Shortest text that reads back as exactly `v` (30, 0.1, 2.5e-05).
std::string FormatDouble(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : absl::StrCat(v);
}

// Emits the config through the same visitor, so every field appears, in declaration order.
class YamlWriter {
 public:
  explicit YamlWriter(bool redact) : redact_(redact) { out_ << YAML::BeginMap; }
  std::string Finish() {
    out_ << YAML::EndMap;
    return std::string(out_.c_str()) + "\n";
  }

  template <typename Body>
  void Section(const char* key, Body body) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    body();
    out_ << YAML::EndMap;
  }
  void Field(const char* key, const std::string& v) {
    out_ << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << v;
  }
  void Field(const char* key, bool v) { out_ << YAML::Key << key << YAML::Value << v; }
  void Field(const char* key, int v) { out_ << YAML::Key << key << YAML::Value << v; }
  void Field(const char* key, int64_t v) { out_ << YAML::Key << key << YAML::Value << v; }
  void Field(const char* key, double v) {
    out_ << YAML::Key << key << YAML::Value << FormatDouble(v);
  }
  void Field(const char* key, const std::vector<std::string>& v) {
    out_ << YAML::Key << key << YAML::Value;
    if (redact_ && !v.empty()) {
      // A string where a list belongs: loading it back fails, naming the key, instead of
      // accepting a made-up key or serving without one.
      out_ << YAML::DoubleQuoted << absl::StrCat("<redacted: ", v.size(), v.size() == 1 ? " key>" : " keys>");
      return;
    }
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const std::string& s : v) out_ << YAML::DoubleQuoted << s;
    out_ << YAML::EndSeq;
  }
  void Size(const char* key, int64_t v) { out_ << YAML::Key << key << YAML::Value << FormatByteSize(v); }
  void KvFormatField(const char* key, KvFormat v) {
    out_ << YAML::Key << key << YAML::Value << kernels::KvFormatName(v);
  }

  template <typename E>
  void Enum(const char* key, E v, const EnumNames<E>& names) {
    for (const auto& [value, name] : names) {
      if (value == v) out_ << YAML::Key << key << YAML::Value << name;
    }
  }

 private:
  YAML::Emitter out_;
  const bool redact_;
};

// ---- validation ----

void Validate(const ServeConfig& c, Problems& p) {
  auto in_range = [&](const char* path, int64_t v, int64_t lo, int64_t hi, const char* note = "") {
    if (v < lo || v > hi) p.Add(path, absl::StrCat("must be in [", lo, ", ", hi, "]", note, ", got ", v));
  };
  auto not_empty = [&](const char* path, const std::string& v) {
    if (v.empty()) p.Add(path, "must not be empty");
  };
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();

  not_empty("model.path", c.model.path);
  in_range("model.max_model_len", c.model.max_model_len, 0, kMaxInt, " (0 = the model's context)");

  not_empty("server.host", c.server.host);
  in_range("server.http_port", c.server.http_port, 1, 65535);
  in_range("server.grpc_port", c.server.grpc_port, 0, 65535, " (0 = off)");
  if (c.server.grpc_port != 0 && c.server.grpc_port == c.server.http_port) {
    p.Add("server.grpc_port", absl::StrCat("must differ from server.http_port, both are ", c.server.http_port));
  }
  for (size_t i = 0; i < c.server.api_keys.size(); ++i) {
    const std::string& key = c.server.api_keys[i];
    if (key.empty() || std::any_of(key.begin(), key.end(), [](char ch) { return absl::ascii_isspace(ch); })) {
      p.Add(absl::StrCat("server.api_keys[", i, "]"), "must be non-empty without whitespace");
    }
  }
  for (size_t i = 0; i < c.server.cors_allowed_origins.size(); ++i) {
    const std::string& o = c.server.cors_allowed_origins[i];
    if (o != "*" && !(absl::StartsWith(o, "http://") || absl::StartsWith(o, "https://"))) {
      p.Add(absl::StrCat("server.cors_allowed_origins[", i, "]"),
            absl::StrCat("must be \"*\" or an origin like https://chat.example.com, got ", Quoted(o)));
    } else if (o != "*" && (o.back() == '/' || std::any_of(o.begin(), o.end(), [](char ch) { return absl::ascii_isspace(ch); }))) {
      p.Add(absl::StrCat("server.cors_allowed_origins[", i, "]"),
            absl::StrCat("an origin is scheme://host[:port] with no path or trailing '/', got ", Quoted(o)));
    }
  }
  if (!(c.server.drain_timeout_s >= 0 && c.server.drain_timeout_s <= 3600)) {
    p.Add("server.drain_timeout_s", absl::StrCat("must be in [0, 3600], got ", FormatDouble(c.server.drain_timeout_s)));
  }
  in_range("server.max_request_bytes", c.server.max_request_bytes, 1024, int64_t{1} << 30);
  in_range("server.max_connections", c.server.max_connections, 1, 1000000);
  in_range("server.stored_responses", c.server.stored_responses, 0, 10000000);
  in_range("server.stored_response_bytes", c.server.stored_response_bytes, 0, int64_t{1} << 40);

  in_range("engine.cuda_device", c.engine.cuda_device, 0, 1023);
  in_range("engine.threads", c.engine.threads, 0, 1024);
  in_range("engine.kv_budget", c.engine.kv_budget_bytes, 1, std::numeric_limits<int64_t>::max());
  const int tpp = c.engine.tokens_per_page;
  if (tpp < 1 || tpp > 1024 || (tpp & (tpp - 1)) != 0) {
    p.Add("engine.tokens_per_page", absl::StrCat("must be a power of two in [1, 1024], got ", tpp));
  }

  const KvConfig& kv = c.kv;
  const bool quantized_format = kernels::IsQuantized(c.engine.kv_format);
  if (kv.mode == KvConfig::Mode::kDense && quantized_format) {
    p.Add("engine.kv_format", absl::StrCat(kernels::KvFormatName(c.engine.kv_format),
                                           " is a quantized tier: set kv.mode: quantized (or use f32, f16, bf16)"));
  }
  if (kv.mode == KvConfig::Mode::kQuantized && !quantized_format) {
    p.Add("engine.kv_format", absl::StrCat("kv.mode quantized needs a quantized format (e.g. k8v8, k8v4, k4v2), got ",
                                           kernels::KvFormatName(c.engine.kv_format)));
  }
  if (kv.mode == KvConfig::Mode::kLeanKv) {
    const char* tier = "must be quantized: k<bits>[g<groups>]v<bits>[g<groups>], e.g. k8v4, k4v2";
    if (!kernels::IsQuantized(kv.high_format)) p.Add("kv.high_format", tier);
    if (!kernels::IsQuantized(kv.low_format)) p.Add("kv.low_format", tier);
    if (c.engine.device == EngineConfig::Device::kCuda) {
      p.Add("kv.mode", "leankv runs on the CPU worker only (engine.device: cpu)");
    }
  }
  if (!(kv.alpha_prune >= 0 && kv.alpha_prune <= 1000)) {
    p.Add("kv.alpha_prune", absl::StrCat("must be in [0, 1000], got ", FormatDouble(kv.alpha_prune)));
  }
  if (!(kv.alpha_quant >= kv.alpha_prune && kv.alpha_quant <= 1000)) {
    p.Add("kv.alpha_quant", absl::StrCat("must be in [kv.alpha_prune, 1000], got ", FormatDouble(kv.alpha_quant)));
  }
  in_range("kv.window", kv.window, 1, 1 << 20);
  in_range("kv.page_bytes_min", kv.page_bytes_min, 64, int64_t{1} << 20);
  in_range("kv.page_bytes_max", kv.page_bytes_max, kv.page_bytes_min, int64_t{1} << 20, " (>= kv.page_bytes_min)");

  const SchedulerConfig& s = c.scheduler;
  in_range("scheduler.max_num_seqs", s.max_num_seqs, 1, 65536);
  in_range("scheduler.max_num_batched_tokens", s.max_num_batched_tokens, 1, kMaxInt);
  if (s.max_num_seqs >= 1 && s.max_num_batched_tokens >= 1 && s.max_num_batched_tokens < s.max_num_seqs) {
    p.Add("scheduler.max_num_batched_tokens",
          absl::StrCat("must be >= scheduler.max_num_seqs (", s.max_num_seqs,
                       ") so that every running request can decode in one step, got ",
                       s.max_num_batched_tokens));
  }
  in_range("scheduler.max_long_prefills", s.max_long_prefills, 1, kMaxInt);
  in_range("scheduler.long_prefill_threshold", s.long_prefill_threshold, 0, kMaxInt, " (0 = off)");
  in_range("scheduler.max_waiting_requests", s.max_waiting_requests, 1, kMaxInt);
  in_range("scheduler.max_waiting_tokens", s.max_waiting_tokens, 1, std::numeric_limits<int64_t>::max());
  if (s.overload_status != 429 && s.overload_status != 503) {
    p.Add("scheduler.overload_status", absl::StrCat("must be 429 or 503, got ", s.overload_status));
  }
  in_range("scheduler.retry_after_s", s.retry_after_s, 0, 3600);
}

// ---- flags ----

// The keys whose flags are switches, each with the values its flag may take as the next
// argument: booleans (true, false) and enums that read like one (pin_threads: auto, true,
// false). Given alone, a switch flag means true.
class SwitchFinder {
 public:
  template <typename Body>
  void Section(const char* key, Body body) {
    section_ = key;
    body();
  }
  void Field(const char* key, const bool&) { Add(key, {"true", "false"}); }
  template <typename T>
  void Field(const char*, const T&) {}
  void Size(const char*, int64_t) {}
  void KvFormatField(const char*, KvFormat) {}
  template <typename E>
  void Enum(const char* key, E, const EnumNames<E>& names) {
    std::vector<std::string> values;
    for (const auto& [value, name] : names) values.push_back(name);
    if (std::find(values.begin(), values.end(), "true") != values.end()) Add(key, std::move(values));
  }

  std::map<std::string, std::vector<std::string>> switches;  // key path -> values

 private:
  void Add(const char* key, std::vector<std::string> values) {
    switches[absl::StrCat(section_, ".", key)] = std::move(values);
  }
  std::string section_;
};

const std::map<std::string, std::vector<std::string>>& SwitchKeys() {
  static const auto* keys = [] {
    SwitchFinder finder;
    const ServeConfig defaults;
    VisitConfig(defaults, finder);
    return new std::map<std::string, std::vector<std::string>>(std::move(finder.switches));
  }();
  return *keys;
}

// Applies flags as a YAML overlay, so they are parsed (and reported) exactly like the file.
void ReadFlags(const std::map<std::string, std::string>& flags, ServeConfig& config, Problems& p) {
  const auto& names = ConfigFlagNames();
  YAML::Node overlay(YAML::NodeType::Map);
  for (const auto& [raw_name, value] : flags) {
    std::string name(absl::StripPrefix(raw_name, "--"));
    auto it = names.find(name);
    if (it == names.end()) {
      std::vector<std::string> all;
      for (const auto& [n, path] : names) all.push_back(n);
      p.Add(absl::StrCat("--", name), absl::StrCat("unknown config flag", DidYouMean(name, all, "--")));
      continue;
    }
    const std::string& path = it->second;
    const size_t dot = path.find('.');
    const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
    p.Forget(path);  // the flag replaces the file's value, so that value's problems go too
    p.SetOrigin(path, {absl::StrCat("from --", name)});
    if (key == "api_keys") {
      YAML::Node list(YAML::NodeType::Sequence);
      list.push_back(value);
      overlay[section][key] = list;
    } else if (value.empty() && SwitchKeys().count(path)) {
      overlay[section][key] = "true";
    } else {
      overlay[section][key] = value;
    }
  }
  YamlReader(&p).Read(overlay, config);
}

bool EndsWithNoCase(absl::string_view s, absl::string_view suffix) {
  return s.size() >= suffix.size() &&
         absl::AsciiStrToLower(s.substr(s.size() - suffix.size())) == absl::AsciiStrToLower(suffix);
}

}  // namespace

absl::StatusOr<ServeConfig> ParseConfig(absl::string_view yaml, absl::string_view source,
                                        const std::map<std::string, std::string>& flags) {
  ServeConfig config;
  Problems problems;
  auto yaml_error = [&](const YAML::Mark& mark, absl::string_view what) {
    const std::string where = mark.is_null() ? "" : absl::StrCat(":", mark.line + 1, ":", mark.column + 1);
    return absl::InvalidArgumentError(absl::StrCat(source, where, ": invalid YAML: ", what));
  };
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    for (size_t i = 1; i < documents.size(); ++i) {
      if (!documents[i].IsNull()) {
        return yaml_error(documents[i].Mark(), "a second document (after ---); a config file holds one");
      }
    }
    if (!documents.empty()) YamlReader(&problems).Read(documents[0], config);
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's message is "bad file"
    return yaml_error(e.mark, absl::StrCat("nested too deeply: more than ", e.depth() - 1,
                                           " levels (a config needs 3)"));
  } catch (const YAML::Exception& e) {  // syntax errors: nothing after them can be trusted
    return yaml_error(e.mark, e.msg);
  }
  ReadFlags(flags, config, problems);
  Validate(config, problems);
  if (absl::Status s = problems.ToStatus(source); !s.ok()) return s;
  return config;
}

absl::StatusOr<ServeConfig> LoadConfigFile(const std::string& path,
                                           const std::map<std::string, std::string>& flags) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("config file ", path, " is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path));
  return ParseConfig(text.str(), path, flags);
}

absl::Status ApplyFlags(ServeConfig& config, const std::map<std::string, std::string>& flags) {
  Problems problems;
  ServeConfig updated = config;  // untouched on error
  ReadFlags(flags, updated, problems);
  Validate(updated, problems);
  if (absl::Status s = problems.ToStatus("from flags"); !s.ok()) return s;
  config = std::move(updated);
  return absl::OkStatus();
}

bool ConfigFlagTakesArgument(absl::string_view name, const char* next) {
  const auto& names = ConfigFlagNames();
  auto it = names.find(std::string(name));
  if (it == names.end()) return false;
  auto switch_key = SwitchKeys().find(it->second);
  if (switch_key == SwitchKeys().end()) return true;
  if (next == nullptr) return false;
  const std::vector<std::string>& values = switch_key->second;
  return std::any_of(values.begin(), values.end(),
                     [&](const std::string& v) { return absl::EqualsIgnoreCase(v, next); });
}

const std::map<std::string, std::string>& ConfigFlagNames() {
  static const auto* names = new std::map<std::string, std::string>{
      {"model", "model.path"},
      {"served-model-name", "model.name"},
      {"chat-template", "model.chat_template"},
      {"max-model-len", "model.max_model_len"},
      {"host", "server.host"},
      {"http-port", "server.http_port"},
      {"grpc-port", "server.grpc_port"},
      {"api-key", "server.api_keys"},
      {"metrics-auth", "server.metrics_auth"},
      {"drain-timeout-s", "server.drain_timeout_s"},
      {"device", "engine.device"},
      {"cuda-device", "engine.cuda_device"},
      {"threads", "engine.threads"},
      {"pin-threads", "engine.pin_threads"},
      {"kv-budget", "engine.kv_budget"},
      {"kv-format", "engine.kv_format"},
      {"tokens-per-page", "engine.tokens_per_page"},
      {"enable-prefix-caching", "engine.enable_prefix_caching"},
      {"activations", "engine.activations"},
      {"amx-prompts", "engine.amx_prompts"},
      {"amx-attention", "engine.amx_attention"},
      {"kv-mode", "kv.mode"},
      {"alpha-prune", "kv.alpha_prune"},
      {"alpha-quant", "kv.alpha_quant"},
      {"max-num-seqs", "scheduler.max_num_seqs"},
      {"max-num-batched-tokens", "scheduler.max_num_batched_tokens"},
      {"max-waiting-requests", "scheduler.max_waiting_requests"},
      {"log-level", "log.level"},
  };
  return *names;
}

absl::Status ValidateConfig(const ServeConfig& config) {
  Problems problems;
  Validate(config, problems);
  return problems.ToStatus("");
}

std::string ToYaml(const ServeConfig& config, bool redact_api_keys) {
  YamlWriter writer(redact_api_keys);
  VisitConfig(config, writer);
  return writer.Finish();
}

std::string ServedModelName(const ServedModelConfig& model) {
  if (!model.name.empty()) return model.name;
  absl::string_view base = absl::StripSuffix(model.path, "/");
  if (size_t slash = base.rfind('/'); slash != absl::string_view::npos) base = base.substr(slash + 1);
  if (EndsWithNoCase(base, ".gguf")) {
    base.remove_suffix(5);
    // Drop a trailing quantisation tag: .Q4_1, .Q8_0, .IQ4_XS, .F16, .BF16, .F32.
    if (size_t dot = base.rfind('.'); dot != absl::string_view::npos) {
      const std::string tag = absl::AsciiStrToUpper(base.substr(dot + 1));
      const bool quant = tag == "F16" || tag == "F32" || tag == "BF16" ||
                         (tag.size() >= 2 && tag[0] == 'Q' && absl::ascii_isdigit(tag[1])) ||
                         (tag.size() >= 3 && tag.rfind("IQ", 0) == 0 && absl::ascii_isdigit(tag[2]));
      if (quant) base = base.substr(0, dot);
    }
  }
  return std::string(base);
}

const char* LogLevelName(LogConfig::Level level) {
  for (const auto& [value, name] : LogLevelNames()) {
    if (value == level) return name;
  }
  return "?";
}

const char* DeviceName(EngineConfig::Device device) {
  for (const auto& [value, name] : DeviceNames()) {
    if (value == device) return name;
  }
  return "?";
}

const char* PinThreadsName(Pinning pinning) {
  for (const auto& [value, name] : PinThreadsNames()) {
    if (value == pinning) return name;
  }
  return "?";
}

}  // namespace peng
