#include "server/config_text.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace peng {
namespace {

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
int EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<int>> d(a.size() + 1, std::vector<int>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string DidYouMean(const std::string& got, const std::vector<std::string>& candidates,
                       absl::string_view prefix) {
  const int limit = std::clamp(static_cast<int>(got.size()) / 3, 1, 3);
  const std::string* best = nullptr;
  int best_distance = limit + 1;
  for (const std::string& c : candidates) {
    const int distance = EditDistance(absl::AsciiStrToLower(got), absl::AsciiStrToLower(c));
    if (distance < best_distance) best = &c, best_distance = distance;
  }
  return best ? absl::StrCat("; did you mean ", prefix, *best, "?") : "";
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", absl::CEscape(s), "\""); }

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) {
  const absl::string_view s = absl::StripAsciiWhitespace(text);
  size_t n = 0;
  while (n < s.size() && (absl::ascii_isdigit(s[n]) || s[n] == '.')) ++n;
  const absl::string_view number = s.substr(0, n);
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(n)));
  static const auto* units = new std::vector<std::pair<std::string, double>>{
      {"B", 1},          {"KB", 1e3},          {"MB", 1e6},             {"GB", 1e9},
      {"TB", 1e12},      {"KiB", 1024.0},      {"MiB", 1048576.0},      {"GiB", 1073741824.0},
      {"TiB", 1099511627776.0}};
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a byte size like 64MiB or 2GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got ",
        Quoted(std::string(text)), why));
  };
  double value;
  if (number.empty() || !absl::SimpleAtod(number, &value)) return bad("");
  auto it = std::find_if(units->begin(), units->end(),
                         [&](const auto& u) { return absl::AsciiStrToLower(u.first) == unit; });
  double scale = 1;
  if (it != units->end()) {
    scale = it->second;
  } else if (!unit.empty()) {
    // A bare K, M, G or T (64G) means the binary unit in most tools that size memory.
    if (unit.size() == 1 && absl::StrContains("kmgt", unit)) {
      return bad(absl::StrCat("; did you mean ", number, absl::AsciiStrToUpper(unit), "iB?"));
    }
    std::vector<std::string> names;
    for (const auto& u : *units) names.push_back(u.first);
    return bad(DidYouMean(unit, names, number));
  }
  const double bytes = value * scale;
  if (bytes >= 9.2e18) return bad(" (too large)");
  const double whole = std::round(bytes);
  if (std::fabs(bytes - whole) > 1e-6 * std::max(1.0, bytes)) return bad(" (not a whole number of bytes)");
  return static_cast<int64_t>(whole);
}

std::string FormatByteSize(int64_t bytes) {
  if (bytes > 0) {
    for (const auto& [shift, unit] : {std::pair{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}}) {
      if (bytes % (int64_t{1} << shift) == 0) return absl::StrCat(bytes >> shift, unit);
    }
  }
  return absl::StrCat(bytes);
}

}  // namespace peng
