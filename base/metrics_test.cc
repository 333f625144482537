#include "base/metrics.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peng::metrics {
namespace {

TEST(MetricsTest, RendersExactTextForCountersGaugesAndLabels) {
  Registry r;
  auto& running = r.AddGauge("peng:num_requests_running", "Requests in the running batch.");
  auto& success = r.AddCounter("peng:request_success", "Finished requests.", {"finished_reason"});
  auto& prompt = r.AddCounter("peng:prompt_tokens_total", "Prefill tokens processed.");
  running.Get().Set(3);
  running.Get().Dec();
  success.Labels({"stop"}).Inc();
  success.Labels({"abort"}).Inc(2);
  success.Labels({"stop"}).Inc();
  prompt.Get().Inc(0.5);
  EXPECT_EQ(r.Render(),
            "# HELP peng:num_requests_running Requests in the running batch.\n"
            "# TYPE peng:num_requests_running gauge\n"
            "peng:num_requests_running 2\n"
            "# HELP peng:request_success_total Finished requests.\n"
            "# TYPE peng:request_success_total counter\n"
            "peng:request_success_total{finished_reason=\"abort\"} 2\n"
            "peng:request_success_total{finished_reason=\"stop\"} 2\n"
            "# HELP peng:prompt_tokens_total Prefill tokens processed.\n"
            "# TYPE peng:prompt_tokens_total counter\n"
            "peng:prompt_tokens_total 0.5\n");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  Registry r;
  auto& f = r.AddGauge("g", "a \\ back\nslash \"quoted\"", {"a", "b"});
  f.Labels({"x\"y", "p\\q\nr"}).Set(-1.25);
  EXPECT_EQ(r.Render(),
            "# HELP g a \\\\ back\\nslash \"quoted\"\n"
            "# TYPE g gauge\n"
            "g{a=\"x\\\"y\",b=\"p\\\\q\\nr\"} -1.25\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry r;
  auto& h = r.AddHistogram("peng:ttft_seconds", "TTFT.", {0.1, 0.5, 1}, {"model"});
  auto& m = h.Labels({"m"});
  m.Observe(0.05);
  m.Observe(0.1);  // le is inclusive
  m.Observe(0.7);
  m.Observe(30);
  EXPECT_EQ(m.Count(), 4u);
  EXPECT_EQ(r.Render(),
            "# HELP peng:ttft_seconds TTFT.\n"
            "# TYPE peng:ttft_seconds histogram\n"
            "peng:ttft_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"
            "peng:ttft_seconds_bucket{model=\"m\",le=\"0.5\"} 2\n"
            "peng:ttft_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
            "peng:ttft_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"
            "peng:ttft_seconds_sum{model=\"m\"} 30.85\n"
            "peng:ttft_seconds_count{model=\"m\"} 4\n");
}

TEST(MetricsTest, UnlabelledHistogramRendersZerosBeforeAnyObservation) {
  Registry r;
  r.AddHistogram("h", "H.", {1, std::numeric_limits<double>::infinity()});  // +Inf dropped
  EXPECT_EQ(r.Render(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
}

TEST(MetricsTest, LabelledFamilyWithoutChildrenRendersOnlyHeader) {
  Registry r;
  r.AddCounter("c", "C.", {"k"});
  EXPECT_EQ(r.Render(), "# HELP c_total C.\n# TYPE c_total counter\n");
}

TEST(MetricsTest, LabelReferencesAreStable) {
  Registry r;
  auto& f = r.AddCounter("c", "C.", {"k"});
  Counter* first = &f.Labels({"a"});
  for (int i = 0; i < 100; ++i) f.Labels({std::to_string(i)});
  EXPECT_EQ(first, &f.Labels({"a"}));
}

TEST(MetricsTest, FormatsSpecialValues) {
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1e-05), "1e-05");
  EXPECT_EQ(FormatValue(123456789), "123456789");
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_THAT(ExponentialBuckets(1, 2, 4), testing::ElementsAre(1, 2, 4, 8));
  EXPECT_THAT(OneTwoFiveBuckets(100), testing::ElementsAre(1, 2, 5, 10, 20, 50, 100));
  EXPECT_EQ(kTimeToFirstTokenBuckets.back(), 2560.0);
  Registry r;  // the constants plug straight into AddHistogram
  r.AddHistogram("x", "X.", kInterTokenLatencyBuckets);
}

TEST(MetricsDeathTest, DuplicateAndClashingNamesAreProgrammerErrors) {
  EXPECT_DEATH(
      {
        Registry r;
        r.AddGauge("a", "A.");
        r.AddGauge("a", "A again.");
      },
      "registered twice");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddCounter("a", "A.");
        r.AddGauge("a_total", "A.");
      },
      "registered twice");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddHistogram("lat", "L.", {1});
        r.AddGauge("lat_count", "L.");
      },
      "registered twice");
  EXPECT_DEATH({ Registry().AddGauge("bad-name", "B."); }, "invalid metric name");
  EXPECT_DEATH({ Registry().AddCounter("c", "C.", {"k"}).Labels({"a", "b"}); }, "invariant");
}

TEST(MetricsTest, ConcurrentRecordingLosesNothing) {
  Registry r;
  auto& counter = r.AddCounter("c", "C.", {"thread"});
  auto& gauge = r.AddGauge("g", "G.");
  auto& hist = r.AddHistogram("h", "H.", {0.5});
  constexpr int kThreads = 8, kIters = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        counter.Labels({std::to_string(t % 2)}).Inc();
        gauge.Get().Inc();
        hist.Get().Observe(i % 2 ? 1.0 : 0.25);
        if (i % 1000 == 0) (void)r.Render();  // scrapes race with recording
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.Labels({"0"}).Value() + counter.Labels({"1"}).Value(), kThreads * kIters);
  EXPECT_EQ(gauge.Get().Value(), kThreads * kIters);
  EXPECT_EQ(hist.Get().Count(), uint64_t{kThreads} * kIters);
  EXPECT_EQ(hist.Get().BucketCounts()[0], uint64_t{kThreads} * kIters / 2);
  EXPECT_EQ(hist.Get().Sum(), kThreads * kIters / 2 * 1.25);
}

// Renders every feature; when PENG_METRICS_SAMPLE names a file, writes the text there so that
// tests/python/test_metrics_format.py can run `promtool check metrics` on it.
TEST(MetricsSample, RenderEveryFeature) {
  Registry r;
  r.AddGauge("peng:num_requests_running", "Number of requests in the running batch.").Get().Set(2);
  r.AddGauge("peng:kv_cache_usage_perc", "KV-cache usage (1 = 100 percent).").Get().Set(0.375);
  auto& success = r.AddCounter("peng:request_success", "Finished requests by reason.",
                               {"model_name", "finished_reason"});
  success.Labels({"SmolLM2", "stop"}).Inc(3);
  success.Labels({"SmolLM2", "length"}).Inc();
  success.Labels({"we\"ird\\name\nx", "abort"}).Inc();
  r.AddCounter("peng:prompt_tokens_total", "Prefill tokens.\nSecond \\ line.").Get().Inc(42);
  auto& ttft = r.AddHistogram("peng:time_to_first_token_seconds", "Time to first token.",
                              kTimeToFirstTokenBuckets, {"model_name"});
  for (double v : {0.002, 0.03, 0.3, 3.0, 3000.0}) ttft.Labels({"SmolLM2"}).Observe(v);
  r.AddHistogram("peng:request_prompt_tokens", "Prompt length.", OneTwoFiveBuckets(2048))
      .Get()
      .Observe(17);
  const std::string text = r.Render();
  EXPECT_THAT(text, testing::HasSubstr("le=\"+Inf\"} 5\n"));
  if (const char* path = std::getenv("PENG_METRICS_SAMPLE")) {
    std::ofstream(path) << text;
  }
}

}  // namespace
}  // namespace peng::metrics
