#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/check.h"
#include "base/status.h"
#include "kernels/cpu/ops.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace peng {
namespace {

// top-p sorts this many most likely tokens first, and finishes by sorting a range this small.
constexpr int64_t kTopPSortedHead = 64;
// Candidate filters: tokens at least this many times less likely than the most likely one
// are left out of the top-p search when the rest hold the nucleus (within 9.2 nats of the
// best), and out of the top-k selection when k tokens remain (within 18.4 nats). Both only
// narrow where the search looks; the sets chosen are the same (sampler_test.cc).
constexpr float kTopPCandidateWeight = 1e-4f;
constexpr float kTopKCandidateWeight = 1e-8f;
// The same for the top alternatives logprobs report (18.4 nats: weight 1e-8).
constexpr float kLogprobCandidateNats = 18.42f;

// Strict total order on token ids: higher logit first, then lower id. Every selection and
// sort uses it, so candidate sets and their order do not depend on the algorithm's tie luck.
struct MoreLikely {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// absl::string_view: Debian's Abseil does not alias it to std::string_view.
absl::Status OutOfRange(absl::string_view param, double value, absl::string_view range) {
  return absl::InvalidArgumentError(
      absl::StrCat(param, " must be in ", range, ", got ", value));
}

}  // namespace

absl::Status SamplingParams::Validate(int vocab_size) const {
  // Comparisons are written so that NaN fails them.
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be > 0, got ", vocab_size));
  }
  if (!(temperature >= 0.0f) || std::isinf(temperature)) {
    return OutOfRange("temperature", temperature, "[0, inf)");
  }
  if (top_k < -1) return OutOfRange("top_k", top_k, "{-1, 0, 1, 2, ...} (-1 or 0 = off)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", top_p, "(0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return OutOfRange("min_p", min_p, "[0, 1]");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", presence_penalty, "[-2, 2]");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", frequency_penalty, "[-2, 2]");
  }
  if (!(repetition_penalty > 0.0f) || std::isinf(repetition_penalty)) {
    return OutOfRange("repetition_penalty", repetition_penalty, "(0, inf)");
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "logit_bias token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return OutOfRange(absl::StrCat("logit_bias[", id, "]"), bias, "[-100, 100]");
    }
  }
  if (logprobs < -1 || logprobs > vocab_size) {
    return OutOfRange("logprobs", logprobs, absl::StrCat("[-1, ", vocab_size, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params, int vocab_size,
                                        std::span<const int32_t> prompt_ids) {
  PENG_RETURN_IF_ERROR(params.Validate(vocab_size));
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] < 0 || prompt_ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", prompt_ids[i],
                                                     " at position ", i,
                                                     " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
  }
  uint64_t seed;
  if (params.seed.has_value()) {
    seed = *params.seed;
  } else {
    std::random_device device;
    seed = (uint64_t{device()} << 32) ^ device();
  }
  Sampler sampler(params, vocab_size, seed);
  if (sampler.has_penalties()) {
    for (int32_t id : prompt_ids) sampler.history_[id].in_prompt = true;
  }
  return sampler;
}

Sampler::Sampler(const SamplingParams& params, int vocab_size, uint64_t seed)
    : params_(params), vocab_size_(vocab_size), seed_(seed), rng_(seed) {}

bool Sampler::has_penalties() const {
  return params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
         params_.frequency_penalty != 0.0f;
}

void Sampler::Accept(int32_t id) {
  PENG_CHECK(id >= 0 && id < vocab_size_);
  ++accepted_;
  if (has_penalties()) ++history_[id].generated;
  if (constraint_ != nullptr) constraint_->Accept(id);
}

void Sampler::ApplyPenaltiesAndBias(std::span<float> logits) const {
  PENG_CHECK(static_cast<int64_t>(logits.size()) == vocab_size_);
  for (const auto& [id, bias] : params_.logit_bias) logits[id] += bias;
  if (!has_penalties()) return;
  const float rep = params_.repetition_penalty;
  for (const auto& [id, history] : history_) {
    float& logit = logits[id];
    if (rep != 1.0f) logit = logit > 0.0f ? logit / rep : logit * rep;
    if (history.generated > 0) {
      logit -= params_.presence_penalty +
               params_.frequency_penalty * static_cast<float>(history.generated);
    }
  }
}

SampledToken Sampler::Sample(std::span<const float> logits) {
  return Sample(logits, own_scratch_);
}

SampledToken Sampler::Sample(std::span<const float> logits, SamplingScratch& scratch) {
  PENG_CHECK(static_cast<int64_t>(logits.size()) == vocab_size_);
  const bool banning = accepted_ < ban_until_ && !banned_.empty();
  if (params_.greedy() && params_.logit_bias.empty() && !has_penalties() && params_.logprobs < 0 &&
      constraint_ == nullptr && !banning) {
    // Nothing changes the row: its argmax as given, without copying 49K floats per token.
    const int32_t id = static_cast<int32_t>(kernels::ArgMax(logits.data(), vocab_size_));
    return {.id = std::isfinite(logits[id]) ? id : -1, .logprob = std::numeric_limits<float>::quiet_NaN()};
  }
  scratch.logits.assign(logits.begin(), logits.end());
  scratch.weights.resize(vocab_size_);
  scratch.order.resize(vocab_size_);
  ApplyPenaltiesAndBias(scratch.logits);
  if (constraint_ != nullptr) constraint_->Mask(scratch.logits);
  if (banning) {
    bool other = false;  // a token outside the banned ones that may still come
    for (int32_t id = 0; id < vocab_size_ && !other; ++id) {
      other = std::isfinite(scratch.logits[id]) && std::find(banned_.begin(), banned_.end(), id) == banned_.end();
    }
    if (other) {
      for (const int32_t id : banned_) scratch.logits[id] = -std::numeric_limits<float>::infinity();
    }
  }

  SampledToken result;
  if (params_.greedy()) {
    const float* l = scratch.logits.data();
    // max_element returns the first maximum: ties go to the lowest id.
    result.id = static_cast<int32_t>(std::max_element(l, l + vocab_size_) - l);
    if (!std::isfinite(l[result.id])) result.id = -1;
  } else {
    if (params_.temperature != 1.0f) {
      for (float& logit : scratch.logits) logit /= params_.temperature;
    }
    result.id = DrawToken(scratch);
  }
  if (result.id < 0) return result;
  if (params_.logprobs >= 0) {
    ComputeLogprobs(scratch, result);
  } else {
    result.logprob = std::numeric_limits<float>::quiet_NaN();
  }
  return result;
}

int32_t Sampler::DrawToken(SamplingScratch& scratch) {
  const float* logits = scratch.logits.data();
  float* weights = scratch.weights.data();
  std::vector<int32_t>& order = scratch.order;
  const MoreLikely more_likely{logits};
  const auto all_ids = [&] { std::iota(order.begin(), order.end(), 0); };

  // Every token's weight exp(logit - max) in one vector pass. The most likely token (weight
  // exactly 1) survives every filter below, so these are the weights of any surviving set.
  float max_logit;
  const double all_mass = kernels::ExpShiftedRow(logits, vocab_size_, weights, &max_logit);
  // Bias is bounded; a forward that overflowed (inf or NaN logits) is the caller's to report.
  if (!std::isfinite(max_logit)) return -1;

  // top-k: the k most likely ids, unsorted, at the front. Weights are monotone in logits, so
  // when at least k tokens weigh kTopKCandidateWeight or more, the k most likely are among
  // them: the selection then runs over those (a few thousand ids) instead of the vocabulary.
  int64_t n = vocab_size_;
  bool ordered = false;  // order[0, n) holds the surviving ids
  if (params_.top_k > 0 && params_.top_k < vocab_size_) {
    n = params_.top_k;
    int64_t c = kernels::SelectAtLeast(weights, vocab_size_, kTopKCandidateWeight, order.data());
    if (c < n) {
      all_ids();
      c = vocab_size_;
    }
    std::nth_element(order.begin(), order.begin() + (n - 1), order.begin() + c, more_likely);
    ordered = true;
  }
  double total = all_mass;
  if (ordered) {
    total = 0.0;
    for (int64_t i = 0; i < n; ++i) total += weights[order[i]];
  }

  // top-p: the shortest most-likely-first prefix holding top_p of the mass. Peaked LLM
  // distributions reach it within the first few tokens, so sort those first; otherwise find
  // the cut by a mass-weighted quickselect (expected O(n)) instead of sorting everything.
  // The search runs over [0, hi): without top-k, over the tokens of weight kTopPCandidateWeight
  // or more when they hold the target (they precede every other token, so the prefix lies
  // among them), else over every token. Invariant: [0, lo) precede [lo, hi), which precede
  // [hi, n), and `before` is the mass of [0, lo), which is short of the target.
  if (params_.top_p < 1.0f) {
    const double target = params_.top_p * total;
    int64_t hi = n;
    if (!ordered) {
      double mass;
      const int64_t c = kernels::SelectAtLeast(weights, vocab_size_, kTopPCandidateWeight, order.data(), &mass);
      if (mass >= target) {
        hi = c;
      } else {
        all_ids();
      }
      ordered = true;
    }
    int64_t lo = 0;
    double before = 0.0;
    const auto first = order.begin();
    std::partial_sort(first, first + std::min<int64_t>(hi, kTopPSortedHead), first + hi,
                      more_likely);
    if (hi > kTopPSortedHead) {
      double head = 0.0;
      for (int64_t i = 0; i < kTopPSortedHead; ++i) head += weights[order[i]];
      if (head < target) {
        lo = kTopPSortedHead;
        before = head;
      } else {
        hi = kTopPSortedHead;
      }
    }
    while (hi - lo > kTopPSortedHead) {
      const int64_t mid = lo + (hi - lo) / 2;
      std::nth_element(first + lo, first + mid, first + hi, more_likely);
      double mass = 0.0;
      for (int64_t i = lo; i <= mid; ++i) mass += weights[order[i]];
      if (before + mass >= target) {
        hi = mid + 1;
      } else {
        before += mass;
        lo = mid + 1;
      }
    }
    std::sort(first + lo, first + hi, more_likely);  // no-op on the sorted head
    int64_t i = lo;
    while (i < hi && (before += weights[order[i]]) < target) ++i;
    n = std::min(i + 1, hi);  // i == hi only by rounding: keep the whole range
  }
  // min-p: weights are relative to the most likely token (weight exactly 1), which survives.
  if (!ordered) {
    if (params_.min_p <= 0.0f) return DrawFromAll(weights, scratch);
    n = kernels::SelectAtLeast(weights, vocab_size_, params_.min_p, order.data());  // in id order
  } else if (params_.min_p > 0.0f) {
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (weights[order[i]] >= params_.min_p) order[kept++] = order[i];
    }
    n = kept;
  }

  // Inverse CDF over the survivors, summed in the same order as the draw so u < total holds.
  total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += weights[order[i]];
  const double u = Uniform01() * total;
  double cumulative = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    cumulative += weights[order[i]];
    if (u < cumulative) return order[i];
  }
  PENG_CHECK(false);  // unreachable: u < total and the sums match
  return order[n - 1];
}

namespace {

// result.logprob = logits[result.id] - log_z, and the k most likely tokens of `logits` (n).
void FillLogprobs(const float* logits, int32_t n, int32_t k, float log_z, float best,
                  std::vector<int32_t>& order, SampledToken& result) {
  result.logprob = logits[result.id] - log_z;
  k = std::min(k, n);
  if (k <= 0) return;
  // The k most likely among the tokens within kLogprobCandidateNats of the best, when k of them
  // exist (they precede all others); else among all.
  order.resize(n);
  int64_t candidates = kernels::SelectAtLeast(logits, n, best - kLogprobCandidateNats, order.data());
  if (candidates < k) {
    std::iota(order.begin(), order.end(), 0);
    candidates = n;
  }
  std::partial_sort(order.begin(), order.begin() + k, order.begin() + candidates, MoreLikely{logits});
  result.top_logprobs.reserve(k);
  // Banned tokens (-inf: a constraint's mask) are no alternative: a row with fewer than k
  // possible tokens lists fewer.
  for (int32_t i = 0; i < k && std::isfinite(logits[order[i]]); ++i) {
    result.top_logprobs.emplace_back(order[i], logits[order[i]] - log_z);
  }
}

}  // namespace

SampledToken RawLogprobs(std::span<const float> logits, int32_t id, int32_t k, SamplingScratch& scratch) {
  // One call per prompt token, so the normaliser is vectorised (kernels::LogSumExp): a 500-token
  // scoring request spent ~100 ms in scalar exp before.
  SampledToken result;
  result.id = id;
  const int32_t n = static_cast<int32_t>(logits.size());
  float best;
  const float log_z = kernels::LogSumExp(logits.data(), n, &best);
  FillLogprobs(logits.data(), n, k, log_z, best, scratch.order, result);
  return result;
}

void Sampler::ComputeLogprobs(SamplingScratch& scratch, SampledToken& result) const {
  const float* logits = scratch.logits.data();
  float best;
  const float log_z = kernels::LogSumExp(logits, vocab_size_, &best);
  FillLogprobs(logits, vocab_size_, params_.logprobs, log_z, best, scratch.order, result);
}

int32_t Sampler::DrawFromAll(const float* weights, SamplingScratch& scratch) {
  // By blocks of 16 tokens: the blocks' sums (float, one vector each) and their running total
  // in double find the block, then the tokens inside it. Summing every token's weight in
  // double, in order, twice (the total, then the draw) took ~95 µs per row.
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (vocab_size_ + kBlock - 1) / kBlock;
  scratch.block_sums.resize(blocks);
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * kBlock, hi = std::min<int64_t>(vocab_size_, lo + kBlock);
    float sum = 0.0f;
#if defined(__AVX__)
    if (hi - lo == kBlock) {
      const __m256 a = _mm256_add_ps(_mm256_loadu_ps(weights + lo), _mm256_loadu_ps(weights + lo + 8));
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      sum = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    } else
#endif
    {
      for (int64_t i = lo; i < hi; ++i) sum += weights[i];
    }
    scratch.block_sums[b] = sum;
    total += sum;
  }
  const double u = Uniform01() * total;
  double cumulative = 0.0;
  int64_t b = 0;
  while (b + 1 < blocks && !(u < cumulative + scratch.block_sums[b])) cumulative += scratch.block_sums[b++];
  // Inside the block, summed token by token: by rounding the block may end just short of u,
  // and then its last token of positive weight is drawn (the most likely token weighs 1, so
  // some block has one).
  int32_t last = -1;
  for (int64_t i = b * kBlock; i < std::min<int64_t>(vocab_size_, (b + 1) * kBlock); ++i) {
    if (weights[i] <= 0.0f) continue;
    last = static_cast<int32_t>(i);
    cumulative += weights[i];
    if (u < cumulative) return last;
  }
  if (last >= 0) return last;
  // u landed past a block of zero weights (rounding at the very end): the last token that has weight.
  for (int64_t i = vocab_size_ - 1; i >= 0; --i) {
    if (weights[i] > 0.0f) return static_cast<int32_t>(i);
  }
  PENG_CHECK(false);  // unreachable: the most likely token weighs 1
  return 0;
}

double Sampler::Uniform01() {
  // 53 random bits -> [0, 1). std::uniform_real_distribution is implementation-defined.
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

}  // namespace peng
