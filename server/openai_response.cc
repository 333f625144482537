#include "server/openai_response.h"

#include <algorithm>

#include <utility>

#include "server/openai_error.h"
#include "server/sse.h"

namespace peng::server {
namespace {

using Json = nlohmann::ordered_json;  // keys in insertion order: top_logprobs go out ranked

Json ToolCallsJson(const std::vector<ToolCall>& calls, bool stream) {
  Json out = Json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    Json call;
    if (stream) call["index"] = i;
    call["id"] = calls[i].id;
    call["type"] = "function";
    call["function"] = {{"name", calls[i].name}, {"arguments", calls[i].arguments}};
    out.push_back(std::move(call));
  }
  return out;
}

Json Bytes(const std::string& piece) {
  Json b = Json::array();
  for (unsigned char c : piece) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

void CompletionResponder::CharOffset::Add(std::string_view bytes) {
  for (const unsigned char b : bytes) {
    if ((b & 0xC0) == 0x80) {  // a continuation byte
      if (missing_ > 0 && --missing_ == 0) ++chars_;
      continue;
    }
    if (missing_ > 0) ++chars_;  // a character cut short: one U+FFFD in the text
    missing_ = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0;
    if (missing_ == 0) ++chars_;
  }
}

CompletionResponder::CompletionResponder(const CompletionJob& job, const Tokenizer& tokenizer,
                                         std::string id, int64_t created)
    : job_(job), tokenizer_(tokenizer), id_(std::move(id)), created_(created) {
  choices_.resize(job.prompts.size() * job.n);
  prompt_tokens_.resize(job.prompts.size());
  cached_tokens_.resize(job.prompts.size());
  for (size_t p = 0; p < job.prompts.size(); ++p) {
    prompt_tokens_[p] = static_cast<int64_t>(job.prompts[p].size());
    for (int j = 0; j < job.n; ++j) {
      Choice& c = choices_[p * job.n + j];
      if (job.tools != nullptr && job.stream) c.tool_stream.emplace(job.tools.get());
      if (job.echo) {
        c.text = job.prompt_texts[p];
        c.text_offset.Add(c.text);
      }
      if (job.want_logprobs) {
        c.logprobs = job.kind == ApiKind::kChat
                         ? Json{{"content", Json::array()}}
                         : Json{{"tokens", Json::array()},
                                {"token_logprobs", Json::array()},
                                {"top_logprobs", Json::array()},
                                {"text_offset", Json::array()}};
      }
    }
  }
}

Json CompletionResponder::ChunkBase() const {
  Json chunk{{"id", id_},
             {"object", job_.kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
             {"created", created_},
             {"model", job_.model}};
  // OpenAI: with include_usage every chunk carries "usage", null until the last one.
  if (job_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

CompletionResponder::Choice& CompletionResponder::ChoiceOf(int prompt_index,
                                                           const TokenEvent& event, int* index) {
  int choice = event.choice;
  if (choice < 0 || choice >= job_.n) choice = 0;  // a malformed event cannot index out
  if (prompt_index < 0 || prompt_index >= static_cast<int>(prompt_tokens_.size())) prompt_index = 0;
  *index = prompt_index * job_.n + choice;
  return choices_[*index];
}

void CompletionResponder::NoteUsage(int prompt_index, const TokenEvent& event, Choice& c) {
  if (event.prompt_tokens > 0 && prompt_index >= 0 &&
      prompt_index < static_cast<int>(prompt_tokens_.size())) {
    prompt_tokens_[prompt_index] = event.prompt_tokens;
  }
  if (event.choice == 0 && prompt_index >= 0 && prompt_index < static_cast<int>(cached_tokens_.size())) {
    cached_tokens_[prompt_index] = std::max(cached_tokens_[prompt_index], event.cached_prompt_tokens);
  }
  if (event.completion_tokens > 0) {
    c.completion_tokens = event.completion_tokens;
  } else {
    c.completion_tokens += static_cast<int64_t>(event.token_ids.size());
  }
  if (c.finish == FinishReason::kNone && event.finish_reason != FinishReason::kNone) {
    c.finish = event.finish_reason;
    ++finished_;
  }
}

Json CompletionResponder::LegacyTop(const std::string& piece, const TokenLogprob& lp) const {
  // Up to top_logprobs alternatives, most likely first (as OpenAI's: a client may take the
  // first key as the top token), then the token itself when they do not hold it (vLLM always
  // includes it).
  Json top = Json::object();
  for (size_t i = 0; i < lp.top.size() && static_cast<int>(i) < job_.top_logprobs; ++i) {
    const std::string alternative = tokenizer_.TokenPiece(lp.top[i].first);
    if (!top.contains(alternative)) top[alternative] = lp.top[i].second;
  }
  if (!top.contains(piece)) top[piece] = lp.logprob;
  return top;
}

Json CompletionResponder::EventLogprobs(int prompt_index, const TokenEvent& event, Choice& c) const {
  if (!job_.want_logprobs) return nullptr;
  const int k = job_.top_logprobs;
  if (job_.kind == ApiKind::kChat) {
    Json content = Json::array();
    for (const TokenLogprob& lp : event.logprobs) {
      const std::string piece = tokenizer_.TokenPiece(lp.id);
      Json top = Json::array();
      for (size_t i = 0; i < lp.top.size() && static_cast<int>(i) < k; ++i) {
        const std::string alt = tokenizer_.TokenPiece(lp.top[i].first);
        top.push_back({{"token", alt}, {"logprob", lp.top[i].second}, {"bytes", Bytes(alt)}});
      }
      content.push_back({{"token", piece},
                         {"logprob", lp.logprob},
                         {"bytes", Bytes(piece)},
                         {"top_logprobs", std::move(top)}});
    }
    return Json{{"content", std::move(content)}};
  }
  Json out{{"tokens", Json::array()},
           {"token_logprobs", Json::array()},
           {"top_logprobs", Json::array()},
           {"text_offset", Json::array()}};
  if (job_.prompt_logprobs >= 0 && !c.prompt_logprobs_done) {
    c.prompt_logprobs_done = true;
    const std::vector<int32_t>& prompt = job_.prompts[prompt_index];
    CharOffset offset;
    for (size_t i = 0; i < prompt.size(); ++i) {
      const std::string piece = tokenizer_.TokenPiece(prompt[i]);
      out["tokens"].push_back(piece);
      out["text_offset"].push_back(offset.chars());
      offset.Add(piece);
      // Entry i - 1 predicts token i; missing ones (a request aborted before its prefill
      // finished) stay null.
      if (i == 0 || i - 1 >= event.prompt_logprobs.size()) {
        out["token_logprobs"].push_back(nullptr);
        out["top_logprobs"].push_back(nullptr);
        continue;
      }
      const TokenLogprob& lp = event.prompt_logprobs[i - 1];
      out["token_logprobs"].push_back(lp.logprob);
      out["top_logprobs"].push_back(LegacyTop(piece, lp));
    }
  }
  for (const TokenLogprob& lp : event.logprobs) {
    const std::string piece = tokenizer_.TokenPiece(lp.id);
    out["tokens"].push_back(piece);
    out["token_logprobs"].push_back(lp.logprob);
    out["top_logprobs"].push_back(LegacyTop(piece, lp));
    out["text_offset"].push_back(c.text_offset.chars());
    c.text_offset.Add(piece);
  }
  return out;
}

void CompletionResponder::AppendLogprobs(const Json& lp, Choice& c) const {
  if (lp.is_null()) return;
  for (const auto& [key, arr] : lp.items()) {
    for (const Json& e : arr) c.logprobs[key].push_back(e);
  }
}

std::vector<std::string> CompletionResponder::Framed(std::vector<std::string> payloads) {
  for (std::string& p : payloads) p = SseEvent(p);
  return payloads;
}

std::vector<std::string> CompletionResponder::StartChunks() {
  std::vector<std::string> out;
  for (int i = 0; i < num_choices(); ++i) {
    Json chunk = ChunkBase();
    if (job_.kind == ApiKind::kChat) {
      chunk["choices"] = Json::array({{{"index", i},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}});
    } else if (job_.echo && job_.want_logprobs) {
      // The prompt's text waits for its logprobs (the first event), so that a chunk's tokens
      // always spell its text.
      choices_[i].echo_pending = true;
      continue;
    } else if (job_.echo) {
      chunk["choices"] = Json::array({{{"index", i},
                                       {"text", choices_[i].text},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}});
    } else {
      continue;
    }
    out.push_back(DumpJson(chunk));
  }
  return out;
}

std::vector<std::string> CompletionResponder::EventChunks(int prompt_index, const TokenEvent& event) {
  int index = 0;
  Choice& c = ChoiceOf(prompt_index, event, &index);
  if (c.finish != FinishReason::kNone) return {};  // nothing after a choice's end
  NoteUsage(prompt_index, event, c);
  Json lp = EventLogprobs(index / job_.n, event, c);
  const bool finished = c.finish != FinishReason::kNone;
  const bool has_logprobs = !lp.is_null() && !lp[job_.kind == ApiKind::kChat ? "content" : "tokens"].empty();
  std::string text = event.text;
  std::vector<ToolCall> calls;
  if (c.tool_stream) {  // text that may be calls waits; at the end, the calls
    text = c.tool_stream->Feed(text);
    if (finished) {
      ToolReply reply = c.tool_stream->Finish();
      if (reply.HasContent()) text += reply.content;  // as in the collected body
      calls = std::move(reply.calls);
    }
  }
  if (text.empty() && !finished && !has_logprobs) return {};
  Json choice{{"index", index}, {"logprobs", std::move(lp)}};
  if (job_.kind == ApiKind::kChat) {
    choice["delta"] = text.empty() ? Json::object() : Json{{"content", text}};
    if (!calls.empty()) {
      // The calls in a chunk of their own, then the finish (as OpenAI streams them).
      choice["delta"]["tool_calls"] = ToolCallsJson(calls, /*stream=*/true);
      choice["finish_reason"] = nullptr;
      Json chunk = ChunkBase();
      chunk["choices"] = Json::array({std::move(choice)});
      Json end = ChunkBase();
      end["choices"] = Json::array({{{"index", index},
                                     {"delta", Json::object()},
                                     {"logprobs", nullptr},
                                     {"finish_reason", FinishReasonOf(c, true)}}});
      return {DumpJson(chunk), DumpJson(end)};
    }
  } else {
    choice["text"] = c.echo_pending ? job_.prompt_texts[index / job_.n] + event.text : event.text;
    c.echo_pending = false;
  }
  choice["finish_reason"] = finished ? FinishReasonOf(c, false) : Json(nullptr);
  Json chunk = ChunkBase();
  chunk["choices"] = Json::array({std::move(choice)});
  return {DumpJson(chunk)};
}

std::vector<std::string> CompletionResponder::StreamEnd() {
  std::vector<std::string> out;
  if (job_.include_usage) {
    Json chunk = ChunkBase();
    chunk["choices"] = Json::array();
    chunk["usage"] = Usage();
    out.push_back(SseEvent(DumpJson(chunk)));
  }
  out.emplace_back(kSseDone);
  return out;
}

std::vector<std::string> CompletionResponder::StreamError(const ApiError& error) {
  return {SseEvent(error.Body()), std::string(kSseDone)};
}

void CompletionResponder::Collect(int prompt_index, const TokenEvent& event) {
  int index = 0;
  Choice& c = ChoiceOf(prompt_index, event, &index);
  if (c.finish != FinishReason::kNone) return;
  NoteUsage(prompt_index, event, c);
  AppendLogprobs(EventLogprobs(index / job_.n, event, c), c);
  c.text += event.text;
}

Json CompletionResponder::Usage() const {
  int64_t prompt = 0, completion = 0;
  for (int64_t p : prompt_tokens_) prompt += p;
  for (const Choice& c : choices_) completion += c.completion_tokens;
  int64_t cached = 0;
  for (int64_t t : cached_tokens_) cached += t;
  return Json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion},
              {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

Json CompletionResponder::FinishReasonOf(const Choice& c, bool has_calls) const {
  if (c.finish == FinishReason::kNone) return nullptr;
  if (has_calls && c.finish == FinishReason::kStop) return "tool_calls";
  return FinishReasonName(c.finish);
}

bool CompletionResponder::NothingServed() const {
  for (const Choice& c : choices_) {
    if (c.finish != FinishReason::kAbort || c.completion_tokens > 0) return false;
  }
  return !choices_.empty();
}

std::string CompletionResponder::Body() const {
  Json choices = Json::array();
  for (int i = 0; i < num_choices(); ++i) {
    const Choice& c = choices_[i];
    Json choice{{"index", i}};
    bool has_calls = false;
    if (job_.kind == ApiKind::kChat && job_.tools != nullptr) {
      ToolReply reply = ExtractToolCalls(c.text, *job_.tools);
      has_calls = !reply.calls.empty();
      choice["message"] = {{"role", "assistant"}, {"content", reply.HasContent() ? Json(reply.content) : Json(nullptr)}};
      if (has_calls) choice["message"]["tool_calls"] = ToolCallsJson(reply.calls, /*stream=*/false);
    } else if (job_.kind == ApiKind::kChat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = job_.want_logprobs ? c.logprobs : Json(nullptr);
    choice["finish_reason"] = FinishReasonOf(c, has_calls);
    choices.push_back(std::move(choice));
  }
  Json body{{"id", id_},
            {"object", job_.kind == ApiKind::kChat ? "chat.completion" : "text_completion"},
            {"created", created_},
            {"model", job_.model},
            {"choices", std::move(choices)},
            {"usage", Usage()}};
  return DumpJson(body);
}

}  // namespace peng::server
