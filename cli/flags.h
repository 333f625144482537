// Flags: a small `--name value` / `--switch` command-line parser for the peng subcommands.
// Each command declares its flags up front; unknown flags and malformed values are errors that
// name the flag, so a typo never silently falls back to a default. A switch given alone means
// true; it takes a value only as `--switch=true|false` or when the next argument is true or false
// (`--chat false`), so it never swallows the flag after it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"

namespace peng::cli {

// A switch's value: true or false, in any case; nullopt for anything else.
std::optional<bool> SwitchValue(const std::string& text);

// The value of valued flag `name` given as the next argument: an error when there is none, or
// when it looks like a flag itself (`--api-key --print-config` would otherwise set the key to
// "--print-config"); such a value can still be given as `--name=VALUE`.
absl::StatusOr<std::string> NextValue(const std::string& name, int argc, char** argv, int* i);

class Flags {
 public:
  // `valued` take a value (`--name V` or `--name=V`); `switches` are booleans (see above).
  Flags(std::set<std::string> valued, std::set<std::string> switches)
      : valued_(std::move(valued)), switches_(std::move(switches)) {}

  // argv[0] is the subcommand name and is skipped.
  absl::Status Parse(int argc, char** argv);

  // Whether a valued flag was given, or a switch is on.
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string String(const std::string& name, const std::string& def = "") const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def, int64_t lo, int64_t hi) const;
  absl::StatusOr<double> Double(const std::string& name, double def, double lo, double hi) const;

 private:
  std::set<std::string> valued_, switches_;
  std::map<std::string, std::string> values_;
};

}  // namespace peng::cli
