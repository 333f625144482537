// API-key check shared by the HTTP and gRPC frontends: an `Authorization` value (header or
// metadata) of the form "Bearer <key>" (the scheme is case-insensitive, RFC 7235) naming one of
// the configured keys, compared in constant time so that a check does not leak how much of a
// key matched.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace peng::server {

bool BearerKeyAccepted(std::string_view authorization, const std::vector<std::string>& keys);

}  // namespace peng::server
