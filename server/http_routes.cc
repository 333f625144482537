#include "server/http_routes.h"

#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "boost/beast/http/status.hpp"
#include "server/api_key.h"
#include "server/openai_api.h"
#include "server/openai_responses.h"

namespace peng::server {
namespace {

using Json = nlohmann::json;

std::string PercentDecode(std::string_view s, bool plus_is_space = false) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
      continue;
    }
    if (s[i] == '%' && i + 2 < s.size()) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

HttpReply StatusReply(const absl::StatusOr<Json>& r) {
  if (!r.ok()) return ErrorReply(ApiErrorFromStatus(r.status()));
  return JsonReply(200, DumpJson(*r));
}

}  // namespace

RouteMatch MatchRoute(const std::string& target) {
  std::string_view path(target);
  RouteMatch m;
  if (size_t q = path.find('?'); q != std::string_view::npos) {
    const std::vector<std::string> pairs = absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty());
    for (const std::string& pair : pairs) {
      const size_t eq = pair.find('=');
      const std::string_view text(pair);
      m.query.emplace_back(PercentDecode(text.substr(0, eq), true),
                           eq == std::string::npos ? "" : PercentDecode(text.substr(eq + 1), true));
    }
    path = path.substr(0, q);
  }
  struct Entry {
    std::string_view path;
    Route route;
    const char* method;
  };
  static constexpr Entry kRoutes[] = {
      {"/v1/chat/completions", Route::kChatCompletions, "POST"},
      {"/v1/completions", Route::kCompletions, "POST"},
      {"/v1/responses", Route::kResponses, "POST"},
      {"/v1/models", Route::kModels, "GET"},
      {"/tokenize", Route::kTokenize, "POST"},
      {"/detokenize", Route::kDetokenize, "POST"},
      {"/health", Route::kHealth, "GET"},
      {"/live", Route::kLive, "GET"},
      {"/ready", Route::kReady, "GET"},
      {"/metrics", Route::kMetrics, "GET"},
      {"/version", Route::kVersion, "GET"},
  };
  for (const Entry& e : kRoutes) {
    if (path == e.path) {
      m.route = e.route;
      m.label = std::string(e.path);
      m.allowed = e.method;
      return m;
    }
  }
  static constexpr Entry kPrefixes[] = {
      {"/v1/models/", Route::kModel, "GET"},
      {"/v1/responses/", Route::kStoredResponse, "GET, DELETE"},
  };
  for (const Entry& e : kPrefixes) {
    if (path.size() > e.path.size() && path.substr(0, e.path.size()) == e.path) {
      m.route = e.route;
      m.label = absl::StrCat(std::string(e.path), "{id}");
      m.allowed = e.method;
      std::string_view id = path.substr(e.path.size());
      constexpr std::string_view kInputItems = "/input_items";
      if (e.route == Route::kStoredResponse && id.size() > kInputItems.size() && id.ends_with(kInputItems)) {
        id.remove_suffix(kInputItems.size());
        m.route = Route::kResponseInputItems;
        m.label += kInputItems;
        m.allowed = "GET";
      }
      m.id = PercentDecode(id);
      return m;
    }
  }
  m.label = "other";
  return m;
}

HttpReply JsonReply(int status, std::string body) {
  HttpReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpReply ErrorReply(const ApiError& error) {
  HttpReply r = JsonReply(error.status, error.Body());
  if (error.retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(error.retry_after_s));
  if (error.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

bool RequiresAuth(const ServerContext& ctx, Route route) {
  if (ctx.options.api_keys.empty()) return false;
  switch (route) {
    case Route::kHealth:
    case Route::kLive:
    case Route::kReady:
    case Route::kMetrics: return ctx.options.metrics_auth;
    case Route::kVersion: return false;
    default: return true;  // /v1/*, /tokenize, /detokenize (and unknown paths under them)
  }
}

bool Authorized(const ServerContext& ctx, const std::string& authorization) {
  return BearerKeyAccepted(authorization, ctx.options.api_keys);
}

HttpReply HandleSimpleRoute(const ServerContext& ctx, const RouteMatch& match, std::string_view method,
                            const std::string& body) {
  switch (match.route) {
    case Route::kModels:
      return JsonReply(200, DumpJson(ListModels(ctx.model, ctx.created)));
    case Route::kModel:
      return StatusReply(GetModel(ctx.model, match.id, ctx.created));
    case Route::kTokenize:
    case Route::kDetokenize: {
      absl::StatusOr<Json> parsed = ParseJsonBody(body);
      if (!parsed.ok()) return StatusReply(parsed.status());
      return StatusReply(match.route == Route::kTokenize ? Tokenize(*parsed, ctx.model, body)
                                                         : Detokenize(*parsed, ctx.model));
    }
    case Route::kLive:
      return JsonReply(200, R"({"status":"live"})");
    case Route::kReady: {
      const bool ready = ctx.deps.ready == nullptr || ctx.deps.ready->load();
      return ready ? JsonReply(200, R"({"status":"ready"})")
                   : JsonReply(503, R"({"status":"not ready"})");
    }
    case Route::kHealth: {
      EngineStats s = ctx.deps.engine->Stats();
      return JsonReply(200, DumpJson(Json{{"status", "ok"},
                                          {"num_requests_running", s.num_running},
                                          {"num_requests_waiting", s.num_waiting},
                                          {"kv_cache_usage_perc", s.kv_usage}}));
    }
    case Route::kMetrics: {
      HttpReply r;
      r.content_type = metrics::kContentType;
      if (ctx.deps.registry != nullptr) r.body = ctx.deps.registry->Render();
      return r;
    }
    case Route::kVersion:
      return JsonReply(200, DumpJson(Json{{"version", ctx.options.version}}));
    case Route::kStoredResponse: {
      const auto not_found = [&] {
        return ErrorReply(MakeApiError(404, absl::StrCat("Response with id '", match.id, "' not found."), "response_id"));
      };
      if (method == "DELETE") {
        if (!ctx.responses->Erase(match.id)) return not_found();
        return JsonReply(200, DumpJson(Json{{"id", match.id}, {"object", "response"}, {"deleted", true}}));
      }
      std::shared_ptr<const ResponseStore::Entry> entry = ctx.responses->Get(match.id);
      if (entry == nullptr) return not_found();
      return JsonReply(200, DumpJson(entry->response));
    }
    case Route::kResponseInputItems: {
      absl::StatusOr<nlohmann::ordered_json> page = ListInputItems(*ctx.responses, match.id, match.query);
      if (!page.ok()) return ErrorReply(ApiErrorFromStatus(page.status()));
      return JsonReply(200, DumpJson(*page));
    }
    default:
      return ErrorReply(MakeApiError(500, "route has no simple handler"));
  }
}

std::string SerializeReply(const HttpReply& reply, bool keep_alive) {
  const auto status = static_cast<boost::beast::http::status>(reply.status);
  const auto reason = boost::beast::http::obsolete_reason(status);
  std::string out = absl::StrCat("HTTP/1.1 ", reply.status, " ",
                                 absl::string_view(reason.data(), reason.size()), "\r\n");
  if (!reply.content_type.empty()) absl::StrAppend(&out, "Content-Type: ", reply.content_type, "\r\n");
  if (reply.status != 204) absl::StrAppend(&out, "Content-Length: ", reply.body.size(), "\r\n");  // 204: none
  for (const auto& [name, value] : reply.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  absl::StrAppend(&out, "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n\r\n");
  out += reply.body;
  return out;
}

std::string SseResponseHead(bool keep_alive, bool chunked,
                            const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string head = absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                                  "Cache-Control: no-cache\r\n", chunked ? "Transfer-Encoding: chunked\r\n" : "");
  for (const auto& [name, value] : headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
  absl::StrAppend(&head, "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n\r\n");
  return head;
}

std::string CorsAllowOrigin(const ServerContext& ctx, std::string_view origin) {
  if (origin.empty()) return "";
  for (const std::string& allowed : ctx.options.cors_allowed_origins) {
    if (allowed == "*") return "*";
    if (allowed == origin) return allowed;
  }
  return "";
}

std::vector<std::pair<std::string, std::string>> CorsHeaders(const std::string& allow_origin) {
  std::vector<std::pair<std::string, std::string>> h;
  if (allow_origin.empty()) return h;
  h.emplace_back("Access-Control-Allow-Origin", allow_origin);
  if (allow_origin != "*") h.emplace_back("Vary", "Origin");
  return h;
}

HttpReply CorsPreflightReply(std::string_view request_headers) {
  HttpReply r{.status = 204, .content_type = "", .body = "", .headers = {}};
  r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, DELETE, HEAD, OPTIONS");
  // Header names only (a token list): anything else in the request's list is dropped.
  std::string names;
  for (char ch : request_headers) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == ',' || ch == ' ') names += ch;
  }
  r.headers.emplace_back("Access-Control-Allow-Headers", names.empty() ? "authorization, content-type" : names);
  r.headers.emplace_back("Access-Control-Max-Age", "600");
  return r;
}

}  // namespace peng::server
