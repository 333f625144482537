// ReadJsonFile: a whole JSON file parsed with nlohmann::json, its exceptions turned into a
// Status naming the file (NotFound when it cannot be opened, InvalidArgument when malformed).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace peng {

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace peng
