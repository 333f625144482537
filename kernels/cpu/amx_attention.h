// Prompt attention on Intel AMX tiles: the prefill of the tokens of long prompts, with
// q·k and p·v on the tile unit (TDPBF16PS) and the softmax on the vector unit.
//
// Why a second kernel: the generated CPU kernels (kernels/gen/) compute in float on the vector
// unit, ~170-210 GFLOP/s on two cores of the Intel machine, so prompts of thousands of tokens
// spent most of their time there (docs/BENCHMARKS.md, "AMX prompt attention": 650-965 GFLOP/s
// here). A (sequence, kv-head) history is first converted once into bfloat16 tiles
// (AmxConvertHistory), then every block of 16 query rows walks it 64 keys at a time: scores
// into four accumulator tiles, an online softmax per row in base 2 (running max, sum and
// rescale, as the vector kernels do), the probabilities rounded to bfloat16 and multiplied with
// the value tiles, and their sums taken on the tile unit too.
//
// Numerics: queries, keys, values and probabilities rounded to bfloat16, products summed in
// float; the denominator sums the rounded probabilities, so the weights multiplied are the
// weights normalised. A query row's result depends only on its own query, its position and the
// history: the keys are cut into blocks at fixed positions (multiples of 64) and each row's
// softmax runs alone, so a token's output is bitwise the same whatever rows share its tile and
// however its prompt was chunked. It is not the vector kernels' arithmetic: a token must take
// the same kernel every time it is computed (the engine routes by prompt, as the AMX matmuls).
//
// The variant is fixed: q·k times a scale, the causal mask, softmax; head_dim 64 or 128. The KV
// may be dense (f32, f16, bf16 pages, keys in key-lane blocks or rows) or quantized (each span
// in its own format, dequantized as the generated kernels dequantize it, then rounded to
// bfloat16).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/attention/args.h"
#include "kernels/kv_format.h"

namespace peng::kernels {

// Keys per block of the walk (and the history's padding unit).
inline constexpr int64_t kAmxKeyBlock = 64;

// Whether AmxPrefillAttention can run here for this format and head size (AMX-BF16 granted).
bool AmxAttentionSupports(KvFormat format, int head_dim);

// Bytes of a converted history of kv_len tokens: kv_len rounded up to kAmxKeyBlock, times
// head_dim, times 4 (bfloat16 keys and values).
size_t AmxHistoryBytes(int64_t kv_len, int head_dim);

// Converts tokens [begin, end) of one (sequence, kv-head) history (spans in order from position
// 0, `format`) into `history` (AmxHistoryBytes(kv_len, head_dim), 64-byte aligned). begin is a
// multiple of kAmxKeyBlock; end is one too or kv_len, and then the padding up to the next
// multiple is written as zeros. Disjoint ranges may be converted by different threads.
void AmxConvertHistory(const KvSpan* spans, int num_spans, KvFormat format, int head_dim, int64_t kv_len,
                       int64_t begin, int64_t end, uint8_t* history);

// Rows [row_begin, row_end) of a chunk's queries against a converted history. Row r is query
// token t = r / group, group head g = r % group, at position q_pos0 + t; it attends to
// positions [0, q_pos0 + t], which the history must cover.
struct AmxPrefillArgs {
  const float* q = nullptr;  // token t, group head g at q + t·q_stride + g·head_dim
  int64_t q_stride = 0;
  int64_t q_pos0 = 0;
  int group = 1;
  int head_dim = 64;
  int64_t row_begin = 0, row_end = 0;
  const uint8_t* history = nullptr;
  int64_t kv_len = 0;        // the length the history was converted for
  float* out = nullptr;      // same indexing as q, with out_stride
  int64_t out_stride = 0;
  float scale = 1.0f;
};

// Requires AmxAttentionSupports(format, a.head_dim).
void AmxPrefillAttention(const AmxPrefillArgs& a);

}  // namespace peng::kernels
