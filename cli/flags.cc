#include "cli/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace peng::cli {

std::optional<bool> SwitchValue(const std::string& text) {
  if (absl::EqualsIgnoreCase(text, "true")) return true;
  if (absl::EqualsIgnoreCase(text, "false")) return false;
  return std::nullopt;
}

absl::StatusOr<std::string> NextValue(const std::string& name, int argc, char** argv, int* i) {
  if (*i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
  const std::string next = argv[*i + 1];
  if (next.rfind("--", 0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value, got the flag '", next,
                                                   "' (a value that starts with -- goes as --", name, "=VALUE)"));
  }
  ++*i;
  return next;
}

absl::Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (switches_.count(name)) {
      if (!has_value && i + 1 < argc && SwitchValue(argv[i + 1])) {
        value = argv[++i];
        has_value = true;
      }
      const std::optional<bool> on = has_value ? SwitchValue(value) : true;
      if (!on) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes true or false, got '", value, "'"));
      }
      if (*on) {
        values_[name] = "1";
      } else {
        values_.erase(name);
      }
    } else if (valued_.count(name)) {
      if (!has_value) {
        absl::StatusOr<std::string> next = NextValue(name, argc, argv, &i);
        if (!next.ok()) return next.status();
        value = *std::move(next);
      }
      values_[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  return absl::OkStatus();
}

std::string Flags::String(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second;
}

absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t def, int64_t lo, int64_t hi) const {
  auto it = values_.find(name);
  if (it == values_.end()) return def;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer, got '", it->second, "'"));
  }
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

absl::StatusOr<double> Flags::Double(const std::string& name, double def, double lo, double hi) const {
  auto it = values_.find(name);
  if (it == values_.end()) return def;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number, got '", it->second, "'"));
  }
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return v;
}

}  // namespace peng::cli
