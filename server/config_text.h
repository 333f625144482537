// How config values are spelled: byte sizes ("64MiB"), quoted strings in messages and the
// "did you mean" suggestions of config and flag errors. Used by config.cc; ParseByteSize and
// FormatByteSize are public (config.h includes this header).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peng {

// "; did you mean <prefix>x?" for the candidate closest to `got` within a few edits (case
// ignored), else "".
std::string DidYouMean(const std::string& got, const std::vector<std::string>& candidates,
                       absl::string_view prefix = "");

// `s` in double quotes with C escapes, for messages that show what was read.
std::string Quoted(const std::string& s);

// "64MiB", "1.5 GiB", "512KB", "1048576" -> bytes (binary and decimal units, case-insensitive).
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text);
// Bytes as the largest exact binary unit: 67108864 -> "64MiB", 1000 -> "1000".
std::string FormatByteSize(int64_t bytes);

}  // namespace peng
