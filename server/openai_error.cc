#include "server/openai_error.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace peng::server {
namespace {

constexpr absl::string_view kParamPayload = "type.peng/openai.param";

}  // namespace

absl::Status WithParam(absl::Status status, absl::string_view param) {
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

absl::Status BadParam(absl::string_view param, absl::string_view message) {
  return WithParam(absl::InvalidArgumentError(message), param);
}

absl::Status TypeError(absl::string_view param, absl::string_view want) {
  return BadParam(param, absl::StrCat("'", param, "' must be ", want));
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kParamPayload);
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

nlohmann::json ApiError::ToJson() const {
  return nlohmann::json{{"error",
                         {{"message", message},
                          {"type", type},
                          {"param", param ? nlohmann::json(*param) : nlohmann::json(nullptr)},
                          {"code", status}}}};
}

std::string ApiError::Body() const { return DumpJson(ToJson()); }

const char* ErrorTypeForStatus(int http_status) {
  switch (http_status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestEntityTooLargeError";
    case 415: return "UnsupportedMediaTypeError";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 503: return "ServiceUnavailableError";
    default: return http_status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

ApiError MakeApiError(int http_status, std::string message, std::optional<std::string> param) {
  ApiError e;
  e.status = http_status;
  e.message = std::move(message);
  e.type = ErrorTypeForStatus(http_status);
  e.param = std::move(param);
  return e;
}

ApiError ApiErrorFromStatus(const absl::Status& status, int overload_status,
                            int retry_after_s) {
  int code = 500;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: code = 400; break;
    case absl::StatusCode::kNotFound: code = 404; break;
    case absl::StatusCode::kUnauthenticated: code = 401; break;
    case absl::StatusCode::kPermissionDenied: code = 403; break;
    case absl::StatusCode::kResourceExhausted: code = overload_status; break;
    case absl::StatusCode::kUnavailable: code = 503; break;
    default: code = 500; break;
  }
  ApiError e = MakeApiError(code, std::string(status.message()), ParamOf(status));
  if (status.code() == absl::StatusCode::kResourceExhausted ||
      status.code() == absl::StatusCode::kUnavailable) {
    e.retry_after_s = retry_after_s > 0 ? retry_after_s : 1;
  }
  return e;
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string DumpJson(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace peng::server
