// LogitsConstraint: a rule over which tokens may come next in one sequence (JSON mode is the
// one in use), applied by that sequence's Sampler after bias and penalties and advanced by
// every token the sequence keeps. Owned by the Sampler; used from one thread at a time.
// Invariant: Mask() never bans every token (it leaves at least an end-of-generation token).
#pragma once

#include <cstdint>
#include <span>

namespace peng {

class LogitsConstraint {
 public:
  virtual ~LogitsConstraint() = default;
  // Sets the logit of every token that may not come next to -inf.
  virtual void Mask(std::span<float> logits) = 0;
  // Moves past a kept token (one Mask() allowed).
  virtual void Accept(int32_t id) = 0;
};

}  // namespace peng
