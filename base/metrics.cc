#include "base/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace peng::metrics {
namespace {

bool IsMetricName(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(const std::string& s) {
  if (s.empty() || s.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---- instruments ----

void Counter::Inc(double v) {
  PENG_CHECK(v >= 0);  // a counter never goes down; NaN is rejected too
  value_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    PENG_CHECK(std::isfinite(upper_bounds_[i]));
    PENG_CHECK(i == 0 || upper_bounds_[i - 1] < upper_bounds_[i]);
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // First bound >= v: `le` is inclusive. NaN compares false everywhere, so it goes to +Inf.
  size_t i = upper_bounds_.size();
  if (!std::isnan(v)) {
    i = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) - upper_bounds_.begin();
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(upper_bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

uint64_t Histogram::Count() const {
  uint64_t n = 0;
  for (uint64_t c : BucketCounts()) n += c;
  return n;
}

// ---- text format ----

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  PENG_CHECK(ec == std::errc());
  return std::string(buf, end);
}

std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace internal {

void FamilyBase::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", type_, "\n");
  RenderSamples(out);
}

std::string FamilyBase::SeriesName(const std::string& suffix,
                                   const std::vector<std::string>& values,
                                   const std::string& extra) const {
  std::string s = absl::StrCat(name_, suffix);
  if (label_names_.empty() && extra.empty()) return s;
  s += '{';
  for (size_t i = 0; i < label_names_.size(); ++i) {
    absl::StrAppend(&s, i ? "," : "", label_names_[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&s, label_names_.empty() ? "" : ",", extra);
  s += '}';
  return s;
}

}  // namespace internal

// ---- families ----

template <typename T>
Family<T>::Family(std::string name, std::string help, const char* type,
                  std::vector<std::string> label_names, std::function<std::unique_ptr<T>()> make)
    : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
      make_(std::move(make)) {
  if (label_names_.empty()) {
    std::unique_lock lock(mu_);
    children_.emplace(std::vector<std::string>{}, make_());
  }
}

template <typename T>
T& Family<T>::Labels(const std::vector<std::string>& values) {
  PENG_CHECK(values.size() == label_names_.size());
  {
    std::shared_lock lock(mu_);
    auto it = children_.find(values);
    if (it != children_.end()) return *it->second;
  }
  std::unique_lock lock(mu_);
  auto& slot = children_[values];  // another thread may have created it meanwhile
  if (!slot) slot = make_();
  return *slot;
}

template <typename T>
T& Family<T>::Get() {
  PENG_CHECK(label_names_.empty());
  return Labels({});
}

template <typename T>
void Family<T>::RenderSamples(std::string* out) const {
  std::shared_lock lock(mu_);
  for (const auto& [values, child] : children_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      const std::vector<uint64_t> counts = child->BucketCounts();
      const auto& bounds = child->upper_bounds();
      uint64_t cumulative = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
        absl::StrAppend(out, SeriesName("_bucket", values, absl::StrCat("le=\"", le, "\"")), " ",
                        cumulative, "\n");
      }
      absl::StrAppend(out, SeriesName("_sum", values), " ", FormatValue(child->Sum()), "\n");
      // The count is the +Inf bucket read above, so the two always agree in one scrape.
      absl::StrAppend(out, SeriesName("_count", values), " ", cumulative, "\n");
    } else {
      absl::StrAppend(out, SeriesName("", values), " ", FormatValue(child->Value()), "\n");
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- registry ----

void Registry::Claim(const std::string& name, const std::vector<std::string>& label_names,
                     std::vector<std::string> series_names) {
  if (!IsMetricName(name)) {
    std::fprintf(stderr, "metrics: invalid metric name '%s'\n", name.c_str());
    PENG_CHECK(IsMetricName(name));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    PENG_CHECK(IsLabelName(label_names[i]));
    for (size_t j = 0; j < i; ++j) PENG_CHECK(label_names[i] != label_names[j]);
  }
  for (const std::string& s : series_names) {
    if (std::find(claimed_.begin(), claimed_.end(), s) != claimed_.end()) {
      std::fprintf(stderr, "metrics: '%s' is registered twice\n", s.c_str());
      PENG_CHECK(false && "duplicate metric name");
    }
  }
  claimed_.insert(claimed_.end(), series_names.begin(), series_names.end());
}

Family<Counter>& Registry::AddCounter(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  if (!EndsWith(name, "_total")) name += "_total";
  std::unique_lock lock(mu_);
  Claim(name, label_names, {name});
  auto family = std::make_unique<Family<Counter>>(std::move(name), std::move(help), "counter",
                                                  std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  Family<Counter>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Gauge>& Registry::AddGauge(std::string name, std::string help,
                                  std::vector<std::string> label_names) {
  std::unique_lock lock(mu_);
  Claim(name, label_names, {name});
  auto family = std::make_unique<Family<Gauge>>(std::move(name), std::move(help), "gauge",
                                                std::move(label_names),
                                                [] { return std::make_unique<Gauge>(); });
  Family<Gauge>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Histogram>& Registry::AddHistogram(std::string name, std::string help,
                                          absl::Span<const double> buckets,
                                          std::vector<std::string> label_names) {
  std::vector<double> bounds(buckets.begin(), buckets.end());
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    PENG_CHECK(std::isfinite(bounds[i]));
    PENG_CHECK(i == 0 || bounds[i - 1] < bounds[i]);
  }
  for (const std::string& l : label_names) PENG_CHECK(l != "le");
  std::unique_lock lock(mu_);
  Claim(name, label_names, {name, name + "_bucket", name + "_sum", name + "_count"});
  auto family = std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), "histogram", std::move(label_names),
      [bounds] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

std::string Registry::Render() const {
  std::string out;
  std::shared_lock lock(mu_);
  for (const auto& family : families_) family->Render(&out);
  return out;
}

// ---- bucket helpers ----

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  PENG_CHECK(start > 0 && factor > 1 && count >= 1);
  std::vector<double> out(count);
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out[i] = v;
  return out;
}

std::vector<double> OneTwoFiveBuckets(double max_value) {
  std::vector<double> out;
  for (double exponent = 1;; exponent *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (m * exponent > max_value) return out;
      out.push_back(m * exponent);
    }
  }
}

}  // namespace peng::metrics
