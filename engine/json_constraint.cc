#include "engine/json_constraint.h"

#include <algorithm>
#include <limits>

#include "base/check.h"
#include "engine/tokenizer.h"
#include "engine/tool_call_grammar.h"

namespace peng {

std::shared_ptr<const JsonVocabulary> JsonVocabulary::From(const Tokenizer& tokenizer) {
  auto vocab = std::make_shared<JsonVocabulary>();
  const int32_t n = tokenizer.vocab_size();
  vocab->pieces.resize(n);
  vocab->kinds.resize(n, Kind::kOther);
  for (int32_t id = 0; id < n; ++id) {
    if (tokenizer.IsEndOfGeneration(id)) {
      vocab->kinds[id] = Kind::kEndOfGeneration;
    } else if (!tokenizer.IsSpecial(id)) {
      vocab->pieces[id] = tokenizer.TokenPiece(id);
      if (!vocab->pieces[id].empty()) vocab->kinds[id] = Kind::kText;
    }
  }
  vocab->Index();
  return vocab;
}

void JsonVocabulary::Index() {
  by_first_byte.assign(256, {});
  plain_prefix.assign(pieces.size(), 0);
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (kinds[id] != Kind::kText) continue;
    const std::string& p = pieces[id];
    by_first_byte[static_cast<uint8_t>(p[0])].push_back(static_cast<int32_t>(id));
    plain_prefix[id] = static_cast<uint32_t>(JsonGrammar::PlainStringPrefix(p));
  }
}

namespace {

// The tokens allowed after `state`: a bit per token id (see GrammarConstraint::Mask).
template <class G>
std::vector<uint64_t> ComputeMask(const JsonVocabulary& vocab, const G& state) {
  const size_t n = vocab.kinds.size();
  std::vector<uint64_t> allowed((n + 63) / 64, 0);
  const auto allow = [&](size_t id) { allowed[id >> 6] |= uint64_t{1} << (id & 63); };
  bool any_end = false;
  if (state.CanStop()) {
    for (size_t id = 0; id < n; ++id) {
      if (vocab.kinds[id] == JsonVocabulary::Kind::kEndOfGeneration) {
        allow(id);
        any_end = true;
      }
    }
  }
  // Once the document is complete the sequence ends; text continues it only in a vocabulary
  // with no end-of-generation token (then: whitespace, up to the grammar's limit).
  const bool more_text = !(any_end && state.Complete());
  bool any = any_end;
  // A token is allowed when the grammar takes all of its bytes. Inside a string its plain
  // prefix changes nothing, so most tokens there need no simulation; elsewhere a first byte
  // the grammar refuses rules out every token that starts with it.
  const auto takes_rest = [&](const G& from, const std::string& piece, size_t at) {
    G g = from;
    for (; at < piece.size(); ++at) {
      if (!g.Advance(static_cast<uint8_t>(piece[at]))) return false;
    }
    return true;
  };
  if (more_text && state.InPlainString()) {
    for (size_t id = 0; id < n; ++id) {
      if (vocab.kinds[id] != JsonVocabulary::Kind::kText) continue;
      const std::string& piece = vocab.pieces[id];
      if (vocab.plain_prefix[id] == piece.size() || takes_rest(state, piece, vocab.plain_prefix[id])) {
        allow(id);
        any = true;
      }
    }
  } else if (more_text) {
    for (int b = 0; b < 256; ++b) {
      G first = state;
      if (vocab.by_first_byte[b].empty() || !first.Advance(static_cast<uint8_t>(b))) continue;
      for (const int32_t id : vocab.by_first_byte[b]) {
        if (takes_rest(first, vocab.pieces[id], 1)) {
          allow(id);
          any = true;
        }
      }
    }
  }
  if (!any) {
    // Nothing can follow (a vocabulary without end tokens, at the whitespace limit after the
    // object): leave the row unconstrained rather than ban every token.
    std::fill(allowed.begin(), allowed.end(), ~uint64_t{0});
  }
  return allowed;
}

}  // namespace

template <class G>
typename SharedMasks<G>::Mask SharedMasks<G>::Find(const G& state) {
  absl::MutexLock lock(&mu_);
  for (Entry& e : entries_) {
    if (e.state == state) {
      e.last_use = ++clock_;
      return e.mask;
    }
  }
  return nullptr;
}

template <class G>
void SharedMasks<G>::Insert(const G& state, Mask mask, std::shared_ptr<const void> owner) {
  absl::MutexLock lock(&mu_);
  ++inserted_;
  Entry entry{state, std::move(mask), std::move(owner), ++clock_};
  if (entries_.size() < capacity_) {
    entries_.push_back(std::move(entry));
    return;
  }
  *std::min_element(entries_.begin(), entries_.end(),
                    [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; }) = std::move(entry);
}

template <class G>
int64_t SharedMasks<G>::inserted() const {
  absl::MutexLock lock(&mu_);
  return inserted_;
}

template <class G>
GrammarConstraint<G>::GrammarConstraint(std::shared_ptr<const JsonVocabulary> vocab, G grammar,
                                        std::shared_ptr<SharedMasks<G>> shared, std::shared_ptr<const void> owner)
    : vocab_(std::move(vocab)), grammar_(std::move(grammar)), shared_(std::move(shared)), owner_(std::move(owner)) {}

template <class G>
const std::vector<uint64_t>& GrammarConstraint<G>::AllowedFor(const G& state) {
  ++uses_;
  for (CachedMask& c : cache_) {
    if (c.state == state) {
      c.last_use = uses_;
      return *c.allowed;
    }
  }
  MaskPtr mask = shared_ != nullptr ? shared_->Find(state) : nullptr;
  if (mask == nullptr) {
    mask = std::make_shared<const std::vector<uint64_t>>(ComputeMask(*vocab_, state));
    if (shared_ != nullptr) shared_->Insert(state, mask, owner_);
  }
  if (cache_.size() < kCacheSize) {
    cache_.push_back(CachedMask{state, std::move(mask), uses_});
    return *cache_.back().allowed;
  }
  CachedMask& slot = *std::min_element(cache_.begin(), cache_.end(),
                                       [](const CachedMask& a, const CachedMask& b) { return a.last_use < b.last_use; });
  slot.state = state;
  slot.allowed = std::move(mask);
  slot.last_use = uses_;
  return *slot.allowed;
}

template <class G>
void GrammarConstraint<G>::Mask(std::span<float> logits) {
  PENG_CHECK(logits.size() == vocab_->kinds.size());
  const std::vector<uint64_t>& allowed = AllowedFor(grammar_);
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  for (size_t w = 0; w < allowed.size(); ++w) {
    const uint64_t bits = allowed[w];
    if (bits == ~uint64_t{0}) continue;
    const size_t end = std::min(logits.size(), (w + 1) * 64);
    for (size_t id = w * 64; id < end; ++id) {
      if (!((bits >> (id & 63)) & 1)) logits[id] = kBanned;
    }
  }
}

template <class G>
void GrammarConstraint<G>::Accept(int32_t id) {
  PENG_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_->kinds.size());
  if (vocab_->kinds[id] != JsonVocabulary::Kind::kText) return;  // an end token (ignore_eos)
  // Mask() allowed only tokens whose bytes the grammar takes; an unconstrained row (see
  // AllowedFor) may bring one it refuses, which then leaves the state as it is.
  grammar_.FeedAll(vocab_->pieces[id]);
}

template class SharedMasks<JsonGrammar>;
template class SharedMasks<SchemaGrammar>;
template class SharedMasks<ChoiceGrammar>;
template class GrammarConstraint<JsonGrammar>;
template class GrammarConstraint<SchemaGrammar>;
template class GrammarConstraint<ChoiceGrammar>;
template class SharedMasks<RegexGrammar>;
template class GrammarConstraint<RegexGrammar>;
template class SharedMasks<ToolCallBlockGrammar>;
template class GrammarConstraint<ToolCallBlockGrammar>;

}  // namespace peng
