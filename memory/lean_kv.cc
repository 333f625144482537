#include "memory/lean_kv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "kernels/cpu/kv_store.h"
#include "memory/kv_manager.h"
#include "memory/page_pool.h"

namespace peng::memory {
namespace {

// The most tokens of `format` a page of `bytes` holds (0 if not even one).
int TokensThatFit(kernels::KvFormat format, int head_dim, size_t bytes) {
  int n = 0;
  while (kernels::PageSegmentsOf(format, head_dim, n + 1).page_bytes <= bytes) ++n;
  return n;
}

// Copies token `from` of a page to token `to` of another page of the same layout: every
// segment's row (codes, meta, score, position).
void CopyToken(const kernels::KvPageSegments& seg, const uint8_t* src, int from, uint8_t* dst,
               int to) {
  const auto copy = [&](size_t offset, size_t row) {
    std::memcpy(dst + offset + to * row, src + offset + from * row, row);
  };
  copy(seg.k, seg.k_row);
  copy(seg.k_meta, seg.k_meta_row);
  copy(seg.v, seg.v_row);
  copy(seg.v_meta, seg.v_meta_row);
  copy(seg.scores, sizeof(float));
  copy(seg.positions, sizeof(int32_t));
}

float* ScoreAt(const kernels::KvPageSegments& seg, uint8_t* page, int slot) {
  return reinterpret_cast<float*>(page + seg.scores) + slot;
}
int32_t PositionAt(const kernels::KvPageSegments& seg, const uint8_t* page, int slot) {
  int32_t pos;
  std::memcpy(&pos, page + seg.positions + slot * sizeof(int32_t), sizeof(pos));
  return pos;
}

// Removes v[i] by moving the last element into its place.
template <class T>
void SwapRemove(std::vector<T>& v, size_t i) {
  v[i] = v.back();
  v.pop_back();
}

}  // namespace

absl::StatusOr<PageSizeChoice> ChoosePageSize(int head_dim, kernels::KvFormat high,
                                              kernels::KvFormat low, size_t min_bytes,
                                              size_t max_bytes) {
  PageSizeChoice best;
  size_t best_leftover = std::numeric_limits<size_t>::max();
  for (size_t bytes = (min_bytes + 31) / 32 * 32; bytes <= max_bytes; bytes += 32) {
    const int nh = TokensThatFit(high, head_dim, bytes), nl = TokensThatFit(low, head_dim, bytes);
    if (nh == 0 || nl == 0) continue;
    const size_t leftover =
        std::max(bytes - kernels::PageSegmentsOf(high, head_dim, nh).page_bytes,
                 bytes - kernels::PageSegmentsOf(low, head_dim, nl).page_bytes);
    if (leftover < best_leftover) {
      best_leftover = leftover;
      best = {bytes, nh, nl};
    }
  }
  if (best.page_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv.page_bytes range [", min_bytes, ", ", max_bytes, "] holds no page size that fits one ",
        kernels::KvFormatName(high), " and one ", kernels::KvFormatName(low), " token at head_dim ",
        head_dim, " (one ", kernels::KvFormatName(high), " token needs ",
        kernels::PageSegmentsOf(high, head_dim, 1).page_bytes, " bytes)"));
  }
  return best;
}

absl::Status ValidateLeanKv(const LeanKvOptions& o) {
  if (!kernels::IsQuantized(o.high) || !kernels::IsQuantized(o.low)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv.high_format ", kernels::KvFormatName(o.high), " / kv.low_format ",
        kernels::KvFormatName(o.low), ": LeanKV tiers must be quantized (k<bits>[g<groups>]v<bits>[g<groups>], e.g. k8v4, k4v2)"));
  }
  if (!(o.alpha_prune >= 0 && o.alpha_quant >= o.alpha_prune && std::isfinite(o.alpha_quant))) {
    return absl::InvalidArgumentError(absl::StrCat("kv.alpha_prune ", o.alpha_prune, " / kv.alpha_quant ",
                                                   o.alpha_quant, ": need 0 <= alpha_prune <= alpha_quant"));
  }
  if (o.window < 1 || o.score_queries < 1 || o.decide_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv.window ", o.window, ", score queries ",
                                                   o.score_queries, " and decide_every ",
                                                   o.decide_every, " must be positive"));
  }
  if (o.page_bytes_min > o.page_bytes_max || o.page_bytes_max > (size_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("kv.page_bytes_min ", o.page_bytes_min, " / max ",
                                                   o.page_bytes_max, ": need min <= max <= 1 MiB"));
  }
  return absl::OkStatus();
}

LeanKv::LeanKv(int num_tables, int head_dim, LeanKvOptions options, PageSizeChoice pages,
               PagePool* pool)
    : num_tables_(num_tables),
      head_dim_(head_dim),
      o_(options),
      pages_(pages),
      high_seg_(kernels::PageSegmentsOf(options.high, head_dim, pages.high_tokens)),
      low_seg_(kernels::PageSegmentsOf(options.low, head_dim, pages.low_tokens)),
      pool_(pool) {
  PENG_CHECK(high_seg_.page_bytes <= pool->page_bytes() && low_seg_.page_bytes <= pool->page_bytes());
}

int64_t LeanKv::HighPagesFor(int64_t tokens) const {
  return (tokens + pages_.high_tokens - 1) / pages_.high_tokens;
}
int64_t LeanKv::LowPagesFor(int64_t tokens) const {
  return (tokens + pages_.low_tokens - 1) / pages_.low_tokens;
}

LeanKv::Sequence& LeanKv::Touch(SeqId seq) {
  Sequence& s = seqs_[seq];
  if (s.tables.empty()) s.tables.resize(num_tables_);
  return s;
}

void LeanKv::EnsureSlots(Table& t, int64_t pages) {
  const int64_t old_size = static_cast<int64_t>(t.slots.size());
  if (pages <= old_size) return;
  const int64_t new_size = std::max<int64_t>({pages, 2 * old_size, 4});
  t.slots.resize(new_size, -1);
  // Rotate [old_size - low_pages, new_size) right by the growth, so the low pages end at the new
  // right end: three reversals, each a set of disjoint symmetric swaps (i <-> mirror of i).
  const auto reverse = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin, j = end - 1; i < j; ++i, --j) std::swap(t.slots[i], t.slots[j]);
  };
  const int64_t begin = old_size - t.low_pages, shift = new_size - old_size;
  reverse(begin, new_size);
  reverse(begin, begin + shift);
  reverse(begin + shift, new_size);
}

int64_t LeanKv::PagesToAdmit(int64_t new_len) const {
  return new_len > 0 ? num_tables_ * (HighPagesFor(new_len) + 1) : 0;
}

int64_t LeanKv::HighPagesNeeded(const Table& t, int64_t add) const {
  return std::max<int64_t>(0, HighPagesFor(t.num_high + add) - t.high_pages);
}

int64_t LeanKv::PagesToGrow(SeqId seq, int64_t new_len) const {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return PagesToAdmit(new_len);
  const Sequence& s = it->second;
  if (new_len <= s.reserved) return 0;
  int64_t pages = 0;
  const int64_t add = new_len - s.processed;
  for (const Table& t : s.tables) pages += HighPagesNeeded(t, add);
  return pages + num_tables_;
}

int64_t LeanKv::MaxTokens(int64_t total_pages) const {
  return std::max<int64_t>(0, total_pages / num_tables_ - 1) * pages_.high_tokens;
}

absl::Status LeanKv::Grow(std::span<const Growth> growths) {
  int64_t total = 0;
  for (const Growth& g : growths) total += PagesToGrow(g.seq, g.new_len);
  if (total > pool_->free_pages()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV grow: step needs up to ", total, " pages, ",
                                                     pool_->free_pages(), " free of ",
                                                     pool_->total_pages()));
  }
  std::vector<int64_t> needs;
  needs.reserve(growths.size() * num_tables_);
  for (const Growth& g : growths) {
    const Sequence& s = Touch(g.seq);
    for (const Table& t : s.tables) needs.push_back(HighPagesNeeded(t, g.new_len - s.processed));
  }
  absl::StatusOr<PageBatch> batch = pool_->Allocate(needs);
  PENG_CHECK(batch.ok());  // counted above
  size_t requester = 0;
  for (const Growth& g : growths) {
    Sequence& s = Touch(g.seq);
    for (Table& t : s.tables) {
      const std::span<const int32_t> got = batch->Of(requester++);
      EnsureSlots(t, t.high_pages + t.low_pages + static_cast<int64_t>(got.size()));
      for (const int32_t page : got) t.slots[t.high_pages++] = page;
    }
    s.reserved = std::max(s.reserved, g.new_len);
  }
  return absl::OkStatus();
}

void LeanKv::Free(SeqId seq) {
  const auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  std::vector<std::span<const int32_t>> groups;
  for (const Table& t : it->second.tables) {
    groups.emplace_back(t.slots.data(), t.high_pages);
    groups.emplace_back(t.slots.data() + t.slots.size() - t.low_pages, t.low_pages);
    if (it->second.processed > 0) {
      const double kept = static_cast<double>(t.num_high + t.num_low);
      const double sparsity = std::clamp(1.0 - kept / it->second.processed, 0.0, 1.0);
      finished_sparsity_.push_back(static_cast<float>(sparsity));
      ++finished_tables_;
      sparsity_sum_ += sparsity;
    }
  }
  pool_->Release(groups);
  seqs_.erase(it);
}

int64_t LeanKv::Length(SeqId seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.reserved;
}
int64_t LeanKv::Processed(SeqId seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.processed;
}
int64_t LeanKv::PromptLength(SeqId seq) const {
  const auto it = seqs_.find(seq);
  return it == seqs_.end() ? 0 : it->second.prompt_len;
}
void LeanKv::SetPrompt(SeqId seq, int64_t prompt_len) { Touch(seq).prompt_len = prompt_len; }

int64_t LeanKv::ScoreFrom(SeqId seq) const { return PromptLength(seq) - o_.score_queries; }

float LeanKv::MeanScore(float acc, int32_t pos, const Sequence& s, int64_t computed) const {
  const int64_t queries = computed - std::max<int64_t>(pos, s.prompt_len - o_.score_queries);
  return queries > 0 ? acc / static_cast<float>(queries) : std::numeric_limits<float>::infinity();
}

void LeanKv::Decide(const Sequence& s, const Table& t, int64_t computed, std::vector<Tok>* hi,
                    std::vector<Tok>* lo, Decisions* counts) const {
  hi->clear();
  lo->clear();
  // Each page's scores and positions are requested kAhead pages before they are read: pages lie
  // anywhere in the pool, where the hardware prefetchers do not follow, and a table's walk
  // otherwise waits for memory at every page.
  constexpr int64_t kAhead = 4;
  const auto request = [&](int32_t id, const kernels::KvPageSegments& seg, int tokens) {
    const uint8_t* page = pool_->Data(id);
    for (const size_t at : {seg.scores, seg.scores + 4 * (tokens - 1), seg.positions, seg.positions + 4 * (tokens - 1)}) {
      __builtin_prefetch(page + at);
    }
  };
  const int nh = pages_.high_tokens, nl = pages_.low_tokens;
  const int64_t high_pages = (t.num_high + nh - 1) / nh, low_pages = (t.num_low + nl - 1) / nl;
  for (int64_t k = 0; k < std::min(kAhead, high_pages); ++k) request(t.slots[k], high_seg_, nh);
  for (int64_t k = 0; k < std::min(kAhead, low_pages); ++k) request(t.Low(k), low_seg_, nl);
  for (int64_t i = 0; i < t.num_high; ++i) {
    if (i % nh == 0 && i / nh + kAhead < high_pages) request(t.slots[i / nh + kAhead], high_seg_, nh);
    uint8_t* page = pool_->Data(t.slots[i / nh]);
    const int slot = static_cast<int>(i % nh);
    const int32_t pos = PositionAt(high_seg_, page, slot);
    hi->push_back({MeanScore(*ScoreAt(high_seg_, page, slot), pos, s, computed), pos, i});
  }
  for (int64_t i = 0; i < t.num_low; ++i) {
    if (i % nl == 0 && i / nl + kAhead < low_pages) request(t.Low(i / nl + kAhead), low_seg_, nl);
    uint8_t* page = pool_->Data(t.Low(i / nl));
    const int slot = static_cast<int>(i % nl);
    const int32_t pos = PositionAt(low_seg_, page, slot);
    lo->push_back({MeanScore(*ScoreAt(low_seg_, page, slot), pos, s, computed), pos, i});
  }
  const int64_t protect_from = computed - o_.window;
  const auto demote = [](const Tok& x) { return Tok{x.mean, x.pos, -1 - x.src}; };
  if (s.processed < s.prompt_len) {
    // Prefill compression: one classification of the prompt against thresholds taken once.
    const double base = 1.0 / static_cast<double>(hi->size() + lo->size());
    const double prune_thr = o_.alpha_prune * base, quant_thr = o_.alpha_quant * base;
    for (size_t i = 0; i < hi->size();) {
      const Tok x = (*hi)[i];
      if (x.pos >= protect_from || x.mean >= quant_thr) {
        ++i;
        continue;
      }
      if (x.mean < prune_thr) {
        ++counts->pruned;
      } else {
        lo->push_back(demote(x));
        ++counts->demoted;
      }
      SwapRemove(*hi, i);
    }
    return;
  }
  // Decode rule, once per token since it last ran.
  for (int64_t n = computed - s.decided; n > 0; --n) {
    const double base = 1.0 / static_cast<double>(hi->size() + lo->size());
    const double prune_thr = o_.alpha_prune * base, quant_thr = o_.alpha_quant * base;
    int64_t l = -1, r = -1;
    for (size_t i = 0; i < hi->size(); ++i) {
      if ((*hi)[i].pos < protect_from && (l < 0 || (*hi)[i].mean < (*hi)[l].mean)) l = static_cast<int64_t>(i);
    }
    if (l < 0) break;
    for (size_t i = 0; i < lo->size(); ++i) {
      if (r < 0 || (*lo)[i].mean < (*lo)[r].mean) r = static_cast<int64_t>(i);
    }
    const Tok low_cand = (*hi)[l];
    if (low_cand.mean < prune_thr && (r < 0 || low_cand.mean < (*lo)[r].mean)) {
      ++counts->pruned;  // case 2: evict L; the new token keeps its slot
    } else if (low_cand.mean < quant_thr) {
      if (r >= 0 && (*lo)[r].mean < prune_thr) {  // case 3: demote L over R
        (*lo)[r] = demote(low_cand);
        ++counts->pruned;
      } else {                                    // case 3: demote L into a new low slot
        lo->push_back(demote(low_cand));
      }
      ++counts->demoted;
    } else {
      break;  // case 4: append; nothing would change for the remaining new tokens either
    }
    SwapRemove(*hi, static_cast<size_t>(l));
  }
}

void LeanKv::Commit(SeqId seq, int64_t computed) {
  const auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end());
  Sequence& s = it->second;
  PENG_CHECK(computed <= s.reserved);
  if (computed <= s.processed) return;
  const int64_t add = computed - s.processed;
  for (Table& t : s.tables) t.num_high += add;
  // Mid-prompt: compress once the whole prompt is in. After it: every decide_every tokens.
  const bool prompt_ends = s.processed < s.prompt_len;
  if (computed < s.prompt_len || (!prompt_ends && computed - s.decided < o_.decide_every)) {
    s.processed = computed;
    return;
  }
  const int nh = pages_.high_tokens, nl = pages_.low_tokens;
  // A table's demoted tokens, staged as floats (read before any move overwrites their high
  // slot): values holds each one's keys then values, head_dim each.
  struct Staged {
    std::vector<int64_t> low_index;
    std::vector<float> score;
    std::vector<int32_t> pos;
    std::vector<float> values;
  };
  std::vector<Staged> staged(num_tables_);
  std::vector<std::span<const int32_t>> released(num_tables_);
  std::vector<int64_t> needs(num_tables_, 0);
  std::vector<Decisions> counts(num_tables_);
  const auto for_tables = [&](const std::function<void(int64_t, int64_t)>& fn) {
    if (parallel_for_) parallel_for_(num_tables_, fn);
    else fn(0, num_tables_);
  };
  // 1-3 per table; a table's work touches its own entries and pages only.
  for_tables([&](int64_t begin, int64_t end) {
    std::vector<Tok> hi, lo;
    for (int64_t ti = begin; ti < end; ++ti) {
      Table& t = s.tables[ti];
      Decide(s, t, computed, &hi, &lo, &counts[ti]);
      // 1. Stage demoted tokens.
      Staged& st = staged[ti];
      for (size_t j = 0; j < lo.size(); ++j) {
        if (lo[j].src >= 0) {
          PENG_CHECK(lo[j].src == static_cast<int64_t>(j));  // low entries never move
          continue;
        }
        const int64_t h = -1 - lo[j].src;
        uint8_t* page = pool_->Data(t.slots[h / nh]);
        const int slot = static_cast<int>(h % nh);
        st.low_index.push_back(static_cast<int64_t>(j));
        st.score.push_back(*ScoreAt(high_seg_, page, slot));
        st.pos.push_back(PositionAt(high_seg_, page, slot));
        st.values.resize(st.values.size() + 2 * head_dim_);
        float* k = st.values.data() + st.values.size() - 2 * head_dim_;
        kernels::LoadKvToken(o_.high, head_dim_, nh, page, slot, k, k + head_dim_);
      }
      // 2. Compact the high list: survivors that moved come from past its new end.
      for (size_t i = 0; i < hi.size(); ++i) {
        const int64_t from = hi[i].src;
        if (from == static_cast<int64_t>(i)) continue;
        PENG_CHECK(from >= static_cast<int64_t>(hi.size()));
        CopyToken(high_seg_, pool_->Data(t.slots[from / nh]), static_cast<int>(from % nh),
                  pool_->Data(t.slots[i / nh]), static_cast<int>(i % nh));
      }
      // 3. Page needs: release emptied high pages (keeping room Grow gave to tokens not yet
      // computed), ask for new low pages.
      const int64_t high_pages = HighPagesFor(static_cast<int64_t>(hi.size()) + s.reserved - computed);
      released[ti] = std::span<const int32_t>(t.slots.data() + high_pages, t.high_pages - high_pages);
      needs[ti] = std::max<int64_t>(0, LowPagesFor(static_cast<int64_t>(lo.size())) - t.low_pages);
      t.num_high = static_cast<int64_t>(hi.size());
      t.num_low = static_cast<int64_t>(lo.size());
    }
  });
  for (const Decisions& c : counts) {
    pruned_ += c.pruned;
    demoted_ += c.demoted;
  }
  // 4. One batched release, one batched allocation (the step's headroom covers the rest).
  pool_->Release(released);
  for (int ti = 0; ti < num_tables_; ++ti) {
    Table& t = s.tables[ti];
    const int64_t high_pages = HighPagesFor(t.num_high + s.reserved - computed);
    std::fill(t.slots.begin() + high_pages, t.slots.begin() + t.high_pages, -1);
    t.high_pages = static_cast<int32_t>(high_pages);
  }
  absl::StatusOr<PageBatch> batch = pool_->Allocate(needs);
  PENG_CHECK(batch.ok());  // Grow checked one page of headroom per table; a table nets <= 1
  for (int ti = 0; ti < num_tables_; ++ti) {
    Table& t = s.tables[ti];
    const std::span<const int32_t> got = batch->Of(ti);
    EnsureSlots(t, t.high_pages + t.low_pages + static_cast<int64_t>(got.size()));
    for (const int32_t page : got) t.slots[t.slots.size() - 1 - t.low_pages++] = page;
  }
  // 5. Write the demoted tokens in the low layout, keeping their scores and positions.
  for_tables([&](int64_t begin, int64_t end) {
    for (int64_t ti = begin; ti < end; ++ti) {
      const Table& t = s.tables[ti];
      const Staged& st = staged[ti];
      for (size_t j = 0; j < st.low_index.size(); ++j) {
        uint8_t* page = pool_->Data(t.Low(st.low_index[j] / nl));
        const int slot = static_cast<int>(st.low_index[j] % nl);
        const float* k = st.values.data() + 2 * head_dim_ * j;
        kernels::StoreKvToken(o_.low, head_dim_, nl, k, k + head_dim_, st.pos[j], slot, page);
        *ScoreAt(low_seg_, page, slot) = st.score[j];
      }
    }
  });
  s.processed = computed;
  s.decided = computed;
}

LeanHeadLists LeanKv::Lists(SeqId seq, int table) const {
  const auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end());
  const Table& t = it->second.tables[table];
  return {t.slots, t.high_pages, t.low_pages, t.num_high, t.num_low};
}

LeanKv::StoreSlot LeanKv::SlotForStore(SeqId seq, int table, int64_t pos) const {
  const auto it = seqs_.find(seq);
  PENG_CHECK(it != seqs_.end());
  const Sequence& s = it->second;
  const Table& t = s.tables[table];
  PENG_CHECK(pos >= s.processed && pos < s.reserved);
  const int64_t index = t.num_high + (pos - s.processed);
  PENG_CHECK(index < int64_t{t.high_pages} * pages_.high_tokens);
  return {t.slots[index / pages_.high_tokens], static_cast<int>(index % pages_.high_tokens)};
}

LeanKvStats LeanKv::stats() const {
  LeanKvStats st;
  st.tokens_pruned = pruned_;
  st.tokens_demoted = demoted_;
  st.finished_tables = finished_tables_;
  st.sparsity_sum = sparsity_sum_;
  for (const auto& [id, s] : seqs_) {
    st.logical_tokens += s.processed * num_tables_;
    for (const Table& t : s.tables) {
      st.high_tokens += t.num_high;
      st.low_tokens += t.num_low;
      st.pages += t.high_pages + t.low_pages;
    }
  }
  return st;
}

}  // namespace peng::memory
