// Writing freshly computed key/value rows (float) into a page in its KV format, and reading
// them back, for the KV stores (engine/simple_kv_cache, scheduler/paged_kv_view), the attention
// tests and benchmarks. Page layouts: kernels/kv_format.h.
#pragma once

#include <cstdint>

#include "kernels/kv_format.h"

namespace peng::kernels {

// Converts n floats into a dense `format` at dst (f16 and bf16 round to nearest even).
void StoreKvRow(const float* src, KvFormat format, int64_t n, void* dst);
// Reads n elements of a dense `format` at src back as floats.
void LoadKvRow(const void* src, KvFormat format, int64_t n, float* dst);

// Asymmetric min/max quantization of n floats in `groups` equal groups: per group an fp16
// (scale, zero) pair, scale = (max − min) / (2^bits − 1), zero = min (both rounded to fp16
// first, codes then chosen against the rounded pair); codes packed into 16-bit words.
void QuantizeKvRow(const float* src, int n, int bits, int groups, uint16_t* codes, uint16_t* meta);
void DequantizeKvRow(const uint16_t* codes, const uint16_t* meta, int n, int bits, int groups, float* dst);

// Key `slot` (head_dim floats) into a dense key segment laid out with `lanes` (kv_format.h
// KeyElement; 0 = token rows), and back.
void StoreKeyLanes(const float* k, KvFormat format, int head_dim, int lanes, int slot, uint8_t* keys);
void LoadKeyLanes(const uint8_t* keys, KvFormat format, int head_dim, int lanes, int slot, float* k);

// Writes token `slot` of a page of `tokens_per_page` tokens (any format): key and value of
// head_dim floats (dense keys in KeyLanes blocks); quantized pages also get the token's
// position and a zero importance score.
void StoreKvToken(KvFormat format, int head_dim, int tokens_per_page, const float* k, const float* v,
                  int64_t position, int slot, uint8_t* page);
// Reads token `slot` of a page back as floats.
void LoadKvToken(KvFormat format, int head_dim, int tokens_per_page, const uint8_t* page, int slot,
                 float* k, float* v);

}  // namespace peng::kernels
