#include "engine/tokenizer_unicode.h"

#include <array>

namespace peng {
namespace {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 324> cp_to_byte;  // every mapped code point is < 256 + 68

  ByteLevelTables() {
    cp_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : next++;
      AppendUtf8(cp, &byte_to_utf8[b]);
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = new ByteLevelTables();
  return *tables;
}

// Returns the length of the maximal well-formed prefix of a character at the start of `s`
// (Unicode Table 3-7), the character's full length in `need`.
size_t WellFormedPrefix(std::string_view s, size_t* need) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 < 0x80) { *need = 1; return 1; }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    *need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    *need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    *need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *need = 1;
    return 0;
  }
  size_t n = 1;
  while (n < *need && n < s.size()) {
    const auto b = static_cast<uint8_t>(s[n]);
    if (b < lo || b > hi) break;
    lo = 0x80;
    hi = 0xBF;
    ++n;
  }
  return n;
}

}  // namespace

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t ValidUtf8CharLen(std::string_view s, bool* incomplete) {
  if (incomplete != nullptr) *incomplete = false;
  if (s.empty()) return 0;
  size_t need = 0;
  const size_t n = WellFormedPrefix(s, &need);
  if (n == need) return n;
  if (incomplete != nullptr && n > 0 && n == s.size()) *incomplete = true;
  return 0;
}

size_t NextUtf8Unit(std::string_view s) {
  if (s.empty()) return 0;
  size_t need = 0;
  const size_t n = WellFormedPrefix(s, &need);
  return n == 0 ? 1 : n;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t len = ValidUtf8CharLen(s);
    if (len > 0) {
      out.append(s.substr(0, len));
    } else {
      out.append(kReplacementChar);
    }
    s.remove_prefix(len > 0 ? len : NextUtf8Unit(s));
  }
  return out;
}

size_t AppendCompleteUtf8(std::string_view s, std::string* out) {
  while (!s.empty()) {
    bool incomplete = false;
    const size_t len = ValidUtf8CharLen(s, &incomplete);
    if (incomplete) return s.size();
    if (len > 0) {
      out->append(s.substr(0, len));
    } else {
      out->append(kReplacementChar);
    }
    s.remove_prefix(len > 0 ? len : NextUtf8Unit(s));
  }
  return 0;
}

std::string_view ByteToUnicode(uint8_t byte) { return Tables().byte_to_utf8[byte]; }

int UnicodeToByte(uint32_t cp) {
  return cp < Tables().cp_to_byte.size() ? Tables().cp_to_byte[cp] : -1;
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = from.empty() ? std::string_view::npos : s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

uint32_t DecodeUtf8(const char* p, size_t len) {
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  switch (len) {
    case 1: return u[0];
    case 2: return ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu);
    case 3: return ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
    default:
      return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) |
             (u[3] & 0x3Fu);
  }
}

}  // namespace peng
