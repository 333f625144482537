// Latency buckets shared by the frontends' request histograms (peng:http_request_duration_seconds,
// peng:grpc_request_duration_seconds): 5 ms for probes up to 5 minutes for long generations.
#pragma once

namespace peng::server {

inline constexpr double kRequestDurationBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,  0.5,  1.0,
                                                     2.5,   5.0,  10.0,  30.0, 60.0, 120.0, 300.0};

}  // namespace peng::server
