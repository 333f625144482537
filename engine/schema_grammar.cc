#include "engine/schema_grammar.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

namespace peng {
namespace {

using Node = JsonSchema::Node;
using Kind = JsonSchema::Node::Kind;

bool IsWhitespace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool HasLength(const Node& n) { return n.min_length > 0 || n.max_length >= 0; }

// Counts byte c of a string's text against the node's maxLength: a byte that starts a character
// (not a UTF-8 continuation byte) takes one more, refused past the bound.
bool CountCharacter(const Node& n, uint8_t c, uint16_t* count) {
  if ((c & 0xC0) == 0x80) return true;
  if (n.max_length >= 0 && *count >= n.max_length) return false;
  ++*count;
  return true;
}

}  // namespace

namespace {

// Object and array phases (Frame::phase).
enum : uint8_t {
  kObjOpen,        // after '{': a key or '}'
  kObjKey,         // inside a key: candidates still matching, pos bytes matched
  kObjColon,       // after a key
  kObjValueStart,  // after ':'
  kObjValue,       // the value is open (a frame above)
  kObjAfter,       // after a value: ',' or '}'
  kObjNext,        // after ',': a key
  kArrOpen,        // after '[': a value or ']'
  kArrValue,
  kArrAfter,
  kArrNext,
  kMapOpen,        // after '{': a key or '}'
  kMapKey,         // inside a key (the embedded grammar reads it)
  kMapColon,
  kMapValueStart,
  kMapValue,
  kMapAfter,
  kMapNext,
};

}  // namespace

SchemaGrammar::SchemaGrammar(const JsonSchema* schema) : schema_(schema) {
  static_assert(sizeof(Frame) <= 40 && alignof(Frame) <= 8 && std::is_trivially_copyable_v<Frame>,
                "storage_ holds kMaxDepth frames of at most 40 bytes, copied as bytes");
}

SchemaGrammar& SchemaGrammar::operator=(const SchemaGrammar& other) {
  schema_ = other.schema_;
  depth_ = other.depth_;
  whitespace_ = other.whitespace_;
  done_ = other.done_;
  std::memcpy(storage_, other.storage_, other.depth_ * sizeof(Frame));
  return *this;
}

bool operator==(const SchemaGrammar& a, const SchemaGrammar& b) {
  if (a.schema_ != b.schema_ || a.depth_ != b.depth_ || a.whitespace_ != b.whitespace_ || a.done_ != b.done_) {
    return false;
  }
  for (int i = 0; i < a.depth_; ++i) {
    const SchemaGrammar::Frame &x = a.frames()[i], &y = b.frames()[i];
    if (x.node != y.node || x.phase != y.phase || x.pos != y.pos || x.prop != y.prop ||
        x.candidates != y.candidates || !(x.sub == y.sub)) {
      return false;
    }
  }
  return true;
}

int SchemaGrammar::UniqueArrayDepth() const {
  for (int d = depth_; d > 0; --d) {
    const Node& n = NodeAt(d);
    if (n.kind == Kind::kArray && n.unique_items && !UniqueLiterals(n)) return d;
  }
  return 0;
}

bool SchemaGrammar::InPlainString() const {
  if (depth_ == 0) return false;
  const Frame& f = frames()[depth_ - 1];
  const Kind k = NodeOf(f).kind;
  const bool counted = k == Kind::kString && HasLength(NodeOf(f));  // each byte moves the count
  return ((k == Kind::kString && !counted) || k == Kind::kAny || (k == Kind::kMap && f.phase == kMapKey)) &&
         f.sub.InPlainString();
}

bool SchemaGrammar::Advance(uint8_t c) {
  if (!IsWhitespace(c)) whitespace_ = 0;
  for (;;) {
    const Result r = FeedFrame(c);
    if (r == kTaken) return true;
    if (r == kRefused) return false;
    PopValue();  // kEnded: the top frame closed without the byte; its parent reads it
  }
}

void SchemaGrammar::PopValue() {
  --depth_;
  if (depth_ == 0) {
    done_ = true;
    return;
  }
  Frame& parent = frames()[depth_ - 1];
  if (parent.phase == kObjValue) {
    parent.phase = kObjAfter;
    const Node& union_node = NodeOf(parent);
    if (!union_node.tag_branches.empty()) {
      // The tag of a union of objects (frames()[depth_], just closed, holds the literals still
      // matching and the bytes read): the object goes on as the branch its value names.
      const Frame& tag = frames()[depth_];
      const Node& values = NodeOf(tag);
      for (uint64_t m = tag.candidates; m != 0; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        if (values.literals[i].size() == tag.pos) {
          parent.node = union_node.tag_branches[i];
          parent.pos = 1;  // the branch's first property is the tag
        }
      }
    }
  }
  if (parent.phase == kMapValue) parent.phase = kMapAfter;
  if (parent.phase == kArrValue) {
    parent.phase = kArrAfter;
    ++parent.pos;
    if (UniqueLiterals(NodeOf(parent))) {  // the literal just written may not come again
      const Frame& item = frames()[depth_];
      const Node& values = NodeOf(item);
      for (uint64_t m = item.candidates; m != 0; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        if (values.literals[i].size() == item.pos) parent.candidates |= uint64_t{1} << i;
      }
    }
  }
}

bool SchemaGrammar::Push(int32_t node) {
  if (depth_ == kMaxDepth) return false;
  Frame* f = new (&frames()[depth_++]) Frame{};
  f->node = node;
  return true;
}

namespace {

// Whether some multiple of `multiple` written as `negative` sign, the digits of `magnitude`
// (`digits` of them, 0 when only the sign is there) and maybe more digits lies in [lo, hi]. A
// leading zero takes no more digits (JSON).
bool IntegerReachable(bool negative, uint64_t magnitude, int digits, int64_t lo, int64_t hi, int64_t multiple) {
  const auto meets = [&](uint64_t a, uint64_t b) {  // magnitudes [a, b] with the sign
    // The values: [a, b] or [-b, -a], within [lo, hi].
    __int128 x = negative ? -static_cast<__int128>(b) : a, y = negative ? -static_cast<__int128>(a) : b;
    x = std::max<__int128>(x, lo);
    y = std::min<__int128>(y, hi);
    if (x > y) return false;
    return FloorDiv(y, multiple) * multiple >= x;  // a multiple in [x, y]
  };
  if (digits == 0) return meets(0, UINT64_MAX);
  if (magnitude == 0) return meets(0, 0);
  uint64_t span = 1;  // magnitude followed by k more digits: [m·10^k, m·10^k + 10^k - 1]
  for (uint64_t m = magnitude; m <= static_cast<uint64_t>(INT64_MAX) + 1; m *= 10, span *= 10) {
    if (meets(m, m + span - 1)) return true;
    if (m > UINT64_MAX / 10) break;
  }
  return false;
}

}  // namespace

// One byte of a bounded integer: phase = negative, candidates = magnitude, pos = digits.
bool SchemaGrammar::BoundedDigit(const JsonSchema::Node& n, Frame& f, uint8_t c) {
  if (c == '-') {
    if (f.pos != 0 || f.phase != 0) return false;
    f.phase = 1;
    return IntegerReachable(true, 0, 0, n.min_value, n.max_value, n.multiple_of);
  }
  if (f.pos == 1 && f.candidates == 0) return false;  // after a leading zero
  if (f.candidates > (UINT64_MAX - 9) / 10) return false;
  const uint64_t m = f.candidates * 10 + (c - '0');
  if (!IntegerReachable(f.phase != 0, m, f.pos + 1, n.min_value, n.max_value, n.multiple_of)) return false;
  f.candidates = m;
  ++f.pos;
  return true;
}

namespace {

// Bounded numbers: the digits as a mantissa of at most 15 digits (so it is exact, and distinct
// values stay distinct as doubles), at most 20 of them after the point, no exponent.
constexpr uint64_t kMaxMantissa = 999'999'999'999'999;
constexpr int kMaxFraction = 20;

long double Pow10(int k) {
  long double p = 1;
  while (k-- > 0) p *= 10;
  return p;
}

bool AboveMin(const JsonSchema::Node& n, long double v) { return n.min_open ? v > n.min_real : v >= n.min_real; }
bool BelowMax(const JsonSchema::Node& n, long double v) { return n.max_open ? v < n.max_real : v <= n.max_real; }

int MantissaLength(uint64_t m) {
  int n = 0;
  for (; m != 0; m /= 10) ++n;
  return n;
}

// Whether some magnitude in [a, b], with the sign, meets the node's bounds. Values are a
// mantissa of at most 15 digits over a power of ten, computed in long double: within 2^-64 of
// the decimal, so a comparison with a double bound decides as Python's float comparison does,
// or refuses a value within half a double's ulp of a bound.
bool Meets(const JsonSchema::Node& n, bool negative, long double a, long double b) {
  if (!negative) return BelowMax(n, a) && AboveMin(n, b);
  return BelowMax(n, -b) && AboveMin(n, -a);
}

// The largest value that continues mantissa m (`frac` digits after the point): m followed by
// nines up to the digit limits, computed as the end check computes that number.
long double Largest(uint64_t m, int frac) {
  const int r = std::min(15 - MantissaLength(m), kMaxFraction - frac);
  return (static_cast<long double>(m + 1) * Pow10(r) - 1) / Pow10(frac + r);
}

// Whether some number that starts as written (`digits` digits forming mantissa m, `frac` of them
// after the point when `dot`) lies within the bounds. The numbers it can become run from the
// written value to Largest (through every value of the finest step: only bounds closer than that
// step, past 15 significant digits, could leave a gap).
bool NumberReachable(const JsonSchema::Node& n, bool negative, bool dot, uint64_t m, int digits, int frac) {
  if (digits == 0) return Meets(n, negative, 0, HUGE_VALL);
  if (dot) {
    const bool room = m <= (kMaxMantissa - 9) / 10 && frac < kMaxFraction;
    if (frac == 0 && !room) return false;
    return Meets(n, negative, m / Pow10(frac), Largest(m, frac));
  }
  if (m == 0) return Meets(n, negative, 0, Largest(0, 0));  // "0", then maybe a fraction
  // k more integer digits (each adding a power of ten), then maybe a fraction.
  for (int k = 0; MantissaLength(m) + k <= 15; ++k) {
    const uint64_t low = m * static_cast<uint64_t>(Pow10(k));
    const uint64_t high = (m + 1) * static_cast<uint64_t>(Pow10(k)) - 1;
    if (Meets(n, negative, static_cast<long double>(low), Largest(high, 0))) return true;
  }
  return false;
}

}  // namespace

// One byte of a bounded number: phase bit 0 = negative, bit 1 = point; candidates = mantissa,
// pos = digits, prop = digits after the point.
bool SchemaGrammar::BoundedNumberByte(const JsonSchema::Node& n, Frame& f, uint8_t c) {
  const bool negative = f.phase & 1;
  bool dot = f.phase & 2;
  uint64_t m = f.candidates;
  int digits = f.pos, frac = f.prop;
  if (c == '-') {
    if (digits != 0 || negative) return false;
    f.phase |= 1;
    return NumberReachable(n, true, false, 0, 0, 0);
  }
  if (c == '.') {
    if (dot || digits == 0) return false;
    dot = true;
  } else if (c >= '0' && c <= '9') {
    if (!dot && digits == 1 && m == 0) return false;  // after a leading zero
    if (m > (kMaxMantissa - (c - '0')) / 10 || (dot && frac == kMaxFraction)) return false;
    m = m * 10 + (c - '0');
    ++digits;
    frac += dot;
  } else {
    return false;
  }
  if (!NumberReachable(n, negative, dot, m, digits, frac)) return false;
  f.phase = static_cast<uint8_t>(negative | (dot << 1));
  f.candidates = m;
  f.pos = static_cast<uint16_t>(digits);
  f.prop = static_cast<uint16_t>(frac);
  return true;
}

bool SchemaGrammar::BoundedNumberEnds(const JsonSchema::Node& n, const Frame& f) {
  if (f.pos == 0 || ((f.phase & 2) && f.prop == 0)) return false;
  const long double v = f.candidates / Pow10(f.prop);
  return Meets(n, f.phase & 1, v, v);
}

SchemaGrammar::Result SchemaGrammar::StartValue(int32_t node, uint8_t c) {
  const auto& nodes = schema_->nodes();
  while (nodes[node].kind == Kind::kAnyOf) {  // branches start with different bytes (Compile)
    int32_t next = -1;
    for (const int32_t a : nodes[node].alternatives) {
      if (nodes[a].first[c]) next = a;
    }
    if (next < 0) return kRefused;
    node = next;
  }
  const Node& n = nodes[node];
  if (!n.first[c] || !Push(node)) return kRefused;
  Frame& f = frames()[depth_ - 1];
  switch (n.kind) {
    case Kind::kObject:
      f.phase = kObjOpen;
      return kTaken;
    case Kind::kArray:
      f.phase = kArrOpen;
      return kTaken;
    case Kind::kMap:
      f.phase = kMapOpen;
      return kTaken;
    case Kind::kPattern:
      f.pos = schema_->regexes()[n.regex].start();
      return kTaken;
    case Kind::kInteger:
      if (n.bounded) {
        f.phase = 0;  // see BoundedDigit
        return BoundedDigit(n, f, c) ? kTaken : kRefused;
      }
      f.sub.Feed(c);
      return kTaken;
    case Kind::kNumber:
      if (n.bounded) return BoundedNumberByte(n, f, c) ? kTaken : kRefused;  // phase etc. start at 0
      f.sub.Feed(c);
      return kTaken;
    case Kind::kLiterals:
      for (size_t i = 0; i < n.literals.size(); ++i) {
        if (static_cast<uint8_t>(n.literals[i][0]) == c) f.candidates |= uint64_t{1} << i;
      }
      f.pos = 1;
      return kTaken;
    default:
      f.sub.Feed(c);  // a first byte of this kind: always taken
      return kTaken;
  }
}

SchemaGrammar::Result SchemaGrammar::FeedFrame(uint8_t c) {
  const auto take_whitespace = [&] { return TakeWhitespace(c, &whitespace_) ? kTaken : kRefused; };
  if (depth_ == 0) {
    if (IsWhitespace(c)) return take_whitespace();
    if (done_) return kRefused;
    return StartValue(schema_->root(), c);
  }
  Frame& f = frames()[depth_ - 1];
  const Node& n = NodeOf(f);
  // Closes the top frame after it took its last byte (a container's bracket, a string's quote).
  const auto close = [&] {
    PopValue();
    return kTaken;
  };
  switch (n.kind) {
    case Kind::kObject: {
      // Keys from property f.pos on, skipping optional ones only.
      const auto key_candidates = [&] {
        uint64_t m = 0;
        for (size_t i = f.pos; i < n.properties.size(); ++i) {
          m |= uint64_t{1} << i;
          if (n.properties[i].required) break;
        }
        return m;
      };
      const auto may_close = [&] {
        for (size_t i = f.pos; i < n.properties.size(); ++i) {
          if (n.properties[i].required) return false;
        }
        return true;
      };
      switch (f.phase) {
        case kObjOpen:
        case kObjNext:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}' && f.phase == kObjOpen) return may_close() ? close() : kRefused;
          if (c != '"' || key_candidates() == 0) return kRefused;
          f.candidates = key_candidates();
          f.phase = kObjKey;
          f.prop = 1;  // key bytes matched (the opening quote)
          return kTaken;
        case kObjKey: {
          uint64_t next = 0;
          for (uint64_t m = f.candidates; m != 0; m &= m - 1) {
            const int i = __builtin_ctzll(m);
            const std::string& key = n.properties[i].key;
            if (key.size() > f.prop && static_cast<uint8_t>(key[f.prop]) == c) next |= uint64_t{1} << i;
          }
          if (next == 0) return kRefused;
          f.candidates = next;
          ++f.prop;
          for (uint64_t m = next; m != 0; m &= m - 1) {
            const int i = __builtin_ctzll(m);
            if (n.properties[i].key.size() == f.prop) {  // the closing quote: this key
              f.pos = static_cast<uint16_t>(i + 1);
              f.prop = static_cast<uint16_t>(i);
              f.phase = kObjColon;
              if (!n.key_branches.empty()) {  // a union's first key: go on in its branch
                const JsonSchema::Node::KeyBranch b = n.key_branches[i];
                f.node = b.node;
                f.prop = static_cast<uint16_t>(b.property);
                f.pos = static_cast<uint16_t>(b.property + 1);
              }
            }
          }
          return kTaken;
        }
        case kObjColon:
          if (IsWhitespace(c)) return take_whitespace();
          if (c != ':') return kRefused;
          f.phase = kObjValueStart;
          return kTaken;
        case kObjValueStart: {
          if (IsWhitespace(c)) return take_whitespace();
          const int32_t child = n.properties[f.prop].node;
          f.phase = kObjValue;
          return StartValue(child, c);
        }
        case kObjAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}') return may_close() ? close() : kRefused;
          if (c != ',' || key_candidates() == 0) return kRefused;
          f.phase = kObjNext;
          return kTaken;
        default:
          return kRefused;  // kObjValue: the value's frame is above
      }
    }
    case Kind::kPattern: {  // pos: the DFA state; prop: characters; candidates: UTF-8 bytes due
      const ByteRegex& re = schema_->regexes()[n.regex];
      const bool in_character = f.candidates > 0;
      if (!in_character && c == '"') return re.Accepting(f.pos) && f.prop >= n.min_length ? close() : kRefused;
      const int more = in_character ? ((c & 0xC0) == 0x80 ? 0 : -1) : JsonGrammar::Utf8Continuations(c);
      const uint16_t next = re.Next(f.pos, c);
      if (more < 0 || next == ByteRegex::kDead) return kRefused;
      if (!in_character && !CountCharacter(n, c, &f.prop)) return kRefused;
      f.candidates = in_character ? f.candidates - 1 : static_cast<uint64_t>(more);
      f.pos = next;
      return kTaken;
    }
    case Kind::kMap:
      switch (f.phase) {
        case kMapOpen:
        case kMapNext:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}' && f.phase == kMapOpen) return close();
          if (c != '"') return kRefused;
          f.sub = JsonGrammar(true);
          f.sub.Advance(c);
          f.phase = kMapKey;
          return kTaken;
        case kMapKey:
          if (!f.sub.Feed(c)) return kRefused;
          if (f.sub.Complete()) f.phase = kMapColon;
          return kTaken;
        case kMapColon:
          if (IsWhitespace(c)) return take_whitespace();
          if (c != ':') return kRefused;
          f.phase = kMapValueStart;
          return kTaken;
        case kMapValueStart:
          if (IsWhitespace(c)) return take_whitespace();
          f.phase = kMapValue;
          return StartValue(n.items, c);
        case kMapAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == '}') return close();
          if (c != ',') return kRefused;
          f.phase = kMapNext;
          return kTaken;
        default:
          return kRefused;  // kMapValue: the value's frame is above
      }
    case Kind::kArray: {
      // Unique literals: candidates holds the ones written so far. Unique items of a few
      // values: no more items than values.
      const bool may_close = f.pos >= n.min_items;
      const int64_t distinct = schema_->nodes()[n.items].distinct;
      const bool may_add = (n.max_items < 0 || f.pos < n.max_items) && (!n.unique_items || distinct < 0 || f.pos < distinct);
      const auto start_item = [&] {
        f.phase = kArrValue;
        const Result r = StartValue(f.pos < n.prefix_items.size() ? n.prefix_items[f.pos] : n.items, c);
        if (r == kTaken && UniqueLiterals(n)) {
          Frame& item = frames()[depth_ - 1];
          item.candidates &= ~f.candidates;
          if (item.candidates == 0) return kRefused;
        }
        return r;
      };
      switch (f.phase) {
        case kArrOpen:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == ']') return may_close ? close() : kRefused;
          if (!may_add) return kRefused;
          return start_item();
        case kArrAfter:
          if (IsWhitespace(c)) return take_whitespace();
          if (c == ']') return may_close ? close() : kRefused;
          if (c != ',' || !may_add) return kRefused;
          f.phase = kArrNext;
          return kTaken;
        case kArrNext:
          if (IsWhitespace(c)) return take_whitespace();
          return start_item();
        default:
          return kRefused;
      }
    }
    case Kind::kLiterals: {
      uint64_t next = 0;
      bool complete = false;
      for (uint64_t m = f.candidates; m != 0; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        const std::string& lit = n.literals[i];
        if (lit.size() > f.pos && static_cast<uint8_t>(lit[f.pos]) == c) next |= uint64_t{1} << i;
        if (lit.size() == f.pos) complete = true;
      }
      if (next != 0) {
        f.candidates = next;
        ++f.pos;
        return kTaken;
      }
      return complete ? kEnded : kRefused;
    }
    case Kind::kNumber:
      if (n.bounded) {
        if ((c >= '0' && c <= '9') || c == '.' || c == '-') return BoundedNumberByte(n, f, c) ? kTaken : kRefused;
        if (c == 'e' || c == 'E') return kRefused;
        return BoundedNumberEnds(n, f) ? kEnded : kRefused;
      }
      [[fallthrough]];  // to the embedded grammar (kInteger's bounds are not this node's)
    case Kind::kInteger:
      if (n.bounded) {
        if (c >= '0' && c <= '9') return BoundedDigit(n, f, c) ? kTaken : kRefused;
        if (c == '.' || c == 'e' || c == 'E' || f.pos == 0) return kRefused;
        const int64_t v = f.phase ? -static_cast<int64_t>(f.candidates) : static_cast<int64_t>(f.candidates);
        return v >= n.min_value && v <= n.max_value && v % n.multiple_of == 0 ? kEnded : kRefused;
      }
      [[fallthrough]];
    default: {  // a string, a number or a free-form value, in the embedded grammar
      if (f.sub.Complete()) return kEnded;
      if (n.kind == Kind::kString && HasLength(n) && f.sub.InPlainString()) {
        // Outside escapes: a quote ends the string, a lead byte or a backslash starts a
        // character (an escape's other bytes and UTF-8 continuation bytes do not).
        if (c == '"' && f.prop < n.min_length) return kRefused;
        if (c != '"' && !CountCharacter(n, c, &f.prop)) return kRefused;
      }
      // Whitespace after a whole number ends it: the parent reads the run (one count for it).
      if (IsWhitespace(c) && f.sub.CanEnd()) return kEnded;
      const bool integer_refuses = n.kind == Kind::kInteger && (c == '.' || c == 'e' || c == 'E');
      if (!integer_refuses && f.sub.Feed(c)) {
        // A closed string or container ends the value now; a number waits for the next byte.
        if (f.sub.Complete() && !IsWhitespace(c)) return close();
        return kTaken;
      }
      return f.sub.CanEnd() ? kEnded : kRefused;
    }
  }
}

}  // namespace peng
