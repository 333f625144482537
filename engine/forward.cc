#include "engine/forward.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/dequantize.h"
#include "kernels/cpu/interleaved.h"
#include "kernels/cpu/ops.h"

namespace peng {
namespace {

void AddInPlace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template <typename T>
void Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Below this many activation elements per matmul input, every thread quantizes the whole input
// itself rather than the pool splitting the work and meeting at a barrier.
constexpr int64_t kPerThreadQuantizeMax = 16 * 1024;

// MatMuls cuts each thread's rows of a matrix into about this many pieces.
constexpr int64_t kPiecesPerThread = 4;

}  // namespace

uint8_t* LlamaForward::AlignedScratch::Grow(size_t n) {
  if (n > bytes) {
    data = AllocateHuge(n);
    PENG_CHECK(data != nullptr);  // scratch of the batch's size: the KV budget left room for it
    std::memset(data.get(), 0, n);
    bytes = n;
  }
  return data.get();
}

void LlamaForward::MatMulInput::Reserve(int64_t n, int64_t cols, bool amx) {
  Grow(codes, static_cast<size_t>(n * cols));
  Grow(scales, static_cast<size_t>(n * cols / 16));
  if (amx) bf16.Grow(static_cast<size_t>((n + kernels::kAmxTokenBlock) * cols) * sizeof(uint16_t));
}

void LlamaForward::MatMulInput::Prepare(const float* x, int64_t cols, int64_t t0, int64_t t1,
                                        std::span<const RowSegment> segments) {
  for (const RowSegment& s : segments) {
    const int64_t b = std::max(t0, s.begin), e = std::min(t1, s.end);
    if (b >= e) continue;
    if (s.amx) {
      kernels::ConvertToBf16(x + b * cols, cols, e - b, cols, bf16_row(b, cols));
    } else {
      kernels::QuantizeActivations(x + b * cols, cols, e - b, cols, codes.data() + b * cols,
                                   scales.data() + b * (cols / 16));
    }
  }
}

LlamaForward::LlamaForward(const Model& model, const ForwardOptions& options)
    : model_(model),
      c_(model.config),
      options_(options),
      amx_(options.amx_prompts && options.int8_activations && kernels::HasAmxBf16()),
      pool_(options.num_threads, options.pinning),
      attention_(model.config) {
  attention_.SetAmxPrompts(amx_ && options.amx_attention ? options.amx_min_prompt : 0);
}

void LlamaForward::MatMuls(std::initializer_list<MatMulJob> jobs, int64_t n,
                           std::span<const RowSegment> segments,
                           const std::function<void(int64_t, int64_t)>& epilogue) {
  const bool blas = n >= options_.blas_min_tokens;
  PENG_CHECK(jobs.size() <= 4);
  std::array<int64_t, 4> dense_offset;  // per job: where its dequantized rows go (sgemm path)
  int64_t max_cols = 0, dense_floats = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const kernels::MatrixView& w = *jobs.begin()[i].w;
    max_cols = std::max(max_cols, w.cols);
    dense_offset[i] = dense_floats;
    dense_floats += w.rows * w.cols;
  }
  const int nt = pool_.num_threads();
  if (blas) Grow(dense_w_, static_cast<size_t>(dense_floats));
  Grow(row_scratch_, static_cast<size_t>(nt) * max_cols);

  // The distinct inputs of the int8 jobs: jobs over one input share its quantized copy.
  std::array<int, 4> input_of;               // per job: its input, or -1 (not int8)
  std::array<const MatMulJob*, 4> inputs{};  // per input: the first job reading it
  std::array<const MatMulInput*, 4> ready{};  // per input: the caller's prepared copy, or null
  int num_inputs = 0;
  int64_t int8_elements = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const MatMulJob& j = jobs.begin()[i];
    input_of[i] = -1;
    if (!Int8Reads(*j.w)) continue;
    for (int k = 0; k < num_inputs; ++k) {
      if (inputs[k]->x == j.x) input_of[i] = k;
    }
    if (input_of[i] < 0) {
      input_of[i] = num_inputs;
      ready[num_inputs] = j.xq;
      inputs[num_inputs++] = &j;
      if (j.xq == nullptr) int8_elements += n * j.w->cols;
    }
  }
  const bool any_amx = std::any_of(segments.begin(), segments.end(), [](const RowSegment& s) { return s.amx; });
  const bool per_thread = int8_elements <= kPerThreadQuantizeMax;
  if (per_thread) inputs_per_thread_.resize(nt);
  auto buffers = [&](int t) -> std::vector<MatMulInput>& { return per_thread ? inputs_per_thread_[t] : inputs_shared_; };
  for (int t = 0; t < (per_thread ? nt : 1); ++t) {
    std::vector<MatMulInput>& set = buffers(t);
    if (set.size() < static_cast<size_t>(num_inputs)) set.resize(num_inputs);
    for (int k = 0; k < num_inputs; ++k) {
      if (ready[k] == nullptr) set[k].Reserve(n, inputs[k]->w->cols, any_amx);
    }
  }
  if (!per_thread && int8_elements > 0) {
    pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int k = 0; k < num_inputs; ++k) {
        if (ready[k] == nullptr) inputs_shared_[k].Prepare(inputs[k]->x, inputs[k]->w->cols, b, e, segments);
      }
    });
  }

  // The work: each thread owns the same fraction of every matrix's rows, as pieces it takes in
  // order; a thread out of pieces takes the others' last ones. So a thread the OS deschedules
  // (the HTTP threads, a client, another process on its CPU) holds up only the piece it is on.
  // With an epilogue, a piece covers the same rows of every matrix, then the epilogue runs on
  // them.
  if (epilogue) {
    for (const MatMulJob& j : jobs) PENG_CHECK(j.w->rows == jobs.begin()->w->rows);
  }
  if (any_amx) {
    if (amx_scratch_.size() < static_cast<size_t>(nt)) amx_scratch_.resize(nt);
    for (AlignedScratch& s : amx_scratch_) s.Grow(kernels::AmxScratchBytes(max_cols));
  }
  // Pieces in multiples of the kernels' row tiles: 2 groups of 16 rows for batches, 8 for one token.
  const int64_t tile_rows = n == 1 ? 128 : 32;
  row_ranges_.clear();
  if (claims_.size() < static_cast<size_t>(nt)) claims_ = std::vector<Claim>(nt);
  for (int t = 0; t < nt; ++t) {
    const size_t first = row_ranges_.size();
    for (size_t i = 0; i < (epilogue ? 1 : jobs.size()); ++i) {
      const int64_t rows = jobs.begin()[i].w->rows, groups = (rows + 15) / 16;
      // Row ranges in multiples of 16 so threads never share an output cache line.
      const int64_t r0 = std::min(rows, groups * t / nt * 16), r1 = std::min(rows, groups * (t + 1) / nt * 16);
      const int64_t piece = std::max(tile_rows, (r1 - r0 + kPiecesPerThread * tile_rows - 1) /
                                                    (kPiecesPerThread * tile_rows) * tile_rows);
      for (int64_t r = r0; r < r1; r += piece) {
        row_ranges_.push_back({epilogue ? -1 : static_cast<int>(i), r, std::min(r1, r + piece), r1});
      }
    }
    claims_[t].Reset(first, row_ranges_.size());
  }

  pool_.RunShared([&](int t) {
    std::vector<MatMulInput>& prepared = buffers(t);
    if (per_thread) {
      for (int k = 0; k < num_inputs; ++k) {
        if (ready[k] == nullptr) prepared[k].Prepare(inputs[k]->x, inputs[k]->w->cols, 0, n, segments);
      }
    }
    const auto run = [&](int job, int64_t r0, int64_t r1, int64_t next_end) {
      const MatMulJob& j = jobs.begin()[job];
      const kernels::MatrixView& w = *j.w;
      if (input_of[job] >= 0) {
        const int k = input_of[job];
        const MatMulInput& in = ready[k] != nullptr ? *ready[k] : prepared[k];
        for (const RowSegment& s : segments) {
          float* y = j.y + s.begin * w.rows;
          if (s.amx) {
            kernels::MatMulInterleavedAmx(w.type, w.data, w.cols, in.bf16_row(s.begin, w.cols), s.end - s.begin,
                                          y, w.rows, r0, r1, amx_scratch_[t].data.get());
          } else {
            kernels::MatMulInterleavedInt8(w.type, w.data, w.cols, in.codes.data() + s.begin * w.cols,
                                           in.scales.data() + s.begin * (w.cols / 16), s.end - s.begin, y,
                                           w.rows, r0, r1, next_end);
          }
        }
      } else if (blas && !w.interleaved) {  // interleaved matrices are as fast through MatMulRows
        // Dequantize these rows once, then one sgemm over them for all n tokens. Peng's pool
        // splits the rows; oneDNN must not start OpenMP threads of its own.
        static thread_local const bool kSingleThreaded = (omp_set_num_threads(1), true);
        (void)kSingleThreaded;
        float* dense = dense_w_.data() + dense_offset[job] + r0 * w.cols;
        kernels::DequantizeRows(w, r0, r1, dense);
        dnnl_sgemm('N', 'T', n, r1 - r0, w.cols, 1.0f, j.x, w.cols, dense, w.cols, 0.0f, j.y + r0, w.rows);
      } else {
        kernels::MatMulRows(w, j.x, w.cols, n, j.y, w.rows, r0, r1, row_scratch_.data() + t * max_cols);
      }
    };
    // A stolen piece has no next piece on this thread: nothing to fetch ahead.
    const auto piece = [&](const RowRange& range, bool own) {
      const int64_t next_end = own ? range.owner_end : 0;
      if (range.job >= 0) return run(range.job, range.r0, range.r1, next_end);
      for (size_t job = 0; job < jobs.size(); ++job) run(static_cast<int>(job), range.r0, range.r1, next_end);
      epilogue(range.r0, range.r1);
    };
    for (int64_t i; (i = claims_[t].TakeFront()) >= 0;) piece(row_ranges_[i], true);
    for (int k = 1; k < nt; ++k) {
      Claim& other = claims_[(t + k) % nt];
      for (int64_t i; (i = other.TakeBack()) >= 0;) piece(row_ranges_[i], false);
    }
  });
}

int64_t LlamaForward::Claim::TakeFront() {
  uint64_t v = span.load(std::memory_order_relaxed);
  while (static_cast<uint32_t>(v) < (v >> 32)) {
    if (span.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return static_cast<uint32_t>(v);
  }
  return -1;
}

int64_t LlamaForward::Claim::TakeBack() {
  uint64_t v = span.load(std::memory_order_relaxed);
  while (static_cast<uint32_t>(v) < (v >> 32)) {
    if (span.compare_exchange_weak(v, v - (uint64_t{1} << 32), std::memory_order_relaxed)) return (v >> 32) - 1;
  }
  return -1;
}

absl::Status LlamaForward::Forward(const ForwardBatch& batch, KvCache& kv, ForwardOutput* out) {
  PENG_ASSIGN_OR_RETURN(const BatchTotals totals, CheckBatch(batch, c_));
  const int64_t n = totals.tokens, logit_rows = totals.logit_rows;
  PENG_RETURN_IF_ERROR(attention_.Prepare(kv.format(), kv.low_format()));
  for (const SequenceChunk& ch : batch.chunks) {
    PENG_RETURN_IF_ERROR(kv.Reserve(ch.seq, ch.start_pos + static_cast<int64_t>(ch.tokens.size())));
  }
  for (int l = 0; l < c_.num_layers; ++l) {
    if (!model_.weights.layers[l]) {
      return absl::FailedPreconditionError(absl::StrCat("layer ", l, " is not loaded on this worker"));
    }
  }

  const int64_t d = c_.d_model, qd = int64_t{c_.num_heads} * c_.head_dim;
  const int64_t kvd = int64_t{c_.num_kv_heads} * c_.head_dim;
  Grow(x_, n * d);
  Grow(xn_, n * std::max(d, qd));
  Grow(q_, n * qd);
  Grow(k_, n * kvd);
  Grow(v_, n * kvd);
  Grow(attn_, n * qd);
  Grow(gate_, n * c_.ffn_dim);
  Grow(up_, n * c_.ffn_dim);
  pos_.resize(n);
  chunk_of_.resize(n);
  const int64_t half = c_.rope_dim / 2;
  Grow(rope_cos_, n * half);
  Grow(rope_sin_, n * half);

  const kernels::MatrixView& embd = model_.weights.token_embd.view();
  segments_.clear();
  const auto add_row = [](std::vector<RowSegment>& segments, int64_t row, bool amx) {
    if (!segments.empty() && segments.back().amx == amx) {
      segments.back().end = row + 1;
    } else {
      segments.push_back({row, row + 1, amx});
    }
  };
  row_amx_.resize(n);
  int64_t t = 0;
  for (size_t ci = 0; ci < batch.chunks.size(); ++ci) {
    const SequenceChunk& ch = batch.chunks[ci];
    for (size_t i = 0; i < ch.tokens.size(); ++i, ++t) {
      pos_[t] = ch.start_pos + static_cast<int64_t>(i);
      row_amx_[t] = amx_ && ch.prompt_len >= options_.amx_min_prompt && pos_[t] < ch.prompt_len;
      add_row(segments_, t, row_amx_[t]);
      chunk_of_[t] = static_cast<int32_t>(ci);
      kernels::RopeAngles(c_.rope_dim, pos_[t], c_.rope_inv_freq.data(), rope_cos_.data() + t * half,
                          rope_sin_.data() + t * half);
      kernels::DequantizeRows(embd, ch.tokens[i], ch.tokens[i] + 1, x_.data() + t * d);
    }
  }

  // Layer 0's attention norm; each layer normalises the next one's input with its last residual.
  xn_q_.Reserve(n, d, amx_);
  const LayerWeights& first = *model_.weights.layers[0];
  const bool quantize_first = Int8Reads(first.wq.view());
  pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) { NormRows(b, e, first.attn_norm, quantize_first); });
  for (int l = 0; l < c_.num_layers; ++l) RunLayer(l, batch, kv, n);

  // Final norm and LM head over the requested rows only.
  // A prompt's rows take the AMX kernel here only when it asks for every row's logits (prompt
  // logprobs): for one row per prompt, dequantizing the whole LM head is not repaid. Its last
  // row never does: that row samples the first token, which must not depend on whether the
  // request also asked for prompt logprobs.
  std::vector<int64_t> rows;
  rows.reserve(logit_rows);
  logit_segments_.clear();
  t = 0;
  for (const SequenceChunk& ch : batch.chunks) {
    const int64_t len = static_cast<int64_t>(ch.tokens.size());
    if (ch.logits == SequenceChunk::Logits::kAll) {
      for (int64_t i = 0; i < len; ++i) {
        const bool samples_first_token = ch.start_pos + i == ch.prompt_len - 1;
        add_row(logit_segments_, static_cast<int64_t>(rows.size()), row_amx_[t + i] && !samples_first_token);
        rows.push_back(t + i);
      }
    } else if (ch.logits == SequenceChunk::Logits::kLast) {
      add_row(logit_segments_, static_cast<int64_t>(rows.size()), false);
      rows.push_back(t + len - 1);
    }
    t += len;
  }
  const int64_t m = static_cast<int64_t>(rows.size());
  for (int64_t r = 0; r < m; ++r) {
    kernels::RmsNormRow(x_.data() + rows[r] * d, model_.weights.output_norm.data(), c_.rms_eps, d,
                        xn_.data() + r * d);
  }
  out->vocab_size = c_.vocab_size;
  out->logits.resize(static_cast<size_t>(m) * c_.vocab_size);
  if (m > 0) MatMuls({{&model_.weights.lm_head(), xn_.data(), out->logits.data()}}, m, logit_segments_);
  return absl::OkStatus();
}

void LlamaForward::RunLayer(int layer, const ForwardBatch& batch, KvCache& kv, int64_t n) {
  const LayerWeights& w = *model_.weights.layers[layer];
  const int64_t d = c_.d_model, hd = c_.head_dim;
  const int64_t qd = c_.num_heads * hd, kvd = c_.num_kv_heads * hd;

  // xn_ holds this layer's attention-normed input (Forward or the previous layer's last pass),
  // and xn_q_ its int8 copy when the int8 kernels read wq.
  const MatMulInput* attn_in = Int8Reads(w.wq.view()) ? &xn_q_ : nullptr;
  MatMuls({{&w.wq.view(), xn_.data(), q_.data(), attn_in},
           {&w.wk.view(), xn_.data(), k_.data(), attn_in},
           {&w.wv.view(), xn_.data(), v_.data(), attn_in}},
          n, segments_);

  pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* q = q_.data() + t * qd;
      float* k = k_.data() + t * kvd;
      float* v = v_.data() + t * kvd;
      if (c_.qkv_bias) {
        AddInPlace(q, w.bq.data(), qd);
        AddInPlace(k, w.bk.data(), kvd);
        AddInPlace(v, w.bv.data(), kvd);
      }
      const float* cs = rope_cos_.data() + t * (c_.rope_dim / 2);
      const float* sn = rope_sin_.data() + t * (c_.rope_dim / 2);
      kernels::RopeRotate(q, c_.num_heads, c_.head_dim, c_.rope_dim, cs, sn, c_.rope_style);
      kernels::RopeRotate(k, c_.num_kv_heads, c_.head_dim, c_.rope_dim, cs, sn, c_.rope_style);
      const SequenceChunk& ch = batch.chunks[chunk_of_[t]];
      for (int h = 0; h < c_.num_kv_heads; ++h) {
        kv.Store(ch.seq, layer, h, pos_[t], k + h * hd, v + h * hd);
      }
    }
  });

  attention_.Run(pool_, layer, batch, kv, q_.data(), attn_.data());

  MatMuls({{&w.wo.view(), attn_.data(), xn_.data()}}, n, segments_);
  const bool quantize_ffn = Int8Reads(w.w_gate.view());
  pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) AddInPlace(x_.data() + t * d, xn_.data() + t * d, d);
    NormRows(b, e, w.ffn_norm, quantize_ffn);
  });
  const int64_t ffn = c_.ffn_dim;
  const MatMulInput* ffn_in = quantize_ffn ? &xn_q_ : nullptr;
  MatMuls({{&w.w_gate.view(), xn_.data(), gate_.data(), ffn_in}, {&w.w_up.view(), xn_.data(), up_.data(), ffn_in}}, n,
          segments_, [&](int64_t r0, int64_t r1) {
            for (int64_t t = 0; t < n; ++t) {
              kernels::SiluMulRow(gate_.data() + t * ffn + r0, up_.data() + t * ffn + r0, r1 - r0);
            }
          });
  MatMuls({{&w.w_down.view(), gate_.data(), xn_.data()}}, n, segments_);
  const LayerWeights* next = layer + 1 < c_.num_layers ? model_.weights.layers[layer + 1].get() : nullptr;
  const bool quantize_next = next != nullptr && Int8Reads(next->wq.view());
  pool_.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) AddInPlace(x_.data() + t * d, xn_.data() + t * d, d);
    if (next != nullptr) NormRows(b, e, next->attn_norm, quantize_next);
  });
}

bool LlamaForward::Int8Reads(const kernels::MatrixView& w) const {
  return options_.int8_activations && kernels::HasInt8MatMul() && w.interleaved;
}

void LlamaForward::NormRows(int64_t b, int64_t e, const std::vector<float>& weight, bool quantize) {
  const int64_t d = c_.d_model;
  for (int64_t t = b; t < e; ++t) {
    kernels::RmsNormRow(x_.data() + t * d, weight.data(), c_.rms_eps, d, xn_.data() + t * d);
  }
  if (quantize) xn_q_.Prepare(xn_.data(), d, b, e, segments_);
}

}  // namespace peng
