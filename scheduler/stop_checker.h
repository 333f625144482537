// StopChecker: turns one sequence's generated tokens into text deltas and decides when it stops.
// Detokenizes incrementally (never emits broken UTF-8), holds back text that could be the start
// of a stop string so a match is never half-emitted, and never emits the stop string itself
// unless asked. Owned by one sequence; used on the engine thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "engine/tokenizer.h"
#include "scheduler/request.h"

namespace peng {

class StopChecker {
 public:
  // `tokenizer` may be null (tests without a model): then no text is produced and only token
  // conditions apply.
  StopChecker(const Tokenizer* tokenizer, const StopConditions& stop);

  struct Step {
    std::string text;                              // to emit now
    FinishReason finish = FinishReason::kNone;
  };
  // Feeds the newly generated token; `num_generated` counts it.
  Step Push(int32_t token, int64_t num_generated);

 private:
  const Tokenizer* tokenizer_;
  const StopConditions& stop_;
  std::optional<IncrementalDecoder> decoder_;
  std::string pending_;  // decoded text held back as a possible stop-string prefix
};

}  // namespace peng
