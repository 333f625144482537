// Test helpers for the HTTP frontend: a tiny byte-level tokenizer with ChatML control tokens
// and a ChatML template, and a blocking Beast client (one request per call, or a kept-alive
// connection). Tests only.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "engine/tokenizer.h"
#include "engine/tokenizer_unicode.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peng::server::testing {

inline constexpr char kChatMlTemplate[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Ids 0..255: the bytes; 256 <|im_start|>, 257 <|im_end|> (eos), 258 <s> (bos, added).
inline std::unique_ptr<Tokenizer> MakeTestTokenizer(const std::string& chat_template =
                                                        kChatMlTemplate) {
  TokenizerSpec spec;
  spec.source = "http-test";
  for (int b = 0; b < 256; ++b) {
    spec.tokens.emplace_back(ByteToUnicode(static_cast<uint8_t>(b)));
    spec.kinds.push_back(TokenKind::kNormal);
  }
  for (const char* t : {"<|im_start|>", "<|im_end|>", "<s>"}) {
    spec.tokens.emplace_back(t);
    spec.kinds.push_back(TokenKind::kControl);
  }
  PreTokenizerStep step;
  step.kind = PreTokenizerStep::Kind::kByteLevel;
  spec.pre_tokenizer.push_back(step);
  spec.eos_id = 257;
  spec.bos_id = 258;
  spec.add_bos = true;
  spec.chat_template = chat_template;
  auto tok = Tokenizer::Create(std::move(spec));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

struct ClientResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  nlohmann::json Json() const { return nlohmann::json::parse(body, nullptr, false); }
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A blocking connection; Send() may be called repeatedly (keep-alive).
class Client {
 public:
  explicit Client(int port) : socket_(ioc_) {
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)});
  }
  ClientResponse Send(const std::string& method, const std::string& target,
                      const std::string& body = "",
                      const std::map<std::string, std::string>& headers = {}) {
    WriteRequest(method, target, body, headers);
    return ReadResponse();
  }
  void WriteRequest(const std::string& method, const std::string& target,
                    const std::string& body,
                    const std::map<std::string, std::string>& headers = {}) {
    namespace http = boost::beast::http;
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    http::write(socket_, req);
  }
  ClientResponse ReadResponse() {
    namespace http = boost::beast::http;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    boost::beast::error_code ec;
    http::read(socket_, buffer_, parser, ec);
    ClientResponse r;
    if (ec) {
      r.status = -1;
      r.body = ec.message();
      return r;
    }
    const auto& res = parser.get();
    r.status = res.result_int();
    r.body = res.body();
    for (const auto& f : res) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string(f.value());
    }
    return r;
  }
  // Reads raw bytes until `needle` has been seen (or the connection ends).
  std::string ReadUntil(const std::string& needle) {
    std::string got;
    char buf[1024];
    boost::beast::error_code ec;
    while (got.find(needle) == std::string::npos) {
      size_t n = socket_.read_some(boost::asio::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
    }
    return got;
  }
  void Close() {
    boost::beast::error_code ec;
    socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }
  boost::asio::ip::tcp::socket& socket() { return socket_; }

 private:
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

// The data payloads of an SSE body, in order ("[DONE]" included).
inline std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string frame = body.substr(pos, end - pos);
    if (frame.rfind("data: ", 0) == 0) out.push_back(frame.substr(6));
    pos = end + 2;
  }
  return out;
}

}  // namespace peng::server::testing
