#include "engine/tokenizer_pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine/tokenizer_unicode.h"

namespace peng {
namespace {

using Range = std::pair<size_t, size_t>;
using Behavior = PreTokenizerStep::Behavior;

struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the first segment of the input
};

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

// One match-data block per thread; only the whole-match offsets are read.
pcre2_match_data* ThreadMatchData() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create(1, nullptr));
  return md.get();
}

void FindLiteral(std::string_view text, std::string_view literal, std::vector<Range>* out) {
  if (literal.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(literal, pos)) != std::string_view::npos) {
    out->emplace_back(pos, pos + literal.size());
    pos += literal.size();
  }
}

// Cuts `piece` at the match ranges, handling the matches by `behavior` (Hugging Face
// SplitDelimiterBehavior), and appends the non-empty results to `out`.
void SplitByMatches(const Piece& piece, const std::vector<Range>& matches, Behavior behavior,
                    bool invert, std::vector<Piece>* out) {
  // Alternating segments covering the whole piece: (range, is_match).
  std::vector<std::pair<Range, bool>> segs;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) segs.push_back({{prev, b}, invert});
    segs.push_back({{b, e}, !invert});
    prev = e;
  }
  if (prev < piece.text.size()) segs.push_back({{prev, piece.text.size()}, invert});

  std::vector<Range> parts;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const auto& [r, m] : segs) {
        if (!m) parts.push_back(r);
      }
      break;
    case Behavior::kIsolated:
      for (const auto& [r, m] : segs) parts.push_back(r);
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const auto& [r, m] : segs) {
        if (m && !prev_match && !parts.empty()) {
          parts.back().second = r.second;
        } else {
          parts.push_back(r);
        }
        prev_match = m;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        const auto& [r, m] = *it;
        if (m && !prev_match && !parts.empty()) {
          parts.back().first = r.first;
        } else {
          parts.push_back(r);
        }
        prev_match = m;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case Behavior::kContiguous: {
      bool prev_match = false;
      for (const auto& [r, m] : segs) {
        if (!parts.empty() && m == prev_match) {
          parts.back().second = r.second;
        } else {
          parts.push_back(r);
        }
        prev_match = m;
      }
      break;
    }
  }
  for (const auto& [b, e] : parts) {
    if (e <= b) continue;
    out->push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(const std::string& pattern) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof(msg));
    return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex \"", pattern,
                                                   "\" does not compile at offset ",
                                                   error_offset, ": ",
                                                   reinterpret_cast<const char*>(msg)));
  }
  std::shared_ptr<Regex> regex(new Regex());
  regex->code_ = code;
  // JIT is an optimisation only: without it (e.g. no JIT support compiled in) matching is
  // identical, just slower.
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<const Regex>(std::move(regex));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::FindAll(std::string_view text, std::vector<Range>* matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = ThreadMatchData();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), offset, 0, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), offset, PCRE2_NO_JIT, md, nullptr);
    }
    if (rc < 0) break;  // no (further) match; resource-limit errors leave the rest unsplit
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end <= begin) {  // empty match: step over one character
      offset = begin + NextUtf8Unit(text.substr(begin));
      continue;
    }
    matches->emplace_back(begin, end);
    offset = end;
  }
}

absl::StatusOr<PreTokenizer> PreTokenizer::Create(const std::vector<PreTokenizerStep>& steps) {
  PreTokenizer pre;
  for (const PreTokenizerStep& spec : steps) {
    Step step{spec, nullptr};
    switch (spec.kind) {
      case PreTokenizerStep::Kind::kSplit: {
        if (!spec.literal) {
          PENG_ASSIGN_OR_RETURN(step.regex, Regex::Compile(spec.pattern));
        }
        break;
      }
      case PreTokenizerStep::Kind::kDigits: {
        PENG_ASSIGN_OR_RETURN(step.regex,
                              Regex::Compile(spec.individual_digits ? "\\p{N}" : "\\p{N}+"));
        break;
      }
      case PreTokenizerStep::Kind::kByteLevel: {
        if (spec.use_regex) {
          PENG_ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2SplitPattern));
        }
        break;
      }
      case PreTokenizerStep::Kind::kMetaspace:
        if (spec.replacement.empty()) {
          return absl::InvalidArgumentError("Metaspace pre-tokenizer with empty replacement");
        }
        break;
    }
    pre.steps_.push_back(std::move(step));
  }
  return pre;
}

void PreTokenizer::Split(std::string_view text, bool first_segment,
                         std::vector<std::string>* words) const {
  std::vector<Piece> pieces = {{std::string(text), first_segment}};
  std::vector<Piece> next;
  std::vector<Range> matches;
  for (const Step& step : steps_) {
    next.clear();
    const PreTokenizerStep& s = step.spec;
    for (Piece& piece : pieces) {
      matches.clear();
      switch (s.kind) {
        case PreTokenizerStep::Kind::kSplit:
          if (s.literal) {
            FindLiteral(piece.text, s.pattern, &matches);
          } else {
            step.regex->FindAll(piece.text, &matches);
          }
          SplitByMatches(piece, matches, s.behavior, s.invert, &next);
          break;
        case PreTokenizerStep::Kind::kDigits:
          step.regex->FindAll(piece.text, &matches);
          SplitByMatches(piece, matches, Behavior::kIsolated, false, &next);
          break;
        case PreTokenizerStep::Kind::kByteLevel:
          if (s.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) {
            piece.text.insert(piece.text.begin(), ' ');
          }
          if (step.regex == nullptr) {
            next.push_back(std::move(piece));
          } else {
            step.regex->FindAll(piece.text, &matches);
            SplitByMatches(piece, matches, Behavior::kIsolated, false, &next);
          }
          break;
        case PreTokenizerStep::Kind::kMetaspace: {
          std::string replaced;
          for (char c : piece.text) {
            if (c == ' ') {
              replaced += s.replacement;
            } else {
              replaced += c;
            }
          }
          const bool prepend =
              s.prepend == PreTokenizerStep::Prepend::kAlways ||
              (s.prepend == PreTokenizerStep::Prepend::kFirst && piece.at_start);
          if (prepend && !replaced.starts_with(s.replacement)) replaced.insert(0, s.replacement);
          Piece p{std::move(replaced), piece.at_start};
          if (s.split) {
            FindLiteral(p.text, s.replacement, &matches);
            SplitByMatches(p, matches, Behavior::kMergedWithNext, false, &next);
          } else {
            next.push_back(std::move(p));
          }
          break;
        }
      }
    }
    pieces.swap(next);
  }
  for (Piece& p : pieces) {
    if (!p.text.empty()) words->push_back(std::move(p.text));
  }
}

}  // namespace peng
