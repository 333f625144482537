// Layout structs the generated attention kernels take (raw pointers only, no ownership). CPU
// kernels read a (sequence, kv-head) history as spans of contiguous tokens (the pages of
// memory/); CUDA kernels read the same pages through a device page table. Positions are
// logical token indices: token j of a history sits at position j, and a query's position says
// which of them the mask admits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kv_format.h"

namespace peng::kernels {

// Consecutive tokens of one (sequence, layer, kv-head) in `format` (kernels/kv_format.h): dense
// values as [num_tokens x head_dim] rows and keys as rows or in key-lane blocks, read in place;
// or quantized codes with their per-token metadata, which the kernels decode a tile at a time.
struct KvSpan {
  const void* k = nullptr;  // dense: rows or key-lane blocks; quantized: packed codes per token
  const void* v = nullptr;
  int64_t num_tokens = 0;
  KvFormat format = KvFormat::kF32;
  // Dense keys: 0 = token rows; L > 0 = blocks of L tokens, dimension-major (kv_format.h
  // KeyLanes: what the CPU stores write). Quantized codes are always token rows.
  int key_lanes = 0;
  const void* k_meta = nullptr;  // quantized: fp16 (scale, zero) per group, one row per token
  const void* v_meta = nullptr;
  // Quantized pages: the tokens' accumulated importance scores (LeanKV). Kernels never touch
  // it; the engine adds the probabilities the kernels return into it.
  float* scores = nullptr;
};

// Runtime values of the score and mask mods (the mods themselves are compile-time).
struct AttentionParams {
  float scale = 1.0f;                    // kScale, kSoftcap, kAlibi multiply q·k by it
  float softcap = 30.0f;                 // kSoftcap: c in c·tanh(s/c)
  const float* alibi_slopes = nullptr;   // kAlibi: one slope per query head of the group
  int64_t window = 0;                    // kSlidingWindow: q − window < kv ≤ q
  const uint64_t* head_subset = nullptr; // kHeadSubset: bit kv of group head g is
  int64_t subset_words = 0;              //   head_subset[g * subset_words + kv / 64] >> kv % 64
};

// One query token of one sequence against one kv-head's history [kv_begin, kv_end) (a split).
// Softmax partials are normalised within the split; lse is the split's log-sum-exp (−inf when
// nothing was admitted, then out is 0). Sigmoid partials are plain sums (lse unused).
struct DecodeArgs {
  const float* q = nullptr;       // [group x head_dim]
  const KvSpan* spans = nullptr;  // the whole history, in order
  int num_spans = 0;
  int64_t kv_len = 0;             // tokens in the history
  int64_t q_pos = 0;              // the query's position (kv_len − 1 for a new token)
  int64_t kv_begin = 0, kv_end = 0;
  float* out = nullptr;           // [group x head_dim]
  float* lse = nullptr;           // [group]
  // Optional: per-head probabilities within the split, [group x (kv_end − kv_begin)]
  // (softmax: exp(s − lse_split); sigmoid: σ(s); masked: 0). CombineDecode turns them into
  // importance scores.
  float* head_probs = nullptr;
  AttentionParams params;
};

// Merges num_splits decode partials (split i at out_parts + i·group·head_dim, lse_parts +
// i·group) into out [group x head_dim] and lse [group] (lse may be null). When probs is set,
// adds max over the group of each token's final probability into probs[j] for j in
// [0, kv_len), reading the splits' head_probs (split i covers split_begin[i] .. split_begin[i+1]).
struct CombineArgs {
  int num_splits = 1;
  const float* out_parts = nullptr;
  const float* lse_parts = nullptr;
  float* out = nullptr;
  float* lse = nullptr;
  const float* const* head_probs = nullptr;  // per split
  const int64_t* split_begin = nullptr;      // [num_splits + 1]
  float* probs = nullptr;                    // [kv_len], accumulated
};

// A chunk of num_q consecutive queries of one sequence (positions q_pos0 + t) for the query
// heads of one kv-head, against that kv-head's history (which already holds the chunk's own
// keys and values).
struct PrefillArgs {
  const float* q = nullptr;       // token t, group head g at q + t·q_stride + g·head_dim
  int64_t q_stride = 0;
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  const KvSpan* spans = nullptr;
  int num_spans = 0;
  int64_t kv_len = 0;
  float* out = nullptr;           // same indexing as q, with out_stride
  int64_t out_stride = 0;
  float* lse = nullptr;           // optional [num_q x group]
  // Optional importance scores (LeanKV prefill): for every query t ≥ probs_q_begin,
  // probs[j] += max over the group of the final probability of token j.
  float* probs = nullptr;
  int64_t probs_q_begin = 0;
  // Optional with probs: the log-sum-exp to normalise query t, group head g by, at
  // probs_lse[t·group + g] — the total over several partitions of the history (LeanKV's high
  // and low lists), so the probabilities are those of the merged attention. Null: the chunk's
  // own lse.
  const float* probs_lse = nullptr;
  // 0: each query walks its history in one pass. > 0: a query whose history is longer is
  // computed as decode computes it: the history in blocks of split_tokens from position 0,
  // each normalised alone, merged by CombineDecode. Then a token's result is the same whether
  // it comes alone (a decode, or a prompt's last token left by the prefix cache) or inside a
  // chunk.
  int64_t split_tokens = 0;
  AttentionParams params;
};

// --- CUDA ---------------------------------------------------------------------------------
// Pages on the device in memory/'s layout: page p starts at base + p·page_bytes and holds
// tokens_per_page key rows, then as many value rows. page_table[(s·num_kv_heads + h)·max_pages
// + i] is the i-th page of sequence s, kv-head h.
struct DevicePagedKv {
  const uint8_t* base = nullptr;
  int64_t page_bytes = 0;
  int tokens_per_page = 16;
  const int32_t* page_table = nullptr;
  int max_pages = 0;
};

// One launch for a whole batch: sequence s owns query tokens [q_start[s], q_start[s+1]) of q
// and out ([tokens x num_kv_heads·group·head_dim], float); its history has kv_len[s] tokens
// and its query t sits at position kv_len[s] − q_len + t. All arrays are device pointers
// except the host-side sizes used for the grid.
struct CudaAttentionBatch {
  int num_seqs = 0;
  int num_kv_heads = 0;
  const float* q = nullptr;
  float* out = nullptr;
  const int32_t* q_start = nullptr;   // [num_seqs + 1]
  const int32_t* kv_len = nullptr;    // [num_seqs]
  DevicePagedKv kv;
  // alibi_slopes: device [num_heads]; head_subset: device [num_seqs x num_heads x subset_words]
  AttentionParams params;
  float* lse = nullptr;               // optional [tokens x num_heads]
  float* probs = nullptr;             // optional decode importance: [num_seqs·num_kv_heads x max_kv_len], accumulated
  int max_q_len = 0;                  // host: longest chunk
  int max_kv_len = 0;                 // host: longest history
  void* workspace = nullptr;          // split-KV partials (CudaAttentionWorkspaceBytes)
  size_t workspace_bytes = 0;
};

// Split-KV rule of the CUDA decode kernels: histories are cut into splits of at least
// kCudaMinSplitLen tokens (two 32-token tiles), at most kCudaMaxSplits of them (the workspace
// holds num_seqs·num_heads·splits partial rows). A CTA walks its split's tiles one after the
// other, so short splits keep a decode step from waiting on a few long walks: with 256-token
// splits one sequence of 512 tokens took 56 µs per layer on an H200 (docs/BENCHMARKS.md).
inline constexpr int kCudaMaxSplits = 32;
inline constexpr int kCudaMinSplitLen = 64;
inline int CudaDecodeSplitLen(int max_kv_len) {
  const int even = (max_kv_len + kCudaMaxSplits - 1) / kCudaMaxSplits;
  return even > kCudaMinSplitLen ? even : kCudaMinSplitLen;
}
inline int CudaDecodeSplits(int max_kv_len) {
  const int len = CudaDecodeSplitLen(max_kv_len);
  const int n = (max_kv_len + len - 1) / len;
  return n > 0 ? n : 1;
}

}  // namespace peng::kernels
