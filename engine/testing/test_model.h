// Test helper: the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf under the source tree
// given by PENG_SOURCE_DIR), loaded once per test binary. Tests skip when it is absent.
#pragma once

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "engine/model.h"

namespace peng::testing {

inline std::string SmolLM2Path() {
  const char* src = std::getenv("PENG_SOURCE_DIR");
  return std::string(src ? src : ".") + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// The shared model, or null when the file is not there (or fails to load: the loading tests
// report that). Mutable so tests can drop and reload layers; restore what you change.
inline Model* SharedSmolLM2() {
  static Model* model = [] {
    if (!std::ifstream(SmolLM2Path()).good()) return static_cast<Model*>(nullptr);
    auto m = LoadModel(SmolLM2Path());
    return m.ok() ? std::move(*m).release() : nullptr;
  }();
  return model;
}

}  // namespace peng::testing
