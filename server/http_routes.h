// The HTTP route table and the handlers that answer at once (everything but generation):
// matching (404/405), Bearer-key authentication (401), /v1/models, /tokenize, /detokenize,
// /health, /live, /ready, /metrics, /version. HttpReply is a complete response before
// serialisation. Functions of the immutable ServerContext; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/http_context.h"
#include "server/openai_error.h"

namespace peng::server {

enum class Route {
  kNone, kChatCompletions, kCompletions, kResponses, kModels, kModel, kTokenize, kDetokenize, kHealth,
  kLive, kReady, kMetrics, kVersion, kStoredResponse, kResponseInputItems,
};

struct RouteMatch {
  Route route = Route::kNone;
  std::string label;          // bounded-cardinality metrics label ("/v1/models/{id}", "other")
  std::string allowed;        // "GET", "POST" or "GET, DELETE"; empty when the path is unknown
  std::string id;             // kModel, kStoredResponse, kResponseInputItems: the percent-decoded id
  // The query string's parameters, decoded ('+' is a space), in order.
  std::vector<std::pair<std::string, std::string>> query;
};

// Matches the path (query string ignored). A known path with another method still sets
// `route` and `allowed`; the caller answers 405.
RouteMatch MatchRoute(const std::string& target);

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

HttpReply JsonReply(int status, std::string body);
HttpReply ErrorReply(const ApiError& error);

// Whether `route` needs a key, and whether `authorization` (the header value) carries one of
// the configured keys. OK when no keys are configured.
bool RequiresAuth(const ServerContext& ctx, Route route);
bool Authorized(const ServerContext& ctx, const std::string& authorization);

// CORS: the Access-Control-Allow-Origin value for a request from `origin` ("*" when every
// origin is allowed, the origin itself when it is listed), or "" (no CORS headers).
std::string CorsAllowOrigin(const ServerContext& ctx, std::string_view origin);
// The headers of a CORS response for `allow_origin` (Vary: Origin when it is not "*").
std::vector<std::pair<std::string, std::string>> CorsHeaders(const std::string& allow_origin);
// The answer to a CORS preflight (OPTIONS with Access-Control-Request-Method): 204 allowing the
// API's methods and the requested headers, cached by the browser for 10 minutes (the session
// adds CorsHeaders to it, as to every reply).
HttpReply CorsPreflightReply(std::string_view request_headers);

// Answers every route except the generation routes. `method`: the request's (GET for HEAD).
HttpReply HandleSimpleRoute(const ServerContext& ctx, const RouteMatch& match, std::string_view method,
                            const std::string& body);

// HTTP/1.1 response bytes: status line, headers (Content-Length, Connection), body.
std::string SerializeReply(const HttpReply& reply, bool keep_alive);
// The response head of an SSE stream: chunked transfer encoding, or none (the body ends when
// the connection closes) for an HTTP/1.0 client.
std::string SseResponseHead(bool keep_alive, bool chunked = true,
                            const std::vector<std::pair<std::string, std::string>>& headers = {});

}  // namespace peng::server
