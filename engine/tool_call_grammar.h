// Tool calls in "auto" mode (server/openai_tools.h): the model writes text as it likes, but
// once it opens a call block with "<tool_call>" (Hermes's format, Qwen2.5's, and the one Peng
// shows models whose templates have no tools), the rest of the block is constrained: one call
// object of the request's tool-call schema, optional whitespace, then "</tool_call>"; after it
// the text is free again. llama.cpp calls this a lazy grammar.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "engine/json_constraint.h"
#include "engine/json_schema.h"
#include "engine/logits_constraint.h"
#include "engine/schema_grammar.h"

namespace peng {

// The rest of a block after its opening tag: a document of the schema, then the closing tag.
class ToolCallBlockGrammar {
 public:
  static constexpr std::string_view kOpen = "<tool_call>";
  static constexpr std::string_view kClose = "</tool_call>";

  explicit ToolCallBlockGrammar(const JsonSchema* schema) : call_(schema) {}

  bool Advance(uint8_t c);
  bool Feed(uint8_t c) { return FeedOrRestore(*this, std::string_view(reinterpret_cast<const char*>(&c), 1)); }
  bool FeedAll(std::string_view bytes) { return FeedOrRestore(*this, bytes); }
  // The closing tag is written (the block's constraint ends there).
  bool Complete() const { return closed_ == kClose.size(); }
  bool CanStop() const { return false; }  // no end of generation inside a block
  bool InPlainString() const { return !call_.Complete() && call_.InPlainString(); }
  const SchemaGrammar* document() const { return &call_; }  // the call (see SchemaGrammar)

  friend bool operator==(const ToolCallBlockGrammar& a, const ToolCallBlockGrammar& b) {
    return a.closed_ == b.closed_ && a.call_ == b.call_;
  }

 private:
  SchemaGrammar call_;
  uint8_t closed_ = 0;  // bytes of kClose written
};

// The constraint: unconstrained until the output holds kOpen, then a block, then free again.
class ToolCallTrigger : public LogitsConstraint {
 public:
  ToolCallTrigger(std::shared_ptr<const JsonVocabulary> vocab, std::shared_ptr<const JsonSchema> schema,
                  std::shared_ptr<SharedMasks<ToolCallBlockGrammar>> shared = nullptr);

  void Mask(std::span<float> logits) override;
  void Accept(int32_t id) override;
  bool InBlock() const { return block_.has_value(); }

 private:
  std::shared_ptr<const JsonVocabulary> vocab_;
  std::shared_ptr<const JsonSchema> schema_;
  std::shared_ptr<SharedMasks<ToolCallBlockGrammar>> shared_;
  std::optional<GrammarConstraint<ToolCallBlockGrammar>> block_;
  std::string tail_;  // the output's last bytes, while outside a block (for kOpen)
};

}  // namespace peng
