#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"

namespace peng {
namespace {

using ::testing::HasSubstr;

Sampler MakeSampler(const SamplingParams& params, int vocab_size,
                    std::vector<int32_t> prompt = {}) {
  absl::StatusOr<Sampler> sampler = Sampler::Create(params, vocab_size, prompt);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return std::move(sampler).value();
}

std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p;
  double sum = 0;
  for (float l : logits) sum += p.emplace_back(std::exp((l - max) / temperature));
  for (double& x : p) x /= sum;
  return p;
}

std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(logits).id];
  return counts;
}

// Pearson's chi-square of observed counts against expected probabilities (cells with p > 0).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probs) {
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] <= 0) continue;
    const double expected = n * probs[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

// Critical value well above chi-square(df <= 4) at p = 1e-4 (18.5); seeds are fixed, so a
// failure means a wrong distribution, not bad luck.
constexpr double kChiSquareBound = 25.0;

std::vector<float> RandomLogits(int vocab_size, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(vocab_size);
  for (float& l : logits) l = normal(rng);
  return logits;
}

// Token ids sorted most likely first (ties: lower id), the sampler's documented order.
std::vector<int32_t> ByLikelihood(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return ids;
}

TEST(SamplerTest, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = 3;  // truncation never changes the argmax
  params.top_p = 0.5f;
  Sampler sampler = MakeSampler(params, 5000);
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::vector<float> logits = RandomLogits(5000, seed, 3.0f);
    const int32_t argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(sampler.Sample(logits).id, argmax);
  }
  std::vector<float> ties(5000, 0.0f);
  ties[17] = ties[4000] = 1.0f;
  EXPECT_EQ(sampler.Sample(ties).id, 17);
}

// A row without a finite maximum (a model that overflowed) draws nothing, on every path.
TEST(SamplerTest, NonFiniteRowsGiveNoToken) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> logits(5000, bad);
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    SamplingParams greedy_logprobs = greedy;
    greedy_logprobs.logprobs = 2;
    SamplingParams sampled;
    sampled.temperature = 0.8f;
    sampled.top_p = 0.9f;
    SamplingParams sampled_logprobs = sampled;
    sampled_logprobs.logprobs = 2;
    for (const SamplingParams& params : {greedy, greedy_logprobs, sampled, sampled_logprobs}) {
      Sampler sampler = MakeSampler(params, 5000);
      EXPECT_EQ(sampler.Sample(logits).id, -1) << bad << " temperature " << params.temperature;
    }
  }
  // One NaN in an otherwise finite row: the row has a finite maximum, and the draw gives the
  // NaN no weight.
  std::vector<float> one_nan = RandomLogits(5000, 7);
  one_nan[123] = std::numeric_limits<float>::quiet_NaN();
  SamplingParams sampled;
  sampled.temperature = 0.8f;
  Sampler sampler = MakeSampler(sampled, 5000);
  for (int i = 0; i < 200; ++i) {
    const int32_t id = sampler.Sample(one_nan).id;
    EXPECT_TRUE(id >= 0 && id != 123) << id;
  }
}

TEST(SamplerTest, GreedyWithoutAndWithLogprobsPicksTheSameToken) {
  // Without logprobs, penalties or bias, greedy takes the row's argmax in place (ArgMax); with
  // logprobs it goes through the processed copy. Sizes cover vector tails; ties straddle them.
  for (int vocab : {1, 15, 16, 17, 49152, 49157}) {
    SamplingParams plain;
    plain.temperature = 0.0f;
    SamplingParams with_logprobs = plain;
    with_logprobs.logprobs = 0;
    Sampler a = MakeSampler(plain, vocab), b = MakeSampler(with_logprobs, vocab);
    for (uint64_t seed = 1; seed <= 5; ++seed) {
      std::vector<float> logits = RandomLogits(vocab, seed, 3.0f);
      if (vocab > 20) logits[vocab - 1] = logits[3] = 100.0f;  // a tie: the lower id wins
      const int32_t want = std::max_element(logits.begin(), logits.end()) - logits.begin();
      EXPECT_EQ(a.Sample(logits).id, want) << vocab;
      EXPECT_EQ(b.Sample(logits).id, want) << vocab;
      EXPECT_TRUE(std::isnan(a.Sample(logits).logprob));
    }
  }
  std::vector<float> low(40, -std::numeric_limits<float>::infinity());
  low[33] = -1e30f;
  EXPECT_EQ(kernels::ArgMax(low.data(), 40), 33);
  low[33] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(kernels::ArgMax(low.data(), 40), 0);
}

TEST(SamplerTest, TinyTemperatureIsGreedy) {
  SamplingParams params;
  params.temperature = 1e-7f;
  Sampler sampler = MakeSampler(params, 4);
  std::vector<float> logits = {1.0f, 1.0001f, 0.9f, -3.0f};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sampler.Sample(logits).id, 1);
}

TEST(SamplerTest, TopPNeverSamplesOutsideNucleusAndKeepsProportions) {
  SamplingParams params;
  params.top_p = 0.8f;  // cumulative 0.5, 0.7, 0.85 -> nucleus {0, 1, 2}
  params.seed = 7;
  Sampler sampler = MakeSampler(params, 5);
  std::vector<int> counts =
      Histogram(sampler, LogitsFromProbs({0.5, 0.2, 0.15, 0.1, 0.05}), 20000);
  EXPECT_EQ(counts[3], 0);
  EXPECT_EQ(counts[4], 0);
  EXPECT_LT(ChiSquare(counts, {0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0}), kChiSquareBound);
}

TEST(SamplerTest, TopPOnLargeVocabMatchesFullSortReference) {
  // A flat distribution makes the nucleus tens of thousands of tokens: the quickselect path.
  // A peaked one (a few tokens far ahead) ends inside the sorted head of 64.
  constexpr int kVocab = 100000;
  std::vector<float> flat = RandomLogits(kVocab, 11, 1.0f);
  std::vector<float> peaked = flat;
  for (int id : {5, 500, 50000}) peaked[id] += 12.0f;
  for (const auto& [logits, top_p] : std::vector<std::pair<std::vector<float>, float>>{
           {flat, 0.05f}, {flat, 0.5f}, {flat, 0.95f}, {peaked, 0.5f}, {peaked, 0.9f}}) {
    std::vector<int32_t> ranked = ByLikelihood(logits);
    std::vector<double> probs = Softmax(logits, 1.0);
    std::vector<bool> in_nucleus(kVocab, false);
    double cumulative = 0;
    for (int32_t id : ranked) {
      in_nucleus[id] = true;
      cumulative += probs[id];
      if (cumulative >= top_p) break;
    }
    SamplingParams params;
    params.top_p = top_p;
    params.seed = 3;
    Sampler sampler = MakeSampler(params, kVocab);
    for (int i = 0; i < 200; ++i) {
      const int32_t id = sampler.Sample(logits).id;
      ASSERT_TRUE(in_nucleus[id]) << "top_p=" << top_p << " sampled " << id;
    }
  }
}

TEST(SamplerTest, TopKNeverSamplesOutsideTopK) {
  constexpr int kVocab = 1000;
  std::vector<float> logits = RandomLogits(kVocab, 5, 0.1f);  // nearly flat
  std::vector<int32_t> ranked = ByLikelihood(logits);
  SamplingParams params;
  params.top_k = 10;
  params.seed = 1;
  Sampler sampler = MakeSampler(params, kVocab);
  std::vector<int> counts = Histogram(sampler, logits, 5000);
  for (int r = 0; r < kVocab; ++r) {
    if (r < 10) {
      EXPECT_GT(counts[ranked[r]], 0) << "rank " << r << " never drawn";
    } else {
      ASSERT_EQ(counts[ranked[r]], 0) << "rank " << r << " drawn";
    }
  }
}

// The candidate filters (kTopKCandidateWeight, kTopPCandidateWeight) only narrow where the
// selections look. Tokens far ahead leave fewer than k candidates (the top-k search falls
// back to the whole vocabulary) and hold the nucleus alone (the top-p search stays among
// them); a flat row keeps everything a candidate. Each draw stays inside the set a full sort
// gives, and with top_k every one of the k is drawn.
TEST(SamplerTest, CandidateFiltersSelectWhatAFullSortSelects) {
  constexpr int kVocab = 50000;
  std::vector<float> flat = RandomLogits(kVocab, 21, 1.0f);
  std::vector<float> peaked = flat;
  for (int id : {7, 7000, 41000}) peaked[id] += 40.0f;
  std::vector<float> ramp(kVocab);
  for (int i = 0; i < kVocab; ++i) ramp[i] = -0.002f * static_cast<float>((i * 7919) % kVocab);
  struct Case {
    const std::vector<float>* logits;
    int top_k;
    float top_p;
  };
  for (const Case& c : {Case{&peaked, 50, 1.0f}, Case{&peaked, 2, 1.0f}, Case{&peaked, 0, 0.9f},
                        Case{&flat, 20, 1.0f}, Case{&flat, 0, 0.3f}, Case{&ramp, 0, 0.2f},
                        Case{&ramp, 8, 0.5f}}) {
    const std::vector<float>& logits = *c.logits;
    const std::vector<int32_t> ranked = ByLikelihood(logits);
    const std::vector<double> probs = Softmax(logits, 1.0);
    // The reference set: the top k by a full sort, then the most-likely-first prefix holding
    // top_p of their mass.
    const int k = c.top_k > 0 ? c.top_k : kVocab;
    double kept_mass = 0;
    for (int r = 0; r < k; ++r) kept_mass += probs[ranked[r]];
    std::vector<bool> in_set(kVocab, false);
    int set_size = 0;
    double cumulative = 0;
    for (int r = 0; r < k; ++r) {
      in_set[ranked[r]] = true;
      ++set_size;
      cumulative += probs[ranked[r]];
      if (cumulative >= c.top_p * kept_mass) break;
    }
    SamplingParams params;
    params.top_k = c.top_k;
    params.top_p = c.top_p;
    params.seed = 9;
    Sampler sampler = MakeSampler(params, kVocab);
    std::vector<int> counts(kVocab, 0);
    for (int i = 0; i < 400; ++i) {
      const int32_t id = sampler.Sample(logits).id;
      ASSERT_TRUE(in_set[id]) << "top_k=" << c.top_k << " top_p=" << c.top_p << " sampled " << id;
      ++counts[id];
    }
    if (set_size <= 3) {
      for (int r = 0; r < set_size; ++r) EXPECT_GT(counts[ranked[r]], 0) << "rank " << r << " never drawn";
    }
  }
}

TEST(SamplerTest, MinPNeverSamplesBelowThreshold) {
  SamplingParams params;
  params.min_p = 0.2f;  // threshold 0.2 * 0.4 = 0.08 -> keeps {0, 1, 2}
  params.seed = 9;
  Sampler sampler = MakeSampler(params, 5);
  std::vector<int> counts =
      Histogram(sampler, LogitsFromProbs({0.4, 0.3, 0.2, 0.06, 0.04}), 20000);
  EXPECT_EQ(counts[3], 0);
  EXPECT_EQ(counts[4], 0);
  EXPECT_LT(ChiSquare(counts, {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0, 0}), kChiSquareBound);
}

TEST(SamplerTest, TopKTopPMinPCombineInDocumentedOrder) {
  constexpr int kVocab = 50000;
  std::vector<float> logits = RandomLogits(kVocab, 21, 2.0f);
  std::vector<int32_t> ranked = ByLikelihood(logits);
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_k = 2000;
  params.top_p = 0.9f;
  params.min_p = 0.01f;
  params.seed = 5;
  // Reference: top-p over the renormalised top-k, then min-p relative to the top token.
  std::vector<double> p(2000);
  double z = 0;
  for (int r = 0; r < 2000; ++r) z += p[r] = std::exp((logits[ranked[r]] - logits[ranked[0]]) / 0.7);
  int nucleus = 0;
  for (double cumulative = 0; nucleus < 2000 && cumulative < 0.9 * z;) cumulative += p[nucleus++];
  int allowed = 0;
  while (allowed < nucleus && p[allowed] >= 0.01) ++allowed;
  ASSERT_GT(allowed, 5);
  std::vector<bool> ok(kVocab, false);
  for (int r = 0; r < allowed; ++r) ok[ranked[r]] = true;

  Sampler sampler = MakeSampler(params, kVocab);
  for (int i = 0; i < 2000; ++i) {
    const int32_t id = sampler.Sample(logits).id;
    ASSERT_TRUE(ok[id]) << "sampled " << id;
  }
}

TEST(SamplerTest, SameSeedReproducesDifferentSeedsDiffer) {
  constexpr int kVocab = 32000;
  SamplingParams params;
  params.temperature = 1.2f;
  params.top_p = 0.95f;
  auto generate = [&](uint64_t seed) {
    params.seed = seed;
    Sampler sampler = MakeSampler(params, kVocab, {1, 2, 3});
    std::vector<int32_t> tokens;
    for (int step = 0; step < 100; ++step) {
      std::vector<float> logits = RandomLogits(kVocab, 1000 + step, 2.0f);
      tokens.push_back(sampler.Sample(logits).id);
      sampler.Accept(tokens.back());
    }
    return tokens;
  };
  EXPECT_EQ(generate(42), generate(42));
  EXPECT_NE(generate(42), generate(43));
}

TEST(SamplerTest, UnseededSamplersGetDifferentSeeds) {
  SamplingParams params;
  EXPECT_NE(MakeSampler(params, 10).seed(), MakeSampler(params, 10).seed());
}

TEST(SamplerTest, TemperatureMatchesSoftmaxOfScaledLogits) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f};
  for (float temperature : {0.5f, 2.0f}) {
    SamplingParams params;
    params.temperature = temperature;
    params.seed = 123;
    Sampler sampler = MakeSampler(params, 5);
    std::vector<int> counts = Histogram(sampler, logits, 20000);
    EXPECT_LT(ChiSquare(counts, Softmax(logits, temperature)), kChiSquareBound)
        << "T=" << temperature;
    // The same counts are far from the untempered distribution: the test can fail.
    EXPECT_GT(ChiSquare(counts, Softmax(logits, 1.0)), 200.0) << "T=" << temperature;
  }
}

// With no filter the draw walks blocks of 16 tokens: a vocabulary of 53 (three whole blocks and
// a tail of 5) with mass in every block draws each token in proportion (chi-square, 52 degrees
// of freedom: bound 100, p < 1e-4).
TEST(SamplerTest, DrawOverTheWholeVocabularyKeepsProportionsAcrossBlocks) {
  const std::vector<float> logits = RandomLogits(53, 17, 0.7f);
  SamplingParams params;
  params.temperature = 1.0f;
  params.seed = 5;
  Sampler sampler = MakeSampler(params, 53);
  std::vector<int> counts = Histogram(sampler, logits, 40000);
  EXPECT_LT(ChiSquare(counts, Softmax(logits, 1.0)), 100.0);
  std::vector<float> reversed(logits.rbegin(), logits.rend());  // the same mass, another order
  EXPECT_GT(ChiSquare(counts, Softmax(reversed, 1.0)), 200.0);
}

TEST(SamplerTest, PenaltiesAndBiasChangeExactlyTheRightLogits) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.25f;
  params.logit_bias = {{1, 1.0f}, {5, -3.0f}};
  Sampler sampler = MakeSampler(params, 8, /*prompt=*/{1, 2, 1});
  sampler.Accept(2);
  sampler.Accept(3);
  sampler.Accept(3);
  std::vector<float> logits = {0.5f, 4.0f, -1.0f, 3.0f, 2.0f, 1.0f, -2.0f, 7.0f};
  sampler.ApplyPenaltiesAndBias(logits);
  EXPECT_FLOAT_EQ(logits[0], 0.5f);                       // untouched
  EXPECT_FLOAT_EQ(logits[1], (4.0f + 1.0f) / 2.0f);       // bias, then repetition (prompt)
  EXPECT_FLOAT_EQ(logits[2], -1.0f * 2.0f - 0.5f - 0.25f);  // prompt + generated once
  EXPECT_FLOAT_EQ(logits[3], 3.0f / 2.0f - 0.5f - 0.5f);  // generated twice
  EXPECT_FLOAT_EQ(logits[4], 2.0f);
  EXPECT_FLOAT_EQ(logits[5], 1.0f - 3.0f);                // bias only
  EXPECT_FLOAT_EQ(logits[6], -2.0f);
  EXPECT_FLOAT_EQ(logits[7], 7.0f);
}

TEST(SamplerTest, PresenceAndFrequencyIgnorePromptTokens) {
  SamplingParams params;
  params.presence_penalty = 1.0f;
  params.frequency_penalty = -1.0f;
  Sampler sampler = MakeSampler(params, 4, /*prompt=*/{0, 0, 1});
  sampler.Accept(1);
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  sampler.ApplyPenaltiesAndBias(logits);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], 1.0f - 1.0f + 1.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f);
}

TEST(SamplerTest, PenaltiesSteerSampling) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.frequency_penalty = 2.0f;
  Sampler sampler = MakeSampler(params, 3);
  const std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 4; ++i) {
    tokens.push_back(sampler.Sample(logits).id);
    sampler.Accept(tokens.back());
  }
  // 3 vs 2.5 -> 0; 1 vs 2.5 -> 1; 1 vs 0.5 -> 0; -1 vs 0.5 -> 1.
  EXPECT_EQ(tokens, (std::vector<int32_t>{0, 1, 0, 1}));
}

TEST(SamplerTest, LogitBiasMinus100BansAndPlus100Forces) {
  SamplingParams params;
  params.seed = 4;
  params.logit_bias = {{3, -100.0f}};
  Sampler banned = MakeSampler(params, 10);
  std::vector<float> flat(10, 0.0f);
  EXPECT_EQ(Histogram(banned, flat, 20000)[3], 0);

  params.logit_bias = {{6, 100.0f}};
  Sampler forced = MakeSampler(params, 10);
  std::vector<float> logits = RandomLogits(10, 2, 5.0f);
  EXPECT_EQ(Histogram(forced, logits, 2000)[6], 2000);
}

TEST(SamplerTest, LogprobsAreLogSoftmaxOfProcessedLogits) {
  constexpr int kVocab = 300;
  std::vector<float> logits = RandomLogits(kVocab, 8, 2.0f);
  SamplingParams params;
  params.temperature = 0.8f;
  params.top_k = 5;  // truncation does not change logprobs
  params.logprobs = kVocab;
  params.logit_bias = {{0, 3.0f}};
  params.seed = 1;
  Sampler sampler = MakeSampler(params, kVocab);
  SampledToken token = sampler.Sample(logits);

  std::vector<float> processed = logits;
  processed[0] += 3.0f;
  std::vector<double> expected = Softmax(processed, 0.8);
  ASSERT_EQ(token.top_logprobs.size(), kVocab);
  double total = 0;
  for (size_t i = 0; i < token.top_logprobs.size(); ++i) {
    const auto& [id, logprob] = token.top_logprobs[i];
    total += std::exp(logprob);
    EXPECT_NEAR(logprob, std::log(expected[id]), 1e-4) << "id " << id;
    if (i > 0) {
      EXPECT_GE(token.top_logprobs[i - 1].second, logprob);
    }
    if (id == token.id) {
      EXPECT_FLOAT_EQ(token.logprob, logprob);
    }
  }
  EXPECT_NEAR(total, 1.0, 1e-4);
  EXPECT_NEAR(token.logprob, std::log(expected[token.id]), 1e-4);
}

TEST(SamplerTest, LogprobsZeroAndNone) {
  std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  SamplingParams params;
  params.temperature = 0.0f;
  params.logprobs = 0;
  SampledToken chosen_only = MakeSampler(params, 3).Sample(logits);
  EXPECT_EQ(chosen_only.id, 2);
  EXPECT_TRUE(chosen_only.top_logprobs.empty());
  EXPECT_NEAR(chosen_only.logprob, std::log(Softmax(logits, 1.0)[2]), 1e-6);

  params.logprobs = 2;
  SampledToken top2 = MakeSampler(params, 3).Sample(logits);
  ASSERT_EQ(top2.top_logprobs.size(), 2u);
  EXPECT_EQ(top2.top_logprobs[0].first, 2);
  EXPECT_EQ(top2.top_logprobs[1].first, 1);

  params.logprobs = -1;
  SampledToken none = MakeSampler(params, 3).Sample(logits);
  EXPECT_TRUE(std::isnan(none.logprob));
  EXPECT_TRUE(none.top_logprobs.empty());
}

TEST(SamplerTest, SharedScratchGivesSameTokensAsOwnScratch) {
  constexpr int kVocab = 2000;
  SamplingParams params;
  params.top_p = 0.9f;
  params.seed = 77;
  Sampler own = MakeSampler(params, kVocab);
  Sampler shared = MakeSampler(params, kVocab);
  Sampler other = MakeSampler(params, kVocab);
  SamplingScratch scratch;
  for (int step = 0; step < 50; ++step) {
    std::vector<float> logits = RandomLogits(kVocab, step, 1.5f);
    other.Sample(RandomLogits(kVocab, 999, 1.0f), scratch);  // dirties the scratch
    EXPECT_EQ(own.Sample(logits).id, shared.Sample(logits, scratch).id);
  }
}

TEST(SamplingParamsTest, ValidateRejectsEachOutOfRangeValue) {
  struct Case {
    std::string param;
    std::function<void(SamplingParams&)> set;
  };
  const std::vector<Case> cases = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = NAN; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5f; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -2; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5f; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = -2.01f; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -3.0f; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = 2.01f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = -1.0f; }},
      {"logit_bias token id 100", [](SamplingParams& p) { p.logit_bias = {{100, 1.0f}}; }},
      {"logit_bias token id -1", [](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }},
      {"logit_bias[3]", [](SamplingParams& p) { p.logit_bias = {{3, 100.5f}}; }},
      {"logit_bias[3]", [](SamplingParams& p) { p.logit_bias = {{3, -101.0f}}; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = -2; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = 101; }},
  };
  for (const Case& c : cases) {
    SamplingParams params;
    c.set(params);
    absl::Status status = params.Validate(/*vocab_size=*/100);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.param;
    EXPECT_THAT(status.message(), HasSubstr(c.param));
    EXPECT_FALSE(Sampler::Create(params, 100, {}).ok()) << c.param;
  }
}

TEST(SamplingParamsTest, ValidateAcceptsBoundaryValues) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.repetition_penalty = 0.01f;
  params.logit_bias = {{0, -100.0f}, {99, 100.0f}};
  params.logprobs = 100;
  EXPECT_TRUE(params.Validate(100).ok()) << params.Validate(100);
  params.top_k = 1000;  // larger than the vocabulary = off
  EXPECT_TRUE(params.Validate(100).ok());
}

TEST(SamplerTest, CreateRejectsPromptIdsOutsideVocab) {
  const std::vector<int32_t> prompt = {1, 2, 10};
  absl::StatusOr<Sampler> sampler = Sampler::Create(SamplingParams(), 10, prompt);
  ASSERT_FALSE(sampler.ok());
  EXPECT_THAT(sampler.status().message(), HasSubstr("prompt token id 10 at position 2"));
}

// Top alternatives come from the tokens within 18.4 nats of the best when k of them exist, else
// from all: either way the k a full sort ranks first, in its order (ties: lower id).
TEST(SamplerTest, TopAlternativesAreTheFullSortsFirstK) {
  constexpr int kVocab = 20000;
  std::vector<float> flat = RandomLogits(kVocab, 4, 1.0f);
  flat[11] = flat[12] = 3.0f;  // a tie
  std::vector<float> lone = flat;
  lone[9000] += 60.0f;  // one token far ahead: fewer than k candidates
  SamplingScratch scratch;
  for (const std::vector<float>* logits : {&flat, &lone}) {
    const std::vector<int32_t> ranked = ByLikelihood(*logits);
    for (int32_t k : {1, 5, 20}) {
      const SampledToken t = RawLogprobs(*logits, 0, k, scratch);
      ASSERT_EQ(t.top_logprobs.size(), static_cast<size_t>(k));
      for (int32_t i = 0; i < k; ++i) EXPECT_EQ(t.top_logprobs[i].first, ranked[i]) << "k " << k << " rank " << i;
    }
  }
}

TEST(SamplerTest, RawLogprobsAreTheModelsLogSoftmaxWhateverTheParams) {
  // A vocabulary-sized row (a vector body and a scalar tail) with -inf entries, against a
  // float64 log-softmax.
  constexpr int kVocab = 49157;
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = dist(rng);
  logits[7] = -std::numeric_limits<float>::infinity();
  double m = -1e300;
  for (float x : logits) m = std::max(m, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - m);
  const double log_z = m + std::log(sum);
  SamplingScratch scratch;
  for (int32_t id : {0, 7, 1234, kVocab - 1}) {
    const SampledToken t = RawLogprobs(logits, id, 3, scratch);
    EXPECT_EQ(t.id, id);
    if (id == 7) {
      EXPECT_EQ(t.logprob, -std::numeric_limits<float>::infinity());
    } else {
      EXPECT_NEAR(t.logprob, logits[id] - log_z, 1e-4) << id;
    }
    ASSERT_EQ(t.top_logprobs.size(), 3u);
    const int32_t best = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(t.top_logprobs[0].first, best);
    EXPECT_NEAR(t.top_logprobs[0].second, logits[best] - log_z, 1e-4);
    EXPECT_GE(t.top_logprobs[0].second, t.top_logprobs[1].second);
    EXPECT_GE(t.top_logprobs[1].second, t.top_logprobs[2].second);
  }
  EXPECT_TRUE(RawLogprobs(logits, 3, 0, scratch).top_logprobs.empty());
}

// A constraint that allows the ids of one set and records what it is told.
class SetConstraint : public LogitsConstraint {
 public:
  explicit SetConstraint(std::vector<int32_t> allowed, std::vector<int32_t>* accepted)
      : allowed_(std::move(allowed)), accepted_(accepted) {}
  void Mask(std::span<float> logits) override {
    for (size_t id = 0; id < logits.size(); ++id) {
      if (std::find(allowed_.begin(), allowed_.end(), static_cast<int32_t>(id)) == allowed_.end()) {
        logits[id] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  void Accept(int32_t id) override { accepted_->push_back(id); }

 private:
  std::vector<int32_t> allowed_;
  std::vector<int32_t>* accepted_;
};

TEST(SamplerTest, ConstraintLimitsDrawsAndAlternatives) {
  const std::vector<float> logits = {5.0f, 1.0f, 4.0f, 0.5f, 3.0f, 0.0f};
  std::vector<int32_t> accepted;
  for (const float temperature : {0.0f, 1.0f}) {
    SamplingParams params;
    params.temperature = temperature;
    params.logprobs = 4;
    params.seed = 3;
    Sampler s = MakeSampler(params, 6);
    s.SetConstraint(std::make_unique<SetConstraint>(std::vector<int32_t>{1, 3}, &accepted));
    for (int i = 0; i < 50; ++i) {
      const SampledToken t = s.Sample(logits);
      ASSERT_TRUE(t.id == 1 || t.id == 3) << t.id;
      // The alternatives are the allowed tokens only, normalised over them.
      ASSERT_EQ(t.top_logprobs.size(), 2u);
      EXPECT_EQ(t.top_logprobs[0].first, 1);
      EXPECT_NEAR(t.top_logprobs[0].second, std::log(std::exp(1.0) / (std::exp(1.0) + std::exp(0.5))), 1e-5);
      s.Accept(t.id);
      EXPECT_EQ(accepted.back(), t.id);
    }
  }
}

// min_tokens: the banned ids (end and stop tokens) are never drawn until that many tokens are
// accepted, on the greedy fast path too; then they come back. A constraint that allows only
// banned ids keeps them (nothing else could be drawn).
TEST(SamplerTest, BanUntilKeepsEndTokensOutForMinTokens) {
  const std::vector<float> logits = {0.0f, 9.0f, 1.0f, 8.0f};  // 1 and 3 are the likeliest
  for (const float temperature : {0.0f, 1.0f}) {
    SamplingParams params;
    params.temperature = temperature;
    params.seed = 5;
    Sampler s = MakeSampler(params, 4);
    s.BanUntil(3, {1, 3});
    for (int i = 0; i < 3; ++i) {
      const SampledToken t = s.Sample(logits);
      ASSERT_TRUE(t.id == 0 || t.id == 2) << t.id;
      s.Accept(t.id);
    }
    EXPECT_EQ(s.Sample(std::vector<float>{0.0f, 9.0f, 1.0f, -50.0f}).id, 1);  // three accepted: back
  }
  std::vector<int32_t> accepted;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  Sampler s = MakeSampler(greedy, 4);
  s.BanUntil(10, {1});
  s.SetConstraint(std::make_unique<SetConstraint>(std::vector<int32_t>{1}, &accepted));
  EXPECT_EQ(s.Sample(logits).id, 1);
}

}  // namespace
}  // namespace peng
