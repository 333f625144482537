// Status propagation helpers used at every module boundary (absl::Status / StatusOr).
// Abseil's own RETURN_IF_ERROR macros are newer than the Debian 12 package, so they live here.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define PENG_CONCAT_INNER_(a, b) a##b
#define PENG_CONCAT_(a, b) PENG_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` yields a non-OK status.
#define PENG_RETURN_IF_ERROR(expr)                     \
  do {                                                 \
    ::absl::Status peng_status_ = (expr);              \
    if (!peng_status_.ok()) return peng_status_;       \
  } while (0)

// `lhs = value of expr` or return its error status.
#define PENG_ASSIGN_OR_RETURN(lhs, expr) \
  PENG_ASSIGN_OR_RETURN_IMPL_(PENG_CONCAT_(peng_statusor_, __LINE__), lhs, expr)
#define PENG_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

namespace peng {

// Prefixes `context: ` to the message of a non-OK status, keeping its code.
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace peng
