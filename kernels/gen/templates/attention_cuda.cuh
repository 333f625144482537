// CUDA attention template: the generator instantiates LaunchAttention<AttnSpec<...>> once per
// CUDA variant (kernels/gen/generate.py). Same decomposition as the CPU template
// (attention_cpu.h): rows = (query token, group head) pairs of one kv-head; kv tiles of
// kTileT tokens are staged in shared memory once per CTA and shared by every row (GQA reuse);
// each warp owns rows, one lane per tile token for the logits, one lane per head_dim slice for
// the output; online softmax with running max / sum / rescale, or sigmoid sums.
//
// Grid: x = (sequence, kv-head); y = query block (prefill) or kv split (decode). Decode with
// more than one split writes partials to the workspace and a combine kernel merges them by
// log-sum-exp (and turns kept logits into importance scores when batch.probs is set).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention/args.h"
#include "kernels/attention/variant.h"
#include "kernels/gen/templates/attn_spec.h"

namespace peng::kernels::gen::cuda {

template <AttentionPhase kPhase_, KvFormat kFormat_, int kHeadDim_, int kGroup_, ScoreMod kScore_,
          MaskMod kMask_, Reduction kReduction_>
struct AttnSpec : AttnTuple<kPhase_, kFormat_, kHeadDim_, kGroup_, kScore_, kMask_, kReduction_> {
  static_assert(!IsQuantized(kFormat_), "quantized KV formats have no CUDA kernels yet (spec.yaml backend_formats)");
  // Rows per CTA: the group times as many query tokens as fit in 16 rows (prefill).
  static constexpr int kTokensPerBlock =
      kPhase_ == AttentionPhase::kDecode ? 1 : (16 / kGroup_ > 0 ? 16 / kGroup_ : 1);
  static constexpr int kRows = kTokensPerBlock * kGroup_;
};

constexpr int kWarps = 4;
constexpr float kNegInf = -__builtin_huge_valf();
constexpr int kTileT = 32;  // kv tokens per tile = warp width

// Elements of a K/V row in one 16-byte load.
template <KvFormat F>
constexpr int kPieceElems = F == KvFormat::kF32 ? 4 : 8;

// One 16-byte piece of a K or V row (16-byte aligned: pages and rows are) as floats.
template <KvFormat F>
__device__ __forceinline__ void LoadKvPiece(const uint8_t* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  if constexpr (F == KvFormat::kF32) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 f;
      if constexpr (F == KvFormat::kF16) {
        f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
      } else {
        f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&words[i]));
      }
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
}

// h: the query head (indexes alibi_slopes); subset_row: the (sequence, head) row of head_subset.
template <class S>
__device__ __forceinline__ float ModScore(float s, int h, int q_pos, int kv_pos, const AttentionParams& p) {
  if constexpr (S::kScore == ScoreMod::kNone) return s;
  else if constexpr (S::kScore == ScoreMod::kScale) return s * p.scale;
  else if constexpr (S::kScore == ScoreMod::kSoftcap) return p.softcap * tanhf(s * p.scale / p.softcap);
  else return s * p.scale + p.alibi_slopes[h] * static_cast<float>(kv_pos - q_pos);
}

template <class S>
__device__ __forceinline__ bool Admit(int64_t subset_row, int q_pos, int kv_pos, const AttentionParams& p) {
  if constexpr (S::kMask == MaskMod::kCausal) return kv_pos <= q_pos;
  else if constexpr (S::kMask == MaskMod::kSlidingWindow) return kv_pos <= q_pos && kv_pos > q_pos - p.window;
  else if constexpr (S::kMask == MaskMod::kFull) return true;
  else return (p.head_subset[subset_row * p.subset_words + (kv_pos >> 6)] >> (kv_pos & 63)) & 1;
}

__device__ __forceinline__ float WarpMax(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float WarpSum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// part_o / part_lse: decode partials [(seq·num_heads + head)·splits + split]; raw: kept logits
// [(seq·num_kv_heads + kvh)·G + g][max_kv_len] (decode with probs).
template <class S>
__global__ void __launch_bounds__(kWarps * 32)
AttentionKernel(CudaAttentionBatch b, int split_len, int splits, float* part_o, float* part_lse, float* raw) {
  constexpr int HD = S::kHeadDim, G = S::kGroup, kRows = S::kRows;
  constexpr int kRowsPerWarp = (kRows + kWarps - 1) / kWarps;
  constexpr int kSlices = (HD + 31) / 32;  // output elements per lane
  constexpr bool kDecode = S::kPhase == AttentionPhase::kDecode;
  __shared__ float qs[kRows][HD];
  __shared__ float ks[kTileT][HD + 1];  // +1: lanes read different rows without bank conflicts
  __shared__ float vs[kTileT][HD];

  const int seq = blockIdx.x / b.num_kv_heads, kvh = blockIdx.x % b.num_kv_heads;
  const int q0 = b.q_start[seq], q_len = b.q_start[seq + 1] - q0, kv_len = b.kv_len[seq];
  const int num_heads = b.num_kv_heads * G;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t_first = kDecode ? 0 : blockIdx.y * S::kTokensPerBlock;
  if (!kDecode && t_first >= q_len) return;
  const int n_tok = kDecode ? 1 : min(S::kTokensPerBlock, q_len - t_first);
  const int rows = n_tok * G;

  for (int i = threadIdx.x; i < rows * HD; i += blockDim.x) {
    const int r = i / HD, d = i % HD;
    const int tok = q0 + t_first + r / G, head = kvh * G + r % G;
    qs[r][d] = b.q[(static_cast<int64_t>(tok) * num_heads + head) * HD + d];
  }
  if (raw != nullptr) {  // logits the mask skips stay -inf (probability 0)
    const int lo = blockIdx.y * split_len, hi = min(kv_len, lo + split_len);
    for (int i = threadIdx.x; i < G * max(0, hi - lo); i += blockDim.x) {
      raw[(static_cast<int64_t>(blockIdx.x) * G + i / (hi - lo)) * b.max_kv_len + lo + i % (hi - lo)] = kNegInf;
    }
  }
  // kv range of this CTA, clamped by the mask's block-level fast path.
  const int q_pos_lo = kv_len - q_len + t_first, q_pos_hi = q_pos_lo + n_tok - 1;
  int begin = kDecode ? blockIdx.y * split_len : 0;
  int end = kDecode ? min(kv_len, begin + split_len) : kv_len;
  if constexpr (S::kMask == MaskMod::kCausal || S::kMask == MaskMod::kSlidingWindow) end = min(end, q_pos_hi + 1);
  if constexpr (S::kMask == MaskMod::kSlidingWindow) begin = max(begin, q_pos_lo - static_cast<int>(b.params.window) + 1);

  float o[kRowsPerWarp][kSlices], m[kRowsPerWarp], l[kRowsPerWarp];
  for (int k = 0; k < kRowsPerWarp; ++k) {
    m[k] = kNegInf;
    l[k] = 0.0f;
    for (int c = 0; c < kSlices; ++c) o[k][c] = 0.0f;
  }
  constexpr int kElt = S::kFormat == KvFormat::kF32 ? 4 : 2;
  constexpr int kVec = kPieceElems<S::kFormat>, kPieces = HD / kVec;
  static_assert(HD % kVec == 0, "K/V rows are read in 16-byte pieces");
  const int tpp = b.kv.tokens_per_page;
  const int32_t* table = b.kv.page_table + static_cast<int64_t>(blockIdx.x) * b.kv.max_pages;
  __syncthreads();

  for (int j0 = begin; j0 < end; j0 += kTileT) {
    const int n = min(kTileT, end - j0);
    // The tile's K and V rows in 16-byte pieces, one page lookup per piece.
    for (int i = threadIdx.x; i < kTileT * kPieces; i += blockDim.x) {
      const int t = i / kPieces, d0 = (i % kPieces) * kVec;
      float kx[kVec], vx[kVec];
      if (t < n) {
        const int token = j0 + t;
        const uint8_t* page = b.kv.base + static_cast<int64_t>(table[token / tpp]) * b.kv.page_bytes;
        const uint8_t* krow = page + static_cast<int64_t>(token % tpp) * HD * kElt + d0 * kElt;
        LoadKvPiece<S::kFormat>(krow, kx);
        LoadKvPiece<S::kFormat>(krow + static_cast<int64_t>(tpp) * HD * kElt, vx);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) kx[e] = vx[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        ks[t][d0 + e] = kx[e];
        vs[t][d0 + e] = vx[e];
      }
    }
    __syncthreads();
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int r = warp + k * kWarps;
      if (r >= rows) break;
      const int g = r % G, q_pos = q_pos_lo + r / G, kv = j0 + lane;
      float s = 0.0f;
#pragma unroll 8
      for (int d = 0; d < HD; ++d) s += qs[r][d] * ks[lane][d];
      const int h = kvh * G + g;
      s = lane < n && Admit<S>(static_cast<int64_t>(seq) * num_heads + h, q_pos, kv, b.params)
              ? ModScore<S>(s, h, q_pos, kv, b.params) : kNegInf;
      if (raw != nullptr && lane < n) {
        raw[(static_cast<int64_t>(blockIdx.x) * G + g) * b.max_kv_len + kv] = s;
      }
      float p;
      if constexpr (S::kReduction == Reduction::kSoftmax) {
        const float tmax = WarpMax(s);
        if (tmax == kNegInf) continue;
        const float m_new = fmaxf(m[k], tmax);
        const float alpha = m[k] == kNegInf ? 0.0f : __expf(m[k] - m_new);
        p = s == kNegInf ? 0.0f : __expf(s - m_new);
        l[k] = l[k] * alpha + WarpSum(p);
        m[k] = m_new;
        for (int c = 0; c < kSlices; ++c) o[k][c] *= alpha;
      } else {
        p = s == kNegInf ? 0.0f : 1.0f / (1.0f + __expf(-s));
      }
      for (int t = 0; t < n; ++t) {
        const float pt = __shfl_sync(0xffffffffu, p, t);
        for (int c = 0; c < kSlices; ++c) {
          const int d = lane + 32 * c;
          if (d < HD) o[k][c] += pt * vs[t][d];
        }
      }
    }
    __syncthreads();
  }

  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int r = warp + k * kWarps;
    if (r >= rows) break;
    const int g = r % G, tok = q0 + t_first + r / G, head = kvh * G + g;
    const bool softmax = S::kReduction == Reduction::kSoftmax;
    const float inv = softmax ? (l[k] > 0.0f ? 1.0f / l[k] : 0.0f) : 1.0f;
    const float lse = softmax ? (l[k] > 0.0f ? m[k] + __logf(l[k]) : kNegInf) : 0.0f;
    float* dst;
    if (part_o != nullptr) {
      const int64_t slot = (static_cast<int64_t>(seq) * num_heads + head) * splits + blockIdx.y;
      dst = part_o + slot * HD;
      if (lane == 0) part_lse[slot] = lse;
    } else {
      dst = b.out + (static_cast<int64_t>(tok) * num_heads + head) * HD;
      if (lane == 0 && b.lse != nullptr) b.lse[static_cast<int64_t>(tok) * num_heads + head] = lse;
    }
    for (int c = 0; c < kSlices; ++c) {
      const int d = lane + 32 * c;
      if (d < HD) dst[d] = o[k][c] * inv;
    }
  }
}

// One CTA per (sequence, kv-head): merges the splits of every group head, then (probs) turns
// the kept logits into importance scores: probs[j] += max_g exp(s_g(j) − lse_g) (softmax) or
// max_g σ(s_g(j)).
template <class S>
__global__ void CombineKernel(CudaAttentionBatch b, int splits, const float* part_o, const float* part_lse,
                              const float* raw) {
  constexpr int HD = S::kHeadDim, G = S::kGroup;
  constexpr bool kSoftmax = S::kReduction == Reduction::kSoftmax;
  __shared__ float total[G];
  const int seq = blockIdx.x / b.num_kv_heads, kvh = blockIdx.x % b.num_kv_heads;
  const int num_heads = b.num_kv_heads * G;
  const int tok = b.q_start[seq];
  if (threadIdx.x < G) {
    float t = 0.0f;
    if (kSoftmax) {
      const float* lse = part_lse + (static_cast<int64_t>(seq) * num_heads + kvh * G + threadIdx.x) * splits;
      float mx = kNegInf;
      for (int i = 0; i < splits; ++i) mx = fmaxf(mx, lse[i]);
      float sum = 0.0f;
      if (mx != kNegInf) for (int i = 0; i < splits; ++i) sum += __expf(lse[i] - mx);
      t = mx == kNegInf ? kNegInf : mx + __logf(sum);
    }
    total[threadIdx.x] = t;
    if (b.lse != nullptr) b.lse[static_cast<int64_t>(tok) * num_heads + kvh * G + threadIdx.x] = t;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    const int64_t slot0 = (static_cast<int64_t>(seq) * num_heads + kvh * G + g) * splits;
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float li = part_lse[slot0 + s];
      const float w = kSoftmax ? (li == kNegInf ? 0.0f : __expf(li - total[g])) : 1.0f;
      if (w != 0.0f) acc += w * part_o[(slot0 + s) * HD + d];
    }
    b.out[(static_cast<int64_t>(tok) * num_heads + kvh * G + g) * HD + d] = acc;
  }
  if (raw == nullptr || b.probs == nullptr) return;
  const int kv_len = b.kv_len[seq];
  for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
    float best = 0.0f;
    for (int g = 0; g < G; ++g) {
      const float s = raw[(static_cast<int64_t>(blockIdx.x) * G + g) * b.max_kv_len + j];
      const float p = s == kNegInf ? 0.0f : kSoftmax ? __expf(s - total[g]) : 1.0f / (1.0f + __expf(-s));
      best = fmaxf(best, p);
    }
    b.probs[static_cast<int64_t>(blockIdx.x) * b.max_kv_len + j] += best;
  }
}

template <class S>
int LaunchAttention(const CudaAttentionBatch& b, cudaStream_t stream) {
  if (b.num_seqs <= 0) return cudaSuccess;
  const dim3 block(kWarps * 32);
  if constexpr (S::kPhase == AttentionPhase::kPrefill) {
    if (b.probs != nullptr) return cudaErrorNotSupported;  // prefill importance scores: CPU only for now
    const dim3 grid(b.num_seqs * b.num_kv_heads, (b.max_q_len + S::kTokensPerBlock - 1) / S::kTokensPerBlock);
    if (grid.y == 0) return cudaSuccess;
    AttentionKernel<S><<<grid, block, 0, stream>>>(b, 0, 1, nullptr, nullptr, nullptr);
  } else {
    const int split_len = CudaDecodeSplitLen(b.max_kv_len), splits = CudaDecodeSplits(b.max_kv_len);
    const bool with_probs = b.probs != nullptr;
    if (splits == 1 && !with_probs) {
      AttentionKernel<S><<<dim3(b.num_seqs * b.num_kv_heads, 1), block, 0, stream>>>(b, split_len, 1, nullptr, nullptr, nullptr);
    } else {
      const int num_heads = b.num_kv_heads * S::kGroup;
      const size_t parts = static_cast<size_t>(b.num_seqs) * num_heads * splits;
      const size_t need = parts * (S::kHeadDim + 1) * sizeof(float) +
                          (with_probs ? static_cast<size_t>(b.num_seqs) * num_heads * b.max_kv_len * sizeof(float) : 0);
      if (b.workspace == nullptr || b.workspace_bytes < need) return cudaErrorInvalidValue;
      float* part_o = static_cast<float*>(b.workspace);
      float* part_lse = part_o + parts * S::kHeadDim;
      float* raw = with_probs ? part_lse + parts : nullptr;
      AttentionKernel<S><<<dim3(b.num_seqs * b.num_kv_heads, splits), block, 0, stream>>>(b, split_len, splits, part_o,
                                                                                        part_lse, raw);
      CombineKernel<S><<<b.num_seqs * b.num_kv_heads, 256, 0, stream>>>(b, splits, part_o, part_lse, raw);
    }
  }
  return cudaGetLastError();
}

}  // namespace peng::kernels::gen::cuda
