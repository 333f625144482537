// Writes float32 arrays as NumPy .npy (format 1.0) for tests and references to read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace peng::cli {

absl::Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace peng::cli
