#include "engine/byte_regex.h"

#include <algorithm>
#include <bitset>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace peng {
namespace {

using Bytes = std::bitset<256>;

// A pattern as error messages quote it: the first 80 bytes.
std::string Shown(std::string_view pattern) {
  return pattern.size() <= 80 ? std::string(pattern) : std::string(pattern.substr(0, 80)) + "...";
}

// The bytes a JSON string may hold as they are (no escapes, no control bytes).
Bytes StringBytes() {
  Bytes b;
  for (int c = 0x20; c < 256; ++c) b.set(c);
  b.reset('"');
  b.reset('\\');
  return b;
}

Bytes Range(int lo, int hi) {
  Bytes b;
  for (int c = lo; c <= hi; ++c) b.set(c);
  return b;
}

Bytes Digits() { return Range('0', '9'); }
Bytes Word() { return Range('a', 'z') | Range('A', 'Z') | Digits() | Range('_', '_'); }
Bytes Space() { return Range(' ', ' ') | Range('\t', '\r'); }

// The parsed expression.
struct Ast {
  enum class Kind { kBytes, kConcat, kAlt, kRepeat } kind;
  Bytes bytes;                             // kBytes
  std::vector<std::unique_ptr<Ast>> kids;  // kConcat, kAlt, kRepeat (one)
  int min = 0, max = 0;                    // kRepeat; max -1 = unbounded
};

std::unique_ptr<Ast> Node(Ast::Kind k) {
  auto a = std::make_unique<Ast>();
  a->kind = k;
  return a;
}

class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}

  absl::StatusOr<std::unique_ptr<Ast>> Parse() {
    PENG_ASSIGN_OR_RETURN(auto a, Alt());
    if (i_ != p_.size()) return Error("an unmatched ')'");
    return a;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern '", Shown(p_), "': ", std::string(what), " at offset ", i_));
  }
  bool More() const { return i_ < p_.size(); }

  absl::StatusOr<std::unique_ptr<Ast>> Alt() {
    auto alt = Node(Ast::Kind::kAlt);
    for (;;) {
      PENG_ASSIGN_OR_RETURN(auto c, Concat());
      alt->kids.push_back(std::move(c));
      if (!More() || p_[i_] != '|') break;
      ++i_;
    }
    if (alt->kids.size() == 1) return std::move(alt->kids[0]);
    return alt;
  }

  absl::StatusOr<std::unique_ptr<Ast>> Concat() {
    auto cat = Node(Ast::Kind::kConcat);
    while (More() && p_[i_] != '|' && p_[i_] != ')') {
      PENG_ASSIGN_OR_RETURN(auto a, Repeat());
      cat->kids.push_back(std::move(a));
    }
    return cat;
  }

  absl::StatusOr<std::unique_ptr<Ast>> Repeat() {
    PENG_ASSIGN_OR_RETURN(auto a, Atom());
    for (int stacked = 0; More(); ++stacked) {
      int lo = 0, hi = 0;
      const char c = p_[i_];
      if (c == '?') {
        lo = 0, hi = 1;
      } else if (c == '*') {
        lo = 0, hi = -1;
      } else if (c == '+') {
        lo = 1, hi = -1;
      } else if (c == '{') {
        PENG_RETURN_IF_ERROR(Counts(&lo, &hi));  // stops on the '}', taken below
      } else {
        break;
      }
      if (stacked == 4) return Error("more than 4 quantifiers on one atom");
      ++i_;
      if (More() && p_[i_] == '+') return Error("possessive quantifiers are not supported");
      if (More() && p_[i_] == '?') ++i_;  // lazy: the same texts match, only the search differs
      auto r = Node(Ast::Kind::kRepeat);
      r->min = lo;
      r->max = hi;
      r->kids.push_back(std::move(a));
      a = std::move(r);
    }
    return a;
  }

  // {m}, {m,} or {m,n} from p_[i_] == '{'; leaves i_ on the closing '}'.
  absl::Status Counts(int* lo, int* hi) {
    const auto number = [&](int* out) {
      const size_t start = ++i_;
      int v = 0;
      while (More() && p_[i_] >= '0' && p_[i_] <= '9' && v <= 1000) v = v * 10 + (p_[i_++] - '0');
      *out = v;
      return i_ > start;
    };
    if (!number(lo)) return Error("a count must start with a number");
    *hi = *lo;
    if (More() && p_[i_] == ',') {
      if (!number(hi)) *hi = -1;
    }
    if (!More() || p_[i_] != '}') return Error("an unclosed '{'");
    if (*lo > 64 || *hi > 64) return Error("counts above 64 are not supported");
    if (*hi >= 0 && *hi < *lo) return Error("a count range must not fall");
    return absl::OkStatus();
  }

  absl::StatusOr<Bytes> Escape() {
    if (!More()) return Error("a trailing backslash");
    const char c = p_[i_++];
    switch (c) {
      case 'd': return Digits();
      case 'D': return ~Digits();
      case 'w': return Word();
      case 'W': return ~Word();
      case 's': return Space();
      case 'S': return ~Space();
      case 'n': return Range('\n', '\n');
      case 't': return Range('\t', '\t');
      case 'r': return Range('\r', '\r');
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
          return Error(absl::StrCat("the escape \\", std::string(1, c), " is not supported"));
        }
        return Range(static_cast<uint8_t>(c), static_cast<uint8_t>(c));
    }
  }

  absl::StatusOr<Bytes> Class() {  // after '['
    bool negate = false;
    if (More() && p_[i_] == '^') {
      negate = true;
      ++i_;
    }
    Bytes set;
    bool first = true;
    while (More() && (p_[i_] != ']' || first)) {
      first = false;
      Bytes item;
      int lo = -1;
      if (p_[i_] == '\\') {
        ++i_;
        PENG_ASSIGN_OR_RETURN(item, Escape());
        if (item.count() == 1) {
          for (int c = 0; c < 256; ++c) {
            if (item[c]) lo = c;
          }
        }
      } else {
        lo = static_cast<uint8_t>(p_[i_++]);
        item.set(lo);
      }
      if (lo >= 0 && i_ + 1 < p_.size() && p_[i_] == '-' && p_[i_ + 1] != ']') {
        ++i_;
        int hi = static_cast<uint8_t>(p_[i_++]);
        if (hi == '\\') {
          PENG_ASSIGN_OR_RETURN(const Bytes e, Escape());
          if (e.count() != 1) return Error("a class range must end at one character");
          for (int c = 0; c < 256; ++c) {
            if (e[c]) hi = c;
          }
        }
        if (hi < lo) return Error("a class range must not fall");
        item = Range(lo, hi);
      }
      set |= item;
    }
    if (!More()) return Error("an unclosed '['");
    ++i_;
    return negate ? ~set : set;
  }

  absl::StatusOr<std::unique_ptr<Ast>> Atom() {
    const char c = p_[i_++];
    auto bytes = Node(Ast::Kind::kBytes);
    switch (c) {
      case '(': {
        if (++depth_ > kMaxGroupDepth) return Error("groups nested deeper than 64");
        if (p_.substr(i_, 2) == "?:") {
          i_ += 2;
        } else if (More() && p_[i_] == '?') {
          return Error("lookaround and named groups are not supported");
        }
        PENG_ASSIGN_OR_RETURN(auto a, Alt());
        if (!More() || p_[i_] != ')') return Error("an unclosed '('");
        ++i_;
        --depth_;
        return a;
      }
      case '[': {
        PENG_ASSIGN_OR_RETURN(bytes->bytes, Class());
        return bytes;
      }
      case '.':
        bytes->bytes = ~Range('\n', '\n');
        return bytes;
      case '\\': {
        PENG_ASSIGN_OR_RETURN(bytes->bytes, Escape());
        return bytes;
      }
      case '^':
      case '$':
        --i_;
        return Error("anchors are supported only at the pattern's ends");
      case '*': case '+': case '?': case '{':
        --i_;
        return Error("a quantifier with nothing to repeat");
      default:
        bytes->bytes.set(static_cast<uint8_t>(c));
        return bytes;
    }
  }

  static constexpr int kMaxGroupDepth = 64;  // the parser and the NFA builder recurse per group
  std::string_view p_;
  size_t i_ = 0;
  int depth_ = 0;
};

// The NFA states `a` builds into (see Nfa::Build), at most `cap` (counted repeats copy their
// operand, so a short pattern can ask for millions).
int64_t NfaSize(const Ast& a, int64_t cap) {
  int64_t n = 0;
  switch (a.kind) {
    case Ast::Kind::kBytes: return 2;
    case Ast::Kind::kConcat:
    case Ast::Kind::kAlt:
      n = 2;
      for (const auto& k : a.kids) n = std::min(cap, n + NfaSize(*k, cap));
      return n;
    case Ast::Kind::kRepeat: {
      const int64_t copies = a.max < 0 ? a.min + 1 : a.max;
      return std::min(cap, 2 + copies * NfaSize(*a.kids[0], cap));
    }
  }
  return cap;
}

// Thompson NFA: a state has one byte edge (bytes -> out) and epsilon edges.
struct Nfa {
  struct State {
    Bytes bytes;
    int out = -1;
    std::vector<int> eps;
  };
  std::vector<State> states;

  int Add() {
    states.emplace_back();
    return static_cast<int>(states.size() - 1);
  }

  // The fragment for `a`: its start and end states (the end has no edges yet).
  std::pair<int, int> Build(const Ast& a) {
    switch (a.kind) {
      case Ast::Kind::kBytes: {
        const int s = Add(), e = Add();
        states[s].bytes = a.bytes;
        states[s].out = e;
        return {s, e};
      }
      case Ast::Kind::kConcat: {
        const int s = Add();
        int end = s;
        for (const auto& k : a.kids) {
          const auto [ks, ke] = Build(*k);
          states[end].eps.push_back(ks);
          end = ke;
        }
        return {s, end};
      }
      case Ast::Kind::kAlt: {
        const int s = Add(), e = Add();
        for (const auto& k : a.kids) {
          const auto [ks, ke] = Build(*k);
          states[s].eps.push_back(ks);
          states[ke].eps.push_back(e);
        }
        return {s, e};
      }
      case Ast::Kind::kRepeat: {
        const int s = Add();
        int end = s;
        for (int i = 0; i < a.min; ++i) {
          const auto [ks, ke] = Build(*a.kids[0]);
          states[end].eps.push_back(ks);
          end = ke;
        }
        const int e = Add();
        if (a.max < 0) {
          const auto [ks, ke] = Build(*a.kids[0]);
          states[end].eps.push_back(ks);
          states[end].eps.push_back(e);
          states[ke].eps.push_back(end);
        } else {
          for (int i = a.min; i < a.max; ++i) {
            const auto [ks, ke] = Build(*a.kids[0]);
            states[end].eps.push_back(ks);
            states[end].eps.push_back(e);
            end = ke;
          }
          states[end].eps.push_back(e);
        }
        return {s, e};
      }
    }
    return {-1, -1};
  }

  void Close(std::vector<int>* set) const {
    std::vector<bool> seen(states.size());
    std::vector<int> stack(set->begin(), set->end());
    for (const int s : *set) seen[s] = true;
    while (!stack.empty()) {
      const int s = stack.back();
      stack.pop_back();
      for (const int t : states[s].eps) {
        if (!seen[t]) {
          seen[t] = true;
          set->push_back(t);
          stack.push_back(t);
        }
      }
    }
    std::sort(set->begin(), set->end());
  }
};

}  // namespace

absl::StatusOr<ByteRegex> ByteRegex::Compile(std::string_view pattern, Use use) {
  const bool whole_text = use == Use::kWholeText;
  // JSON Schema's patterns search: without an anchor, anything may come before or after.
  // A whole text matches from end to end, with or without the anchors.
  const bool has_start = !pattern.empty() && pattern.front() == '^';
  const bool has_end = pattern.size() > (has_start ? 1 : 0) && pattern.back() == '$' &&
                       (pattern.size() < 2 || pattern[pattern.size() - 2] != '\\');
  std::string_view body = pattern.substr(has_start ? 1 : 0);
  if (has_end) body.remove_suffix(1);
  const bool anchored_start = has_start || whole_text, anchored_end = has_end || whole_text;
  Parser parser(body);
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<Ast> ast, parser.Parse());
  if (!anchored_start || !anchored_end) {
    const auto any_string = [] {  // .* over the bytes a string may hold
      auto any = Node(Ast::Kind::kRepeat);
      any->max = -1;
      any->kids.push_back(Node(Ast::Kind::kBytes));
      any->kids[0]->bytes = StringBytes();
      return any;
    };
    auto cat = Node(Ast::Kind::kConcat);
    if (!anchored_start) cat->kids.push_back(any_string());
    cat->kids.push_back(std::move(ast));
    if (!anchored_end) cat->kids.push_back(any_string());
    ast = std::move(cat);
  }

  constexpr int64_t kMaxNfaStates = 20'000;
  if (NfaSize(*ast, kMaxNfaStates + 1) > kMaxNfaStates) {
    return absl::InvalidArgumentError(absl::StrCat("pattern '", Shown(pattern),
                                                   "' is too large (its counted repeats expand past ", kMaxNfaStates,
                                                   " automaton states)"));
  }
  Nfa nfa;
  const auto [start, final_state] = nfa.Build(*ast);
  const Bytes allowed = whole_text ? ~Bytes() : StringBytes();
  for (Nfa::State& s : nfa.states) s.bytes &= allowed;

  ByteRegex re;
  std::map<std::vector<int>, uint16_t> ids;
  std::vector<std::vector<int>> sets;
  std::vector<int> first{start};
  nfa.Close(&first);
  ids.emplace(first, 0);
  sets.push_back(first);
  int64_t work = 0;  // NFA states visited: a bound on the time a request's pattern may take
  constexpr int64_t kMaxWork = 50'000'000;
  for (size_t d = 0; d < sets.size(); ++d) {
    re.next_.resize((d + 1) * 256, kDead);
    re.accepting_.push_back(std::binary_search(sets[d].begin(), sets[d].end(), final_state));
    work += static_cast<int64_t>(sets[d].size()) * 256;
    if (work > kMaxWork) {
      return absl::InvalidArgumentError(absl::StrCat("pattern '", Shown(pattern), "' is too complex to compile"));
    }
    for (int c = 0; c < 256; ++c) {
      std::vector<int> move;
      for (const int s : sets[d]) {
        if (nfa.states[s].out >= 0 && nfa.states[s].bytes[c]) move.push_back(nfa.states[s].out);
      }
      if (move.empty()) continue;
      std::sort(move.begin(), move.end());
      move.erase(std::unique(move.begin(), move.end()), move.end());
      nfa.Close(&move);
      auto [it, added] = ids.emplace(move, static_cast<uint16_t>(sets.size()));
      if (added) {
        if (sets.size() >= kMaxStates) {
          return absl::InvalidArgumentError(absl::StrCat("pattern '", Shown(pattern), "' needs more than ", kMaxStates,
                                                         " automaton states"));
        }
        sets.push_back(std::move(move));
      }
      re.next_[d * 256 + c] = it->second;
    }
  }
  re.Prune();
  if (!re.accepting_[re.start()]) {
    bool live = false;
    for (int c = 0; c < 256 && !live; ++c) live = re.Next(re.start(), static_cast<uint8_t>(c)) != kDead;
    if (!live) {
      return absl::InvalidArgumentError(absl::StrCat("pattern '", Shown(pattern), "' matches no ",
                                                     whole_text ? "text" : "JSON string"));
    }
  }
  return re;
}

void ByteRegex::Prune() {
  // Live: accepting, or a byte leads to a live state (a fixpoint, backwards).
  const size_t n = accepting_.size();
  std::vector<bool> live = accepting_;
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t s = 0; s < n; ++s) {
      if (live[s]) continue;
      for (int c = 0; c < 256; ++c) {
        const uint16_t t = next_[s * 256 + c];
        if (t != kDead && live[t]) {
          live[s] = true;
          changed = true;
          break;
        }
      }
    }
  }
  final_.assign(n, true);
  for (size_t s = 0; s < n; ++s) {
    for (int c = 0; c < 256; ++c) {
      uint16_t& t = next_[s * 256 + c];
      if (t != kDead && !live[t]) t = kDead;
      if (t != kDead) final_[s] = false;
    }
  }
}

bool ByteRegex::Matches(std::string_view s) const {
  uint16_t state = start();
  for (const char c : s) {
    state = Next(state, static_cast<uint8_t>(c));
    if (state == kDead) return false;
  }
  return Accepting(state);
}

}  // namespace peng
