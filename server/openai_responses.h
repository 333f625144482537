// OpenAI's Responses API (POST /v1/responses), on top of chat completions: a request is
// translated into a chat completions body (input items to messages, instructions to a system
// message, text.format to response_format, function tools to tools) and parsed and run as one;
// ResponsesResponder writes the result as a `response` object, or streams it as the API's typed
// events (response.created ... response.output_text.delta ... response.completed).
//
// Supported: input as text or a list of items (messages with text parts, function_call and
// function_call_output items), instructions, max_output_tokens, temperature, top_p, user,
// metadata, text.format (text, json_object, json_schema), function tools with tool_choice and
// parallel_tool_calls, stream. Responses are stored (server/response_store.h) unless `store` is
// false: previous_response_id continues the conversation a stored response ends (its input and
// output, not its instructions), GET / DELETE /v1/responses/{id} read and remove one, and GET
// /v1/responses/{id}/input_items lists its input (the request's own items, with ids).
// background is a 400. Built-in tools (web search, files, ...) and non-text input parts are
// 400s naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/openai_response.h"
#include "server/response_store.h"

namespace peng::server {

struct ResponsesChat {
  nlohmann::ordered_json chat;          // the chat completions body
  nlohmann::ordered_json conversation;  // its messages but the instructions (what is stored)
  bool store = true;                    // the request's `store`
};
// The chat completions body for a Responses body (`request`, in the client's key order), with a
// previous response's conversation (from `store`; null: none is kept) before the input.
// Fields it does not know go to `ignored` (the caller logs them).
absl::StatusOr<ResponsesChat> ResponsesToChat(const nlohmann::ordered_json& request, const ResponseStore* store,
                                              std::vector<std::string>* ignored);
// A chat parser's error with its param named as the Responses API names it (messages -> input).
absl::Status AsResponsesError(absl::Status status);

// GET /v1/responses/{id}/input_items: a page of a stored response's input items. `query`: the
// decoded query parameters: limit 1-100 (default 20), order asc or desc (default desc), after
// (an item id); others are ignored. 404 when the response is not stored; 400 naming a bad
// parameter.
absl::StatusOr<nlohmann::ordered_json> ListInputItems(
    const ResponseStore& store, const std::string& id, const std::vector<std::pair<std::string, std::string>>& query);

class ResponsesResponder : public Responder {
 public:
  // `request`: the Responses body (its settings are echoed in the response object); `job`: the
  // chat job it became (one prompt, one choice). `store` (null: not stored) keeps the finished
  // response with `conversation` and its output.
  ResponsesResponder(const CompletionJob& job, nlohmann::ordered_json request, const Tokenizer& tokenizer,
                     std::string id, int64_t created, ResponseStore* store = nullptr,
                     nlohmann::ordered_json conversation = nullptr);

  bool done() const override { return inner_.done(); }
  bool NothingServed() const override { return inner_.NothingServed(); }
  std::vector<std::string> StreamStart() override;
  std::vector<std::string> StreamEvent(int prompt_index, const TokenEvent& event) override;
  std::vector<std::string> StreamEnd() override { return {}; }  // response.completed ended it
  std::vector<std::string> StreamError(const ApiError& error) override;
  void Collect(int prompt_index, const TokenEvent& event) override { inner_.Collect(prompt_index, event); }
  std::string Body() const override;

 private:
  // The response object; `output` and `status` as given.
  nlohmann::ordered_json Response(const char* status, nlohmann::ordered_json output) const;
  // The output items of a finished reply (a message with its text, then its calls).
  nlohmann::ordered_json OutputItems(const ToolReply& reply) const;
  nlohmann::ordered_json MessageItem(const std::string& text, const char* status) const;
  nlohmann::ordered_json CallItem(const ToolCall& call, size_t k, const char* status) const;
  const char* FinalStatus() const;
  std::string Event(nlohmann::ordered_json event);
  // Keeps the finished response (with `store_`).
  void Save(const nlohmann::ordered_json& response, const ToolReply& reply) const;

  const CompletionJob& job_;
  nlohmann::ordered_json request_;
  CompletionResponder inner_;  // collects the text, the finish and the usage
  std::string id_;
  int64_t created_;
  ResponseStore* store_;
  nlohmann::ordered_json conversation_;
  std::string message_id_;
  int64_t sequence_ = 0;
  // Streaming.
  std::optional<ToolCallStream> calls_;
  std::string streamed_;      // the message text sent so far
  bool message_open_ = false;
};

}  // namespace peng::server
