// Pieces shared by the peng subcommands: loading a model with a progress bar, one-line errors.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "engine/model.h"
#include "memory/kv_manager.h"
#include "server/config.h"

namespace peng::cli {

inline constexpr char kDefaultModel[] = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

// Loads the model, drawing a progress bar on stderr while layers load.
absl::StatusOr<std::unique_ptr<Model>> LoadModelWithProgress(const std::string& path);

// Prints "peng <command>: <message>" to stderr and returns the exit code for errors (2 for bad
// arguments, 1 otherwise).
int Fail(const char* command, const absl::Status& status);

// The KV manager options of a config's engine and kv sections (budget, mode, formats, LeanKV
// thresholds). Prefix caching is off in leankv mode (memory/README.md).
memory::KvManagerOptions KvOptionsOf(const ServeConfig& config);

// --activations int8 | f32 (default `def`): whether the CPU matmuls quantize activations to int8
// (ForwardOptions::int8_activations).
absl::StatusOr<bool> Int8ActivationsFlag(const Flags& f, bool def = true);

}  // namespace peng::cli
