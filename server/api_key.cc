#include "server/api_key.h"

#include <cctype>

namespace peng::server {
namespace {

bool SameKey(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || b.empty()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

bool BearerKeyAccepted(std::string_view authorization, const std::vector<std::string>& keys) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return false;
  }
  const std::string_view key = authorization.substr(kScheme.size());
  bool ok = false;
  for (const std::string& k : keys) ok |= SameKey(key, k);  // every key: no early exit
  return ok;
}

}  // namespace peng::server
