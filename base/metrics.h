// Prometheus metrics: counters, gauges and histograms grouped in labelled families, rendered in
// the text exposition format 0.0.4. A Registry owns its families; a Family owns its instruments,
// whose references stay valid for the Registry's lifetime. Thread safety: recording (Inc, Set,
// Observe) is lock-free (relaxed atomics) from any thread; Family::Labels takes a reader lock to
// look up and a writer lock only to create a new label set, so hot paths should keep the
// reference it returns. Registration and Render may run concurrently with recording.
// Programmer errors (bad names, duplicate families, wrong label count) are PENG_CHECKs.
// The locks are std::shared_mutex rather than absl::Mutex: ThreadSanitizer sees pthread locks but
// not the futexes of Debian's uninstrumented Abseil, and a `peng serve` TSan run then reported
// every first use of a label set as a race (tests/README.md).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/types/span.h"

namespace peng::metrics {

// A monotonically increasing value (requests, tokens). Inc with a negative value is a bug.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Inc(double v = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (running requests, KV usage).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Dec(double v = 1) { value_.fetch_add(-v, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets with fixed upper bounds (`le`, inclusive), plus an
// implicit +Inf bucket, a sum and a count. Bounds are strictly increasing and finite.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // NaN is counted in the +Inf bucket only (and makes the sum NaN), as client_golang does.
  void Observe(double v);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // Per-bucket (not cumulative) counts; the last entry is the +Inf bucket.
  std::vector<uint64_t> BucketCounts() const;
  uint64_t Count() const;  // sum of BucketCounts()
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> upper_bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // upper_bounds_.size() + 1
  std::atomic<double> sum_{0};
};

namespace internal {

// What the Registry keeps of every family, whatever its instrument type.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, const char* type,
             std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), type_(type),
        label_names_(std::move(label_names)) {}
  virtual ~FamilyBase() = default;

  const std::string& name() const { return name_; }
  // Appends HELP, TYPE and every sample line, label sets in sorted order.
  void Render(std::string* out) const;

 protected:
  // Appends the sample lines of every label set (HELP/TYPE already written).
  virtual void RenderSamples(std::string* out) const = 0;
  // `name{labels}` where `extra` is appended as the last label (e.g. le="0.5") if non-empty.
  std::string SeriesName(const std::string& suffix, const std::vector<std::string>& values,
                         const std::string& extra = "") const;

  const std::string name_, help_;
  const char* const type_;
  const std::vector<std::string> label_names_;
};

}  // namespace internal

// All instruments of one metric name, one per label-value set (in label_names order).
template <typename T>
class Family final : public internal::FamilyBase {
 public:
  Family(std::string name, std::string help, const char* type,
         std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make);

  // The instrument for these label values (created on first use). values.size() must equal
  // the number of label names. The reference is stable for the Registry's lifetime.
  T& Labels(const std::vector<std::string>& values);
  // The only instrument of a family without labels (created at registration, so it renders 0).
  T& Get();

 private:
  void RenderSamples(std::string* out) const override;

  const std::function<std::unique_ptr<T>()> make_;
  mutable std::shared_mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// Owns families in registration order. Metric names match [a-zA-Z_:][a-zA-Z0-9_:]*; label
// names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__" (histograms may not use "le").
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A counter's exposed name always ends in "_total": "peng:prompt_tokens" and
  // "peng:prompt_tokens_total" both expose "peng:prompt_tokens_total" (HELP and TYPE too, as
  // the 0.0.4 text format and prometheus_client do).
  Family<Counter>& AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names = {});
  // `buckets`: finite, strictly increasing upper bounds; a trailing +Inf is accepted and
  // dropped (it is always implicit). Exposes name_bucket{le=...}, name_sum and name_count.
  Family<Histogram>& AddHistogram(std::string name, std::string help,
                                  absl::Span<const double> buckets,
                                  std::vector<std::string> label_names = {});

  // Prometheus text exposition format 0.0.4 (Content-Type: kContentType).
  std::string Render() const;

 private:
  // Checks the names and claims every series name the family exposes (PENG_CHECK on clash).
  void Claim(const std::string& name, const std::vector<std::string>& label_names,
             std::vector<std::string> series_names) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::shared_mutex mu_;
  std::vector<std::unique_ptr<internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> claimed_ ABSL_GUARDED_BY(mu_);
};

inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// start, start*factor, ..., count bounds (start > 0, factor > 1, count >= 1).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// 1, 2, 5, 10, 20, 50, ... up to and including max_value (vLLM's token-count buckets).
std::vector<double> OneTwoFiveBuckets(double max_value);

// vLLM's default bucket sets (seconds), so dashboards built for vLLM work unchanged.
inline constexpr std::array<double, 22> kTimeToFirstTokenBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
inline constexpr std::array<double, 19> kInterTokenLatencyBuckets = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
// Also vLLM's buckets for queue, prefill, decode and inference time.
inline constexpr std::array<double, 21> kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

// Text-format helpers (exposed for tests and for other exposition code).
std::string FormatValue(double v);          // shortest round-trip; +Inf, -Inf, NaN
std::string EscapeLabelValue(const std::string& s);  // \\, \", \n
std::string EscapeHelp(const std::string& s);        // \\, \n

}  // namespace peng::metrics
