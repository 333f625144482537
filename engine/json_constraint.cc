#include "engine/json_constraint.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"

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
  classes.assign(pieces.size(), 0);
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (kinds[id] != Kind::kText) continue;
    const std::string& p = pieces[id];
    by_first_byte[static_cast<uint8_t>(p[0])].push_back(static_cast<int32_t>(id));
    plain_prefix[id] = static_cast<uint32_t>(JsonGrammar::PlainStringPrefix(p));
    for (const char c : p) {
      classes[id] |= c == '"' ? kQuote : c == '}' ? kCloseBrace : c == ']' ? kCloseBracket : c == ',' ? kComma : 0;
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') classes[id] |= kSpace;
      if (c >= '0' && c <= '9') classes[id] |= kDigit;
    }
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

namespace {

bool IsSpace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Whether every multiple of `multiple` in [lo, hi] that starts with `text` (an open integer:
// '-', digits) is in `used`.
bool EveryCompletionUsed(std::string_view text, int64_t lo, int64_t hi, int64_t multiple,
                         const absl::flat_hash_set<int64_t>& used) {
  const bool negative = !text.empty() && text[0] == '-';
  const std::string_view digits = text.substr(negative ? 1 : 0);
  if (digits.size() > 19) return true;  // none lies in int64
  std::vector<std::pair<__int128, __int128>> spans;  // the values, as [a, b]
  const auto add = [&](__int128 a, __int128 b) {  // magnitudes [a, b], with the sign
    if (negative) std::tie(a, b) = std::pair<__int128, __int128>(-b, -a);
    a = std::max<__int128>(a, lo);
    b = std::min<__int128>(b, hi);
    if (a <= b) spans.emplace_back(a, b);
  };
  if (digits.empty()) {
    add(negative ? 1 : 0, static_cast<__int128>(INT64_MAX) + 1);
  } else {
    __int128 m = 0;
    for (const char d : digits) m = m * 10 + (d - '0');
    if (m == 0) {
      add(0, 0);  // a leading zero takes no more digits
    } else {
      for (__int128 span = 1; m * span <= static_cast<__int128>(INT64_MAX) + 1; span *= 10) add(m * span, m * span + span - 1);
    }
  }
  __int128 count = 0;  // the multiples in the spans
  for (const auto& [a, b] : spans) count += FloorDiv(b, multiple) - FloorDiv(a - 1, multiple);
  if (count > static_cast<__int128>(used.size())) return false;
  for (const auto& [a, b] : spans) {
    for (__int128 v = (FloorDiv(a - 1, multiple) + 1) * multiple; v <= b; v += multiple) {
      if (!used.contains(static_cast<int64_t>(v))) return false;
    }
  }
  return true;
}

// The characters of an open JSON string (`text` from its opening quote on), as a schema's
// maxLength counts them: a UTF-8 sequence or an escape is one.
int64_t StringCharacters(std::string_view text) {
  int64_t n = 0;
  for (size_t i = 1; i < text.size(); ++n) {
    if (text[i] == '\\') {
      i += i + 1 < text.size() && text[i + 1] == 'u' ? 6 : 2;
    } else {
      ++i;
      while (i < text.size() && (static_cast<uint8_t>(text[i]) & 0xC0) == 0x80) ++i;
    }
  }
  return n;
}

}  // namespace

bool UniqueItems::Step(uint8_t c, const SchemaGrammar& after, bool keep) {
  bool fresh = true;
  if (array_ > 0) {
    const int depth = after.depth();
    if (in_item_ && depth > array_) {
      item_.push_back(static_cast<char>(c));
    } else if (in_item_) {
      // The item ended at this byte: with it (its closing quote, brace or bracket, a literal's
      // last letter) or before it (a number ends at the ',', ']' or whitespace that follows).
      if (!(c == ',' || IsSpace(c) || (c == ']' && depth < array_))) item_.push_back(static_cast<char>(c));
      nlohmann::json v = nlohmann::json::parse(item_, nullptr, /*allow_exceptions=*/false);
      in_item_ = false;
      item_.clear();
      if (!v.is_discarded()) {
        fresh = seen_ == nullptr || std::find(seen_->begin(), seen_->end(), v) == seen_->end();
        if (keep) {
          auto seen = seen_ != nullptr ? std::make_shared<std::vector<nlohmann::json>>(*seen_)
                                       : std::make_shared<std::vector<nlohmann::json>>();
          seen->push_back(std::move(v));
          seen_ = std::move(seen);
        }
      }
    } else if (depth > array_) {
      in_item_ = true;
      item_.assign(1, static_cast<char>(c));
    }
  }
  if (const int open = after.UniqueArrayDepth(); open != array_) {  // closed, or a new one opened
    array_ = open;
    in_item_ = false;
    item_.clear();
    seen_ = nullptr;
  }
  return fresh;
}

bool UniqueItems::Stuck(const SchemaGrammar& state) const {
  using Kind = JsonSchema::Node::Kind;
  if (!in_item_ || seen_ == nullptr || state.depth() <= array_) return false;
  const JsonSchema::Node& item = state.NodeAt(array_ + 1);
  if (item.kind == Kind::kInteger) {
    absl::flat_hash_set<int64_t> used;
    for (const nlohmann::json& v : *seen_) {
      if (v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= INT64_MAX)) {
        used.insert(v.get<int64_t>());
      }
    }
    return EveryCompletionUsed(item_, item.min_value, item.max_value, item.multiple_of, used);
  }
  if (item.kind == Kind::kString && item.max_length >= 0) {  // at maxLength it can only close
    if (state.depth() != array_ + 1 || StringCharacters(item_) < item.max_length) return false;
    const nlohmann::json v = nlohmann::json::parse(item_ + '"', nullptr, /*allow_exceptions=*/false);
    return !v.is_discarded() && std::find(seen_->begin(), seen_->end(), v) != seen_->end();
  }
  const char close = item.kind == Kind::kObject || item.kind == Kind::kMap ? '}' : item.kind == Kind::kArray ? ']' : 0;
  if (close == 0 || state.depth() != array_ + 1) return false;
  SchemaGrammar next = state;
  if (next.Feed(',')) return false;  // another property or item may come
  if (!next.Feed(static_cast<uint8_t>(close))) return false;
  const nlohmann::json v = nlohmann::json::parse(item_ + close, nullptr, /*allow_exceptions=*/false);
  return !v.is_discarded() && std::find(seen_->begin(), seen_->end(), v) != seen_->end();
}

void UniqueItems::Ban(const SchemaGrammar& state, const JsonVocabulary& vocab, const std::vector<uint64_t>& allowed,
                      std::span<float> logits) const {
  using Kind = JsonSchema::Node::Kind;
  // The tokens worth simulating: inside a string or a number of an item, those with a byte
  // that can end it (or, for a number, change it); elsewhere every allowed token.
  uint8_t need = 0;
  if (in_item_ && state.depth() > array_) {
    const JsonSchema::Node& open = state.NodeAt(state.depth());  // the innermost open value
    switch (open.kind) {
      case Kind::kString:  // a string ends at a quote; one with a maxLength can also fill up
        need = open.max_length >= 0 && state.depth() == array_ + 1 ? 0 : JsonVocabulary::kQuote;
        break;
      case Kind::kPattern: need = JsonVocabulary::kQuote; break;
      case Kind::kInteger: case Kind::kNumber:
        need = JsonVocabulary::kComma | JsonVocabulary::kCloseBracket | JsonVocabulary::kCloseBrace |
               JsonVocabulary::kSpace | JsonVocabulary::kDigit;
        break;
      default: break;
    }
  }
  std::vector<int32_t> banned;
  size_t kept = 0;
  for (size_t w = 0; w < allowed.size(); ++w) {
    for (uint64_t bits = allowed[w]; bits != 0; bits &= bits - 1) {
      const size_t id = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      if (id >= logits.size()) break;
      if (vocab.kinds[id] != JsonVocabulary::Kind::kText || (need != 0 && !(vocab.classes[id] & need))) {
        ++kept;
        continue;
      }
      SchemaGrammar g = state;
      UniqueItems u = *this;
      bool fresh = true;
      const std::string& piece = vocab.pieces[id];
      for (size_t b = 0; b < piece.size() && fresh; ++b) {
        SchemaGrammar next = g;
        if (!next.Advance(static_cast<uint8_t>(piece[b]))) break;  // an unconstrained row's token
        fresh = u.Step(static_cast<uint8_t>(piece[b]), next, /*keep=*/b + 1 < piece.size());
        g = next;
      }
      if (fresh && u.Stuck(g)) fresh = false;
      if (fresh) {
        ++kept;
      } else {
        banned.push_back(static_cast<int32_t>(id));
      }
    }
  }
  if (kept == 0) return;  // every token would repeat an item: leave the grammar's mask
  for (const int32_t id : banned) logits[id] = -std::numeric_limits<float>::infinity();
}

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
  if constexpr (kReadsSchema) {
    if (unique_.active()) unique_.Ban(*grammar_.document(), *vocab_, allowed, logits);
  }
}

template <class G>
void GrammarConstraint<G>::Accept(int32_t id) {
  PENG_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_->kinds.size());
  if (vocab_->kinds[id] != JsonVocabulary::Kind::kText) return;  // an end token (ignore_eos)
  // Mask() allowed only tokens whose bytes the grammar takes; an unconstrained row (see
  // AllowedFor) may bring one it refuses, which then leaves the state as it is.
  if constexpr (kReadsSchema) {
    if (!grammar_.document()->schema().unique_values()) {
      grammar_.FeedAll(vocab_->pieces[id]);
      return;
    }
    G g = grammar_;
    UniqueItems unique = unique_;
    for (const char c : vocab_->pieces[id]) {
      if (!g.Advance(static_cast<uint8_t>(c))) return;
      unique.Step(static_cast<uint8_t>(c), *g.document());
    }
    grammar_ = g;
    unique_ = std::move(unique);
  } else {
    grammar_.FeedAll(vocab_->pieces[id]);
  }
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
