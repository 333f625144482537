#include "engine/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/tokenizer_unicode.h"

namespace peng {
namespace {

bool IsControlLike(TokenKind k) { return k == TokenKind::kControl || k == TokenKind::kUnknown; }

// Kinds BPE may produce from text (SentencePiece: only NORMAL pieces take part in merges).
bool IsMergeable(TokenKind k) {
  return k == TokenKind::kNormal || k == TokenKind::kUndefined || k == TokenKind::kUnused;
}

// "<0xNN>" -> NN, else -1.
int ParseByteToken(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else return -1;
  }
  return v;
}

// Texts of control tokens that end a turn in the chat formats we know.
constexpr std::string_view kEndOfTurnTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>",
    "<|eom_id|>", "<EOT>", "</s>", "<|return|>", "<|END_OF_TURN_TOKEN|>",
};

absl::Status CheckId(const char* what, int32_t id, size_t vocab) {
  if (id < -1 || id >= static_cast<int64_t>(vocab)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", id, " is out of range (vocabulary of ", vocab, " tokens)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerSpec spec) {
  const std::string source = spec.source;
  PENG_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::Create(spec.pre_tokenizer));
  std::unique_ptr<Tokenizer> tok(new Tokenizer(std::move(spec), std::move(pre)));
  absl::Status s = tok->Index();
  if (!s.ok()) return Annotate(s, absl::StrCat("tokenizer in ", source));
  return tok;
}

absl::Status Tokenizer::Index() {
  const size_t n = spec_.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("empty vocabulary");
  if (n > (1u << 30)) return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n));
  if (spec_.kinds.empty()) spec_.kinds.assign(n, TokenKind::kNormal);
  if (spec_.kinds.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("token_type has ", spec_.kinds.size(),
                                                   " entries for ", n, " tokens"));
  }
  PENG_RETURN_IF_ERROR(CheckId("bos token id", spec_.bos_id, n));
  PENG_RETURN_IF_ERROR(CheckId("eos token id", spec_.eos_id, n));
  PENG_RETURN_IF_ERROR(CheckId("eot token id", spec_.eot_id, n));
  PENG_RETURN_IF_ERROR(CheckId("eom token id", spec_.eom_id, n));
  PENG_RETURN_IF_ERROR(CheckId("unknown token id", spec_.unk_id, n));

  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (spec_.tokens[i].empty()) continue;  // gaps in a sparse vocabulary
    token_to_id_.try_emplace(spec_.tokens[i], id);
    if (IsMergeable(spec_.kinds[i])) piece_to_id_.try_emplace(spec_.tokens[i], id);
  }

  byte_symbol_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    if (spec_.encoding == TextEncoding::kByteLevel) {
      auto it = piece_to_id_.find(ByteToUnicode(static_cast<uint8_t>(b)));
      if (it != piece_to_id_.end()) byte_symbol_[b] = it->second;
    } else {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = token_to_id_.find(std::string_view(name));
      if (it != token_to_id_.end()) byte_symbol_[b] = it->second;
    }
  }

  if (spec_.merge_order == MergeOrder::kRanks) {
    for (size_t r = 0; r < spec_.merges.size(); ++r) {
      const auto& [a, b] = spec_.merges[r];
      auto ia = token_to_id_.find(a), ib = token_to_id_.find(b);
      auto im = token_to_id_.find(absl::StrCat(a, b));
      const char* missing = ia == token_to_id_.end() ? "left side"
                            : ib == token_to_id_.end() ? "right side"
                            : im == token_to_id_.end() ? "merged token"
                                                       : nullptr;
      if (missing != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("merge #", r, " \"", a, " ", b, "\": ",
                                                       missing, " is not in the vocabulary"));
      }
      merger_.Add(ia->second, ib->second, static_cast<int32_t>(r), im->second);
    }
  } else {
    if (spec_.scores.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("scores has ", spec_.scores.size(), " entries for ", n, " tokens"));
    }
    // Dense rank of each score, highest first: equal scores tie and fall back to position.
    std::vector<float> distinct;
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan(spec_.scores[i])) {
        return absl::InvalidArgumentError(absl::StrCat("score of token ", i, " is NaN"));
      }
      if (IsMergeable(spec_.kinds[i])) distinct.push_back(spec_.scores[i]);
    }
    std::sort(distinct.begin(), distinct.end(), std::greater<float>());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (const auto& [text, id] : piece_to_id_) {
      const auto rank = static_cast<int32_t>(
          std::lower_bound(distinct.begin(), distinct.end(), spec_.scores[id],
                           std::greater<float>()) - distinct.begin());
      std::string_view t = text;
      for (size_t k = NextUtf8Unit(t); k < t.size(); k += NextUtf8Unit(t.substr(k))) {
        auto il = piece_to_id_.find(t.substr(0, k)), ir = piece_to_id_.find(t.substr(k));
        if (il != piece_to_id_.end() && ir != piece_to_id_.end()) {
          merger_.Add(il->second, ir->second, rank, id);
        }
      }
    }
  }

  decoded_.resize(n);
  specials_by_byte_.assign(256, {});
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = spec_.tokens[i];
    const TokenKind kind = spec_.kinds[i];
    std::string& out = decoded_[i];
    if (IsControlLike(kind) || kind == TokenKind::kUserDefined) {
      out = t;
      if (!t.empty()) specials_by_byte_[static_cast<uint8_t>(t[0])].push_back(i);
    } else if (spec_.encoding == TextEncoding::kByteLevel) {
      for (size_t k = 0; k < t.size();) {
        const size_t len = ValidUtf8CharLen(std::string_view(t).substr(k));
        const int byte = len > 0 ? UnicodeToByte(DecodeUtf8(t.data() + k, len)) : -1;
        const size_t step = len > 0 ? len : 1;
        if (byte >= 0) {
          out.push_back(static_cast<char>(byte));
        } else {
          out.append(t, k, step);
        }
        k += step;
      }
    } else {
      const int byte = ParseByteToken(t);
      if (byte >= 0 && (kind == TokenKind::kByte || spec_.byte_fallback)) {
        out.push_back(static_cast<char>(byte));
      } else {
        out = ReplaceAll(t, kMetaspace, " ");
      }
    }
  }
  for (auto& ids : specials_by_byte_) {
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      return spec_.tokens[a].size() > spec_.tokens[b].size();
    });
  }

  for (int32_t id : {spec_.eos_id, spec_.eot_id, spec_.eom_id}) {
    if (id >= 0) end_of_generation_.insert(id);
  }
  for (std::string_view text : kEndOfTurnTexts) {
    auto it = token_to_id_.find(text);
    if (it != token_to_id_.end() && !IsMergeable(spec_.kinds[it->second])) {
      end_of_generation_.insert(it->second);
    }
  }
  return absl::OkStatus();
}

int32_t Tokenizer::MatchSpecial(std::string_view text, size_t pos, bool parse_special,
                                size_t* len) const {
  const std::string_view rest = text.substr(pos);
  for (int32_t id : specials_by_byte_[static_cast<uint8_t>(text[pos])]) {
    if (!parse_special && IsControlLike(spec_.kinds[id])) continue;
    if (rest.starts_with(spec_.tokens[id])) {
      *len = spec_.tokens[id].size();
      return id;
    }
  }
  return -1;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  std::vector<int32_t> ids;
  size_t segment_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t len = 0;
    const int32_t id = MatchSpecial(text, pos, parse_special, &len);
    if (id < 0) {
      ++pos;
      continue;
    }
    if (pos > segment_start) {
      EncodeSegment(text.substr(segment_start, pos - segment_start), segment_start == 0, &ids);
    }
    ids.push_back(id);
    pos += len;
    segment_start = pos;
  }
  if (segment_start < text.size()) {
    EncodeSegment(text.substr(segment_start), segment_start == 0, &ids);
  }
  if (add_bos && add_bos_default() && (ids.empty() || ids[0] != spec_.bos_id)) {
    ids.insert(ids.begin(), spec_.bos_id);
  }
  return ids;
}

void Tokenizer::EncodeSegment(std::string_view segment, bool first_segment,
                              std::vector<int32_t>* ids) const {
  std::string text(segment);
  for (const NormalizerStep& step : spec_.normalizer) {
    if (step.kind == NormalizerStep::Kind::kReplace) {
      if (!step.from.empty()) text = ReplaceAll(text, step.from, step.to);
    } else if (!text.empty()) {
      text.insert(0, step.to);
    }
  }
  std::vector<std::string> words;
  pre_.Split(text, first_segment, &words);
  for (const std::string& word : words) EncodeWord(word, ids);
}

void Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  const bool byte_level = spec_.encoding == TextEncoding::kByteLevel;
  if (spec_.ignore_merges) {
    std::string mapped;
    if (byte_level) {
      for (char c : word) mapped += ByteToUnicode(static_cast<uint8_t>(c));
    }
    auto it = piece_to_id_.find(byte_level ? std::string_view(mapped) : word);
    if (it != piece_to_id_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<BpeSymbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size();) {
    const size_t len = byte_level ? 1 : NextUtf8Unit(word.substr(i));
    int32_t id = -1;
    if (byte_level) {
      id = byte_symbol_[static_cast<uint8_t>(word[i])];
    } else {
      auto it = piece_to_id_.find(word.substr(i, len));
      if (it != piece_to_id_.end()) id = it->second;
    }
    symbols.push_back({id, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
    i += len;
  }
  merger_.Apply(&symbols);
  for (const BpeSymbol& s : symbols) {
    if (s.id >= 0) {
      ids->push_back(s.id);
      continue;
    }
    if (!byte_level && spec_.byte_fallback) {
      for (size_t k = s.begin; k < s.begin + s.len; ++k) {
        const int32_t b = byte_symbol_[static_cast<uint8_t>(word[k])];
        if (b >= 0) {
          ids->push_back(b);
        } else if (spec_.unknown_to_unk && spec_.unk_id >= 0) {
          ids->push_back(spec_.unk_id);
        }
      }
    } else if (spec_.unknown_to_unk && spec_.unk_id >= 0) {
      ids->push_back(spec_.unk_id);
    }
  }
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && IsSpecial(id)) continue;
    out += decoded_[id];
  }
  if (spec_.strip_decoded_leading_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return SanitizeUtf8(out);
}

std::string Tokenizer::TokenPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return decoded_[id];
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && IsControlLike(spec_.kinds[id]);
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  auto it = token_to_id_.find(text);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string IncrementalDecoder::Push(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) return {};
  if (skip_special_ && tokenizer_.IsSpecial(id)) return {};
  std::string piece = tokenizer_.TokenPiece(id);
  if (piece.empty()) return {};
  if (at_start_ && tokenizer_.strips_leading_space() && piece[0] == ' ') piece.erase(0, 1);
  at_start_ = false;
  pending_ += piece;
  std::string out;
  const size_t held = AppendCompleteUtf8(pending_, &out);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace peng
