// HttpSession: one keep-alive HTTP/1.1 connection. All of its handlers run on the
// connection's strand, so its state needs no lock. It reads a request, answers simple routes
// at once and, for a generation route, submits to the EngineLoop and forwards the TokenEvents
// (posted to the strand by SessionStream) as a JSON body or SSE chunks. While a generation is
// pending, a read stays outstanding on the socket: EOF or a failed write means the client is
// gone, and every still-running request of that generation is aborted exactly once.
// Owned by the pending asynchronous operations (shared_ptr); the engine holds it weakly.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/core/tcp_stream.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/string_body.hpp"
#include "server/http_context.h"
#include "server/http_routes.h"
#include "server/openai_response.h"

namespace peng::server {

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket socket, std::shared_ptr<ServerContext> ctx);
  ~HttpSession();

  void Start();
  // Called on the strand (posted by SessionStream) with the events of generation `seq`.
  void OnEngineEvent(uint64_t seq, int prompt_index, TokenEvent event);
  boost::beast::tcp_stream::executor_type executor() { return stream_.get_executor(); }

 private:
  using Request = boost::beast::http::request<boost::beast::http::string_body>;

  struct Generation {
    uint64_t seq = 0;
    bool stream = false;
    CompletionJob job;
    std::unique_ptr<Responder> responder;  // refers to job
    std::vector<std::string> request_ids;            // per prompt, submitted
    std::vector<int> choices_left;                   // per prompt
    bool ended = false;                              // the response is complete
  };

  // Reading.
  void DoRead();
  void OnHeader(boost::beast::error_code ec);
  void ReadBody();
  void OnRead(boost::beast::error_code ec);
  void Dispatch();

  // Generation.
  void StartGeneration(Route route, const std::string& body);
  void EndGenerationWithError(const ApiError& error);
  void AbortUnfinished();  // Abort for every submitted request with choices left; once each
  void StartMonitor();
  void OnMonitor(boost::beast::error_code ec, size_t n);

  // Writing: bytes are queued and written in order, one async_write at a time.
  void Reply(HttpReply reply);
  void Write(std::string bytes);
  void DoWrite();
  void OnWrite(boost::beast::error_code ec);
  // Records the response (status, latency), then queues its last bytes.
  void FinishResponse(int status, std::string last_bytes);
  void AfterResponse();             // ... and written: next request or close
  void ConnectionLost();
  void Close();
  void Linger();  // discard input until EOF or timeout, then close
  void SetResponseOpen(bool open);  // counts this session in ServerContext::open_responses
  void LogRequest(int status, double seconds) const;  // one access-log line per response
  // A piece of a streamed body, and its end: chunked, or raw for an HTTP/1.0 client.
  std::string BodyChunk(std::string_view data) const;
  std::string LastChunk() const;

  boost::beast::tcp_stream stream_;
  std::shared_ptr<ServerContext> ctx_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;

  // The current request.
  RouteMatch match_;
  bool keep_alive_ = true;
  bool http10_ = false;  // an HTTP/1.0 request: no chunked encoding
  bool head_ = false;    // a HEAD request: headers only
  std::string cors_origin_;  // Access-Control-Allow-Origin for this request ("" = none)
  std::chrono::steady_clock::time_point start_;
  int status_ = 0;               // for metrics, set when the response is complete
  bool response_done_ = false;   // last bytes queued
  bool recorded_ = false;

  std::unique_ptr<Generation> gen_;
  uint64_t next_seq_ = 1;
  bool monitor_pending_ = false;
  bool resume_after_monitor_ = false;  // the monitor was cancelled to read the next request

  std::string pending_;   // queued bytes
  std::string inflight_;  // bytes being written
  bool writing_ = false;
  bool closed_ = false;
  bool response_open_ = false;  // a generation's response is not fully written yet
  std::array<char, 1024> linger_buf_;
};

}  // namespace peng::server
