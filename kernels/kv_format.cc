#include "kernels/kv_format.h"

#include <array>
#include <string>

namespace peng::kernels {
namespace {

// Every quantized code's name, built once.
const std::array<std::string, 256>& QuantNames() {
  static const auto* names = [] {
    auto* n = new std::array<std::string, 256>;
    for (int code = 0; code < 256; ++code) {
      const KvQuant q = QuantOf(static_cast<KvFormat>(0x100 | code));
      if (!ValidKvQuant(q)) continue;
      const bool defaults = q.k_groups == DefaultKvGroups(q.k_bits) && q.v_groups == DefaultKvGroups(q.v_bits);
      (*n)[code] = defaults ? "k" + std::to_string(q.k_bits) + "v" + std::to_string(q.v_bits)
                            : "k" + std::to_string(q.k_bits) + "g" + std::to_string(q.k_groups) + "v" +
                                  std::to_string(q.v_bits) + "g" + std::to_string(q.v_groups);
    }
    return n;
  }();
  return *names;
}

// Reads a decimal number at s[*i]; false if there is none.
bool Number(std::string_view s, size_t* i, int* out) {
  if (*i >= s.size() || s[*i] < '0' || s[*i] > '9') return false;
  int v = 0;
  while (*i < s.size() && s[*i] >= '0' && s[*i] <= '9' && v < 1000) v = v * 10 + (s[(*i)++] - '0');
  *out = v;
  return true;
}

// <letter><bits>[g<groups>] starting at s[*i].
bool Part(std::string_view s, size_t* i, char letter, int* bits, int* groups) {
  if (*i >= s.size() || s[*i] != letter) return false;
  ++*i;
  if (!Number(s, i, bits)) return false;
  *groups = DefaultKvGroups(*bits);
  if (*i < s.size() && s[*i] == 'g') {
    ++*i;
    return Number(s, i, groups);
  }
  return true;
}

}  // namespace

const char* KvFormatName(KvFormat f) {
  switch (f) {
    case KvFormat::kF32: return "f32";
    case KvFormat::kF16: return "f16";
    case KvFormat::kBF16: return "bf16";
    case KvFormat::kQuantAny: return "quant-any";
    default: break;
  }
  const uint16_t c = static_cast<uint16_t>(f);
  if (IsQuantized(f) && c < 0x200 && !QuantNames()[c & 0xff].empty()) return QuantNames()[c & 0xff].c_str();
  return "?";
}

bool ParseKvFormat(std::string_view name, KvFormat* out) {
  for (KvFormat f : {KvFormat::kF32, KvFormat::kF16, KvFormat::kBF16}) {
    if (name == KvFormatName(f)) {
      *out = f;
      return true;
    }
  }
  KvQuant q;
  size_t i = 0;
  if (!Part(name, &i, 'k', &q.k_bits, &q.k_groups) || !Part(name, &i, 'v', &q.v_bits, &q.v_groups) ||
      i != name.size() || !ValidKvQuant(q)) {
    return false;
  }
  *out = QuantFormat(q);
  return true;
}

}  // namespace peng::kernels
