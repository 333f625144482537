// Sampler: turns one row of model logits into the next token of one request, applying the
// request's SamplingParams (logit bias, repetition/presence/frequency penalties, temperature,
// top-k, top-p, min-p) with a per-request seeded RNG. One Sampler per request, owned by the
// engine loop; not thread-safe. Key invariant: the same params, seed, prompt, accepted tokens
// and logits give the same tokens on every run of the same binary.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/logits_constraint.h"

namespace peng {

// Below this temperature sampling is greedy (as in vLLM): dividing by a tiny T overflows.
inline constexpr float kGreedyTemperature = 1e-5f;

// What a client asked for; defaults are "off". Checked once at the edge with Validate().
struct SamplingParams {
  float temperature = 1.0f;         // 0 (or < kGreedyTemperature) = greedy argmax
  int32_t top_k = -1;               // <= 0 = off; >= vocab size is also off
  float top_p = 1.0f;               // (0, 1]; 1 = off
  float min_p = 0.0f;               // [0, 1]; 0 = off; relative to the most likely token
  float repetition_penalty = 1.0f;  // > 0; 1 = off. HF/vLLM: over prompt + generated tokens
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI: over generated tokens only
  float frequency_penalty = 0.0f;   // [-2, 2]; OpenAI: over generated tokens only
  absl::flat_hash_map<int32_t, float> logit_bias;  // token id -> additive bias in [-100, 100]
  std::optional<uint64_t> seed;     // unset = a fresh random seed per request
  int32_t logprobs = -1;            // -1 none; 0 chosen token only; k: plus top-k alternatives

  bool greedy() const { return temperature < kGreedyTemperature; }

  // InvalidArgument naming the parameter for every value outside the ranges above (the
  // OpenAI/vLLM 400 set), for logit_bias ids outside [0, vocab_size) and for logprobs outside
  // [-1, vocab_size]. The server may impose a tighter logprobs cap (OpenAI allows 20).
  absl::Status Validate(int vocab_size) const;
};

struct SampledToken {
  int32_t id = -1;  // -1: the row had no finite maximum (the model overflowed); nothing was drawn
  // Log-probability of `id`; NaN when params.logprobs == -1 (not computed).
  float logprob = 0.0f;
  // The params.logprobs most likely tokens, most likely first (ties: lower id first). The
  // chosen token appears here too when it is among them (OpenAI's `top_logprobs`). Banned
  // tokens (logit -inf, e.g. outside JSON mode's grammar) are left out, so there may be fewer.
  std::vector<std::pair<int32_t, float>> top_logprobs = {};
};

// Vocab-sized buffers reused across Sample() calls. One per sampling thread: the engine loop
// keeps one per thread that draws and passes it to every request's Sampler, so memory does
// not grow with the number of requests (~3 x 4 bytes x vocab). Sample(logits) without one
// uses a Sampler-owned copy.
struct SamplingScratch {
  std::vector<float> logits;    // processed logits, by token id
  std::vector<float> weights;   // exp(logit - max) of the candidates, by token id
  std::vector<int32_t> order;   // candidate token ids; the front is partially sorted
  std::vector<float> block_sums;  // the draw over every token: weights summed 16 at a time
};

// Log-probability of `id` under the raw model `logits` (log-softmax, no sampling params) and
// the k most likely tokens (ties: lower id first): what prompt logprobs report, since scoring
// text asks what the model predicts, not what a request would sample. `scratch.order` is
// reused; O(V) plus a partial sort of k.
SampledToken RawLogprobs(std::span<const float> logits, int32_t id, int32_t k, SamplingScratch& scratch);

class Sampler {
 public:
  // Validates `params` (see SamplingParams::Validate) and the prompt ids against vocab_size.
  static absl::StatusOr<Sampler> Create(const SamplingParams& params, int vocab_size,
                                        std::span<const int32_t> prompt_ids);

  Sampler(Sampler&&) = default;
  Sampler& operator=(Sampler&&) = default;

  // Picks the next token from `logits` (exactly vocab_size entries, finite or -inf).
  //
  // Pipeline: logit_bias -> repetition, presence, frequency penalties -> greedy argmax when
  // params.greedy() (ties: lowest id) -> / temperature -> top-k -> top-p -> min-p -> draw.
  // top-p's mass is measured over the top-k survivors; min-p keeps tokens whose probability is
  // at least min_p times the most likely one's. A non-greedy call draws one 53-bit uniform
  // from the request's mt19937_64, so same seed + same inputs = same token sequence.
  //
  // Logprobs (params.logprobs >= 0) are log-softmax of the *processed* logits: after bias,
  // penalties and temperature (T = 1 when greedy), before the top-k/top-p/min-p truncation.
  // So they describe the distribution the request actually samples from (not vLLM's default
  // of raw model logits), and every vocabulary token has a finite logprob unless banned.
  //
  // Sample() does not record the token: the caller calls Accept(id) for every token it keeps
  // (the engine may drop a sampled token, e.g. on abort, or force one).
  //
  // Cost: O(V). top-k is an nth_element; top-p partially sorts the 64 most likely tokens and,
  // when they hold less than top_p, finds the cut with a mass-weighted quickselect (expected
  // O(V), no full sort). No allocation once the scratch buffers have grown to V.
  SampledToken Sample(std::span<const float> logits, SamplingScratch& scratch);
  SampledToken Sample(std::span<const float> logits);

  // Records a generated token for the penalties (and the constraint). `id` must be in
  // [0, vocab_size).
  void Accept(int32_t id);

  // Restricts every later draw to the tokens `constraint` allows (JSON mode): it masks the
  // logits after bias and penalties, so logprobs describe the constrained distribution.
  void SetConstraint(std::unique_ptr<LogitsConstraint> constraint) { constraint_ = std::move(constraint); }
  const LogitsConstraint* constraint() const { return constraint_.get(); }

  // vLLM's min_tokens: until `tokens` tokens are accepted, `ids` (the end-of-generation and
  // stop token ids) are banned, after the constraint's mask, unless that would ban every
  // token (a constraint that only lets the output end).
  void BanUntil(int64_t tokens, std::vector<int32_t> ids) {
    ban_until_ = tokens;
    banned_ = std::move(ids);
  }

  // Applies logit_bias, then the repetition penalty (logit > 0 ? logit / p : logit * p) over
  // prompt + accepted tokens, then logit -= presence * (count > 0) + frequency * count over
  // accepted tokens. In place; exposed for tests. Touches only the tokens concerned.
  void ApplyPenaltiesAndBias(std::span<float> logits) const;

  const SamplingParams& params() const { return params_; }
  int vocab_size() const { return vocab_size_; }
  uint64_t seed() const { return seed_; }

 private:
  struct TokenHistory {
    int32_t generated = 0;   // times accepted as output
    bool in_prompt = false;
  };

  Sampler(const SamplingParams& params, int vocab_size, uint64_t seed);

  bool has_penalties() const;
  // Fills result.logprob and result.top_logprobs from the processed logits.
  void ComputeLogprobs(SamplingScratch& scratch, SampledToken& result) const;
  // Runs top-k, top-p and min-p over scratch.logits and draws a token.
  int32_t DrawToken(SamplingScratch& scratch);
  // The inverse-CDF draw over every token, when no filter left any out.
  int32_t DrawFromAll(const float* weights, SamplingScratch& scratch);
  double Uniform01();

  SamplingParams params_;
  int vocab_size_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  // Tokens seen in the prompt or output; filled only when a penalty is active.
  absl::flat_hash_map<int32_t, TokenHistory> history_;
  std::unique_ptr<LogitsConstraint> constraint_;
  int64_t accepted_ = 0;     // tokens accepted so far
  int64_t ban_until_ = 0;    // BanUntil
  std::vector<int32_t> banned_;
  SamplingScratch own_scratch_;
};

}  // namespace peng
