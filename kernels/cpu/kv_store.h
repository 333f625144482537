// Conversion of freshly computed key/value rows (float) into a KV page format, for the KV
// stores (engine/simple_kv_cache, scheduler/paged_kv_view) and the attention tests.
#pragma once

#include <cstdint>

#include "kernels/kv_format.h"

namespace peng::kernels {

// Converts n floats into `format` at dst (f16 and bf16 round to nearest even).
void StoreKvRow(const float* src, KvFormat format, int64_t n, void* dst);

// Reads n elements of `format` at src back as floats.
void LoadKvRow(const void* src, KvFormat format, int64_t n, float* dst);

}  // namespace peng::kernels
