// CompletionResponder: turns the TokenEvents of one CompletionJob into OpenAI response JSON,
// either as stream chunks (chat.completion.chunk / text_completion) or, collected, as one
// chat.completion / text_completion body with usage. Knows the chat and legacy completions
// logprobs formats. One per HTTP request, used on that connection's strand only (not
// thread-safe). Invariant: a choice is finished after its event with finish_reason != kNone;
// done() when every choice of every prompt is finished.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "scheduler/request.h"
#include "server/openai_error.h"
#include "server/openai_request.h"

namespace peng::server {


// What an HTTP generation route answers with, fed the engine's events: SSE frames ready to
// write (streaming), or one JSON body. Used on one connection's strand (not thread-safe).
class Responder {
 public:
  virtual ~Responder() = default;
  virtual bool done() const = 0;
  // Every choice was aborted before it produced a token (the server drained before running
  // the request): nothing to answer but a retryable error.
  virtual bool NothingServed() const = 0;

  // Streaming: the frames to send first, for one event, after done(), and for an error after
  // the first byte (the status line is out already).
  virtual std::vector<std::string> StreamStart() = 0;
  virtual std::vector<std::string> StreamEvent(int prompt_index, const TokenEvent& event) = 0;
  virtual std::vector<std::string> StreamEnd() = 0;
  virtual std::vector<std::string> StreamError(const ApiError& error) = 0;

  // Non-streaming: record an event; after done(), Body() is the whole response.
  virtual void Collect(int prompt_index, const TokenEvent& event) = 0;
  virtual std::string Body() const = 0;
};

class CompletionResponder : public Responder {
 public:
  CompletionResponder(const CompletionJob& job, const Tokenizer& tokenizer, std::string id,
                      int64_t created);

  const std::string& id() const { return id_; }
  int num_choices() const { return static_cast<int>(choices_.size()); }
  bool done() const override { return finished_ == static_cast<int>(choices_.size()); }
  bool NothingServed() const override;

  // Start: chat sends a {role: "assistant"} delta per choice; completions with echo send the
  // prompt text per choice. An event: its chunk (none when it carries no text and does not
  // finish a choice). End: the usage chunk (choices: []) when include_usage, then [DONE].
  // Error: {"error": ...} then [DONE].
  std::vector<std::string> StreamStart() override { return Framed(StartChunks()); }
  std::vector<std::string> StreamEvent(int prompt_index, const TokenEvent& event) override {
    return Framed(EventChunks(prompt_index, event));
  }
  std::vector<std::string> StreamEnd() override;
  std::vector<std::string> StreamError(const ApiError& error) override;

  void Collect(int prompt_index, const TokenEvent& event) override;
  std::string Body() const override;

  // The chunks' JSON texts (SSE data payloads, without framing).
  std::vector<std::string> StartChunks();
  std::vector<std::string> EventChunks(int prompt_index, const TokenEvent& event);

  nlohmann::ordered_json Usage() const;
  // A collected choice's text and finish (Collect), for responders built on this one.
  const std::string& text(int choice) const { return choices_[choice].text; }
  FinishReason finish(int choice) const { return choices_[choice].finish; }

 private:
  // OpenAI's text_offset indexes the returned text in characters, not bytes: a token's offset
  // is the number of characters complete before its bytes (a token that starts inside a
  // multi-byte character points at that character).
  class CharOffset {
   public:
    int64_t chars() const { return chars_; }
    void Add(std::string_view bytes);

   private:
    int64_t chars_ = 0;
    int missing_ = 0;  // continuation bytes the current character still needs
  };

  struct Choice {
    std::string text;
    FinishReason finish = FinishReason::kNone;
    int64_t completion_tokens = 0;
    nlohmann::ordered_json logprobs;      // accumulated (non-streaming)
    CharOffset text_offset;       // completions logprobs: offset of the next token
    bool prompt_logprobs_done = false;  // echo + logprobs: the prompt's entries are out
    bool echo_pending = false;    // streaming echo + logprobs: the prompt text goes out with them
    std::optional<ToolCallStream> tool_stream;  // streaming chat with tools: text held back from the calls
  };
  // finish_reason as sent: "tool_calls" for a reply that stopped after its calls.
  nlohmann::ordered_json FinishReasonOf(const Choice& c, bool has_calls) const;

  Choice& ChoiceOf(int prompt_index, const TokenEvent& event, int* index);
  void NoteUsage(int prompt_index, const TokenEvent& event, Choice& c);
  // Logprobs of `event` in this endpoint's format (null when not requested); advances the
  // completions text offset. With echo, a choice's first logprobs start with its prompt's
  // tokens: the first with null logprob and alternatives (nothing predicts it), the others
  // from event.prompt_logprobs, at text offsets from 0.
  nlohmann::ordered_json EventLogprobs(int prompt_index, const TokenEvent& event, Choice& c) const;
  void AppendLogprobs(const nlohmann::ordered_json& lp, Choice& c) const;
  // A completions `top_logprobs` entry: {token piece: logprob, alternative: logprob, ...}.
  nlohmann::ordered_json LegacyTop(const std::string& piece, const TokenLogprob& lp) const;
  nlohmann::ordered_json ChunkBase() const;
  static std::vector<std::string> Framed(std::vector<std::string> payloads);

  const CompletionJob& job_;
  const Tokenizer& tokenizer_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;             // prompt_index * n + choice
  std::vector<int64_t> prompt_tokens_;      // per prompt
  std::vector<int64_t> cached_tokens_;      // per prompt: of its first choice, from the prefix cache
  int finished_ = 0;
};

}  // namespace peng::server
