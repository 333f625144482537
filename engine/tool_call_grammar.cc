#include "engine/tool_call_grammar.h"

#include <utility>

namespace peng {

bool ToolCallBlockGrammar::Advance(uint8_t c) {
  if (!call_.Complete()) return call_.Advance(c);
  // After the call: whitespace (the call grammar bounds its run) until the tag starts.
  if (closed_ == 0 && (c == ' ' || c == '\n' || c == '\t' || c == '\r')) return call_.Advance(c);
  if (closed_ == kClose.size() || static_cast<char>(c) != kClose[closed_]) return false;
  ++closed_;
  return true;
}

ToolCallTrigger::ToolCallTrigger(std::shared_ptr<const JsonVocabulary> vocab, std::shared_ptr<const JsonSchema> schema,
                                 std::shared_ptr<SharedMasks<ToolCallBlockGrammar>> shared)
    : vocab_(std::move(vocab)), schema_(std::move(schema)), shared_(std::move(shared)) {}

void ToolCallTrigger::Mask(std::span<float> logits) {
  if (block_) block_->Mask(logits);
}

void ToolCallTrigger::Accept(int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= vocab_->kinds.size()) return;
  if (block_) {
    block_->Accept(id);
    if (block_->grammar().Complete()) block_.reset();
    return;
  }
  if (vocab_->kinds[id] != JsonVocabulary::Kind::kText) return;
  tail_ += vocab_->pieces[id];
  const size_t at = tail_.find(ToolCallBlockGrammar::kOpen);
  if (at == std::string::npos) {
    // Keep what a tag could still start in.
    if (tail_.size() >= ToolCallBlockGrammar::kOpen.size()) {
      tail_.erase(0, tail_.size() - (ToolCallBlockGrammar::kOpen.size() - 1));
    }
    return;
  }
  // The block starts; bytes of this token after the tag are its first (a token that runs on
  // into something the block cannot hold leaves the output unconstrained).
  ToolCallBlockGrammar block(schema_.get());
  const std::string_view rest = std::string_view(tail_).substr(at + ToolCallBlockGrammar::kOpen.size());
  if (block.FeedAll(rest) && !block.Complete()) block_.emplace(vocab_, block, shared_, schema_);
  tail_.clear();
}

}  // namespace peng
