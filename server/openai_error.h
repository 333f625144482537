// OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} with vLLM's type
// strings. Inside the server an error is an absl::Status; the offending request field travels
// as a Status payload (WithParam) so that validation code stays plain absl. The HTTP layer
// turns a Status into ApiError once, at the edge. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace peng::server {

// Returns `status` with `param` (the request field at fault, e.g. "temperature") attached.
absl::Status WithParam(absl::Status status, absl::string_view param);
// Shorthand for WithParam(absl::InvalidArgumentError(message), param).
absl::Status BadParam(absl::string_view param, absl::string_view message);
// BadParam(param, "'<param>' must be <want>"): a field of the wrong type or shape.
absl::Status TypeError(absl::string_view param, absl::string_view want);
std::optional<std::string> ParamOf(const absl::Status& status);

struct ApiError {
  int status = 500;                  // HTTP status
  std::string message;
  std::string type;                  // "BadRequestError", "NotFoundError", ...
  std::optional<std::string> param;  // null in JSON when absent
  int retry_after_s = 0;             // > 0: send a Retry-After header

  nlohmann::json ToJson() const;     // {"error": {...}}
  std::string Body() const;          // ToJson() serialised
};

// vLLM/OpenAI type string for an HTTP status ("BadRequestError" for 400, ...).
const char* ErrorTypeForStatus(int http_status);
ApiError MakeApiError(int http_status, std::string message,
                      std::optional<std::string> param = std::nullopt);

// Maps a Status to an ApiError: InvalidArgument/OutOfRange -> 400, NotFound -> 404,
// Unauthenticated -> 401, PermissionDenied -> 403, ResourceExhausted -> overload_status
// (429 or 503) with Retry-After, Unavailable -> 503, anything else -> 500.
// `retry_after_s` is used for ResourceExhausted and Unavailable.
ApiError ApiErrorFromStatus(const absl::Status& status, int overload_status = 429,
                            int retry_after_s = 1);

// JSON text with invalid UTF-8 replaced by U+FFFD (token pieces may split characters).
std::string DumpJson(const nlohmann::json& j);
std::string DumpJson(const nlohmann::ordered_json& j);  // keys in insertion order

}  // namespace peng::server
