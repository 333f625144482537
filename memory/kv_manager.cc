#include "memory/kv_manager.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status.h"
#include "memory/page_pool.h"

namespace peng::memory {
namespace {

// A logical block: one page per (layer, kv-head), covering the same tokens_per_page tokens.
// Shared by every sequence that references it (ref); cached blocks also have a PrefixCache
// entry, and stay alive at ref 0 until evicted.
struct Block {
  std::vector<int32_t> pages;  // [layer * num_kv_heads + kv_head]
  int32_t ref = 0;
};

struct Sequence {
  std::vector<int32_t> blocks;               // block ids in token order
  std::vector<std::vector<int32_t>> tables;  // [layer * num_kv_heads + kv_head] -> page ids
  int64_t committed_blocks = 0;              // leading full blocks already computed
  PrefixCache::Link chain = PrefixCache::kRoot;  // hash chain after the committed blocks
  bool chain_broken = false;                 // a hash collision stopped registration
};

absl::StatusOr<PageSizeChoice> LeanPages(const KvShape& shape, const KvManagerOptions& o) {
  return ChoosePageSize(shape.head_dim, o.lean.high, o.lean.low, o.lean.page_bytes_min,
                        o.lean.page_bytes_max);
}

// Options must be valid (Validate).
size_t PageBytes(const KvShape& shape, const KvManagerOptions& options) {
  if (options.leankv) {
    const absl::StatusOr<PageSizeChoice> pages = LeanPages(shape, options);
    PENG_CHECK(pages.ok());
    return pages->page_bytes;
  }
  return kernels::PageSegmentsOf(options.format, shape.head_dim, options.tokens_per_page).page_bytes;
}

// Pages a sequence needs at least: one block (dense) or one page per table plus the step
// headroom (LeanKV).
int64_t MinPages(const KvShape& shape, const KvManagerOptions& options) {
  const int64_t tables = static_cast<int64_t>(shape.num_layers) * shape.num_kv_heads;
  return options.leankv ? 2 * tables : tables;
}

}  // namespace

struct KvManager::Impl {
  Impl(KvShape s, KvManagerOptions o, std::unique_ptr<PagePool> p)
      : shape(s),
        options(o),
        page_bytes(PageBytes(s, o)),
        pages_per_block(static_cast<int64_t>(s.num_layers) * s.num_kv_heads),
        pool(std::move(p)),
        cache(o.block_hash) {
    if (o.leankv) {
      const absl::StatusOr<PageSizeChoice> pages = LeanPages(s, o);
      PENG_CHECK(pages.ok());
      lean = std::make_unique<LeanKv>(static_cast<int>(pages_per_block), s.head_dim, o.lean, *pages,
                                      pool.get());
    }
  }

  // Validate() must have accepted shape and options.
  static absl::StatusOr<std::unique_ptr<PagePool>> MakePool(const KvShape& s,
                                                             const KvManagerOptions& o) {
    const size_t bytes = PageBytes(s, o);
    return PagePool::Create(bytes, static_cast<int64_t>(o.budget_bytes / bytes), o.page_memory);
  }

  int64_t BlocksFor(int64_t tokens) const {
    return (std::max<int64_t>(tokens, 0) + options.tokens_per_page - 1) / options.tokens_per_page;
  }
  int64_t FreePages() const {
    return pool->free_pages() + cache.num_evictable() * pages_per_block;
  }
  const Sequence* Find(SeqId seq) const {
    const auto it = seqs.find(seq);
    return it == seqs.end() ? nullptr : &it->second;
  }
  Sequence& Touch(SeqId seq) {
    Sequence& s = seqs[seq];
    if (s.tables.empty()) s.tables.resize(pages_per_block);
    return s;
  }
  void Append(Sequence& s, int32_t block) {
    s.blocks.push_back(block);
    const std::vector<int32_t>& pages = blocks[block].pages;
    for (int64_t t = 0; t < pages_per_block; ++t) s.tables[t].push_back(pages[t]);
  }
  int32_t NewBlockId() {
    if (!free_block_ids.empty()) {
      const int32_t id = free_block_ids.back();
      free_block_ids.pop_back();
      return id;
    }
    blocks.emplace_back();
    return static_cast<int32_t>(blocks.size() - 1);
  }
  // The prefix cache's key of block i of `tokens`: its tokens, then (when any of its positions
  // is on the prompt path) minus the number that are, which no token id can be.
  std::span<const int32_t> BlockKey(std::span<const int32_t> tokens, int64_t i, int64_t prompt_path,
                                    std::vector<int32_t>* buffer) const {
    const int64_t tpp = options.tokens_per_page;
    const std::span<const int32_t> block = tokens.subspan(i * tpp, tpp);
    const int64_t on_path = std::clamp<int64_t>(prompt_path - i * tpp, 0, tpp);
    if (on_path == 0) return block;
    buffer->assign(block.begin(), block.end());
    buffer->push_back(static_cast<int32_t>(-on_path));
    return *buffer;
  }
  // The cached blocks matching the start of `prompt`, leaving at least one token uncovered.
  // `*end` becomes the chain link after the last matched block.
  std::vector<int32_t> MatchChain(std::span<const int32_t> prompt, int64_t prompt_path,
                                  PrefixCache::Link* end) const {
    std::vector<int32_t> chain;
    PrefixCache::Link& link = *end;
    link = PrefixCache::kRoot;
    if (!options.enable_prefix_caching || prompt.empty()) return chain;
    const int64_t tpp = options.tokens_per_page;
    const int64_t max_blocks = (static_cast<int64_t>(prompt.size()) - 1) / tpp;
    std::vector<int32_t> key;
    for (int64_t i = 0; i < max_blocks; ++i) {
      const int32_t block = cache.Find(link, BlockKey(prompt, i, prompt_path, &key), &link);
      if (block < 0) break;
      chain.push_back(block);
    }
    return chain;
  }
  // Evicts least recently used unreferenced cached blocks until the ring holds `pages`.
  void EvictUntilFree(int64_t pages) {
    std::vector<std::span<const int32_t>> released;
    std::vector<int32_t> evicted;
    int64_t free = pool->free_pages();
    while (free < pages) {
      const int32_t block = cache.EvictLru();
      PENG_CHECK(block >= 0 && blocks[block].ref == 0);
      released.emplace_back(blocks[block].pages);
      evicted.push_back(block);
      free += pages_per_block;
    }
    pool->Release(released);
    for (const int32_t block : evicted) {
      blocks[block].pages.clear();
      free_block_ids.push_back(block);
    }
  }

  const KvShape shape;
  const KvManagerOptions options;
  const size_t page_bytes;
  const int64_t pages_per_block;
  std::unique_ptr<PagePool> pool;
  PrefixCache cache;
  std::unique_ptr<LeanKv> lean;  // LeanKV mode: everything below is unused
  std::vector<Block> blocks;  // slab indexed by block id
  std::vector<int32_t> free_block_ids;
  absl::flat_hash_map<SeqId, Sequence> seqs;
  PrefixCacheStats stats;
};

absl::Status KvManager::Validate(const KvShape& shape, const KvManagerOptions& options) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV shape: num_layers ", shape.num_layers, ", num_kv_heads ", shape.num_kv_heads,
        ", head_dim ", shape.head_dim, " must all be positive"));
  }
  // Quantization groups split head_dim evenly.
  const kernels::KvFormat formats[] = {options.leankv ? options.lean.high : options.format,
                                       options.leankv ? options.lean.low : options.format};
  for (kernels::KvFormat f : formats) {
    const kernels::KvQuant q = kernels::QuantOf(f);
    if (kernels::IsQuantized(f) && (shape.head_dim % q.k_groups != 0 || shape.head_dim % q.v_groups != 0)) {
      return absl::InvalidArgumentError(absl::StrCat("KV format ", kernels::KvFormatName(f), ": head_dim ",
                                                     shape.head_dim, " does not split into ", q.k_groups,
                                                     " key and ", q.v_groups, " value groups"));
    }
  }
  if (options.leankv) {
    PENG_RETURN_IF_ERROR(ValidateLeanKv(options.lean));
    PENG_RETURN_IF_ERROR(LeanPages(shape, options).status());
  } else if (options.tokens_per_page <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV options: tokens_per_page ", options.tokens_per_page, " must be positive"));
  }
  const size_t page_bytes = PageBytes(shape, options);
  const int64_t total_pages = static_cast<int64_t>(options.budget_bytes / page_bytes);
  if (total_pages < MinPages(shape, options)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV options: budget_bytes ", options.budget_bytes, " holds ", total_pages, " pages of ",
        page_bytes, " bytes, fewer than ",
        options.leankv ? absl::StrCat(MinPages(shape, options), " (two pages per (layer, kv-head))")
                       : absl::StrCat("one block of ", MinPages(shape, options),
                                      " pages (num_layers * num_kv_heads)")));
  }
  if (total_pages > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV options: budget_bytes ", options.budget_bytes, " gives ", total_pages,
        " pages; page ids are int32"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvManager>> KvManager::Create(KvShape shape,
                                                             KvManagerOptions options) {
  PENG_RETURN_IF_ERROR(Validate(shape, options));
  PENG_ASSIGN_OR_RETURN(std::unique_ptr<PagePool> pool, Impl::MakePool(shape, options));
  return std::unique_ptr<KvManager>(
      new KvManager(std::make_unique<Impl>(shape, options, std::move(pool))));
}

KvManager::KvManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

KvManager::KvManager(KvShape shape, KvManagerOptions options) {
  PENG_CHECK(Validate(shape, options).ok());
  auto pool = Impl::MakePool(shape, options);
  PENG_CHECK(pool.ok());  // out of host memory; Create() reports it as a Status instead
  impl_ = std::make_unique<Impl>(shape, options, std::move(pool).value());
}

KvManager::~KvManager() = default;

const KvShape& KvManager::shape() const { return impl_->shape; }
const KvManagerOptions& KvManager::options() const { return impl_->options; }
size_t KvManager::page_bytes() const { return impl_->page_bytes; }
int64_t KvManager::total_pages() const { return impl_->pool->total_pages(); }
int64_t KvManager::free_pages() const { return impl_->FreePages(); }
double KvManager::usage() const {
  return 1.0 - static_cast<double>(free_pages()) / static_cast<double>(total_pages());
}
int64_t KvManager::pages_per_block() const { return impl_->pages_per_block; }
int64_t KvManager::CapacityTokens(const KvShape& shape, const KvManagerOptions& options) {
  const int64_t total_pages = static_cast<int64_t>(options.budget_bytes / PageBytes(shape, options));
  const int64_t pages_per_block = static_cast<int64_t>(shape.num_layers) * shape.num_kv_heads;
  if (options.leankv) {  // worst case: every token at high precision, plus the step headroom
    const absl::StatusOr<PageSizeChoice> pages = LeanPages(shape, options);
    PENG_CHECK(pages.ok());
    return std::max<int64_t>(0, total_pages / pages_per_block - 1) * pages->high_tokens;
  }
  return total_pages / pages_per_block * options.tokens_per_page;
}

int64_t KvManager::max_tokens() const {
  // LeanKV: answered from the chosen pages instead of rescanning the page-size rule.
  return impl_->lean ? impl_->lean->MaxTokens(total_pages()) : CapacityTokens(impl_->shape, impl_->options);
}
double KvManager::bytes_per_token() const {
  const int tokens_per_page =
      impl_->lean ? impl_->lean->pages().high_tokens : impl_->options.tokens_per_page;
  return static_cast<double>(impl_->page_bytes) * static_cast<double>(impl_->pages_per_block) /
         tokens_per_page;
}
int64_t KvManager::evictable_pages() const {
  return impl_->cache.num_evictable() * impl_->pages_per_block;
}

int64_t KvManager::PagesToGrow(SeqId seq, int64_t new_len) const {
  if (impl_->lean) return impl_->lean->PagesToGrow(seq, new_len);
  const Sequence* s = impl_->Find(seq);
  const int64_t have = s == nullptr ? 0 : static_cast<int64_t>(s->blocks.size());
  return std::max<int64_t>(0, impl_->BlocksFor(new_len) - have) * impl_->pages_per_block;
}

bool KvManager::CanGrow(std::span<const Growth> growths, int64_t reserve_pages) const {
  int64_t need = reserve_pages;
  for (const Growth& g : growths) need += PagesToGrow(g.seq, g.new_len);
  return need <= free_pages();
}

absl::Status KvManager::Grow(std::span<const Growth> growths) {
  Impl& m = *impl_;
  // Prepare: validate and state every table's need (dense: all tables of a sequence alike).
  absl::flat_hash_set<SeqId> seen;
  std::vector<int64_t> new_blocks(growths.size());
  int64_t total = 0;
  for (size_t i = 0; i < growths.size(); ++i) {
    const Growth& g = growths[i];
    if (g.new_len < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV grow: sequence ", g.seq, " new_len ", g.new_len, " is negative"));
    }
    if (!seen.insert(g.seq).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV grow: sequence ", g.seq, " named twice in one step"));
    }
    if (m.lean) continue;
    new_blocks[i] = PagesToGrow(g.seq, g.new_len) / m.pages_per_block;
    total += new_blocks[i] * m.pages_per_block;
  }
  if (m.lean) return m.lean->Grow(growths);
  if (total > m.FreePages()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV grow: step needs ", total, " pages, ", m.FreePages(), " free (",
        evictable_pages(), " of them cached) of ", total_pages()));
  }
  // Apply: make room, one batched allocation over all tables, then extend every table.
  m.EvictUntilFree(total);
  std::vector<int64_t> needs;
  needs.reserve(growths.size() * m.pages_per_block);
  for (size_t i = 0; i < growths.size(); ++i) {
    if (new_blocks[i] > 0) needs.insert(needs.end(), m.pages_per_block, new_blocks[i]);
  }
  auto batch = m.pool->Allocate(needs);
  PENG_CHECK(batch.ok());  // counted above
  size_t requester = 0;
  for (size_t i = 0; i < growths.size(); ++i) {
    Sequence& s = m.Touch(growths[i].seq);
    if (new_blocks[i] == 0) continue;
    for (int64_t j = 0; j < new_blocks[i]; ++j) {
      const int32_t id = m.NewBlockId();
      Block& block = m.blocks[id];
      block.ref = 1;
      block.pages.resize(m.pages_per_block);
      for (int64_t t = 0; t < m.pages_per_block; ++t) block.pages[t] = batch->Of(requester + t)[j];
      m.Append(s, id);
    }
    requester += m.pages_per_block;
  }
  return absl::OkStatus();
}

void KvManager::Free(SeqId seq) {
  Impl& m = *impl_;
  if (m.lean) return m.lean->Free(seq);
  const auto it = m.seqs.find(seq);
  if (it == m.seqs.end()) return;
  std::vector<std::span<const int32_t>> released;
  std::vector<int32_t> dropped;
  // Last block first: the tail of a prefix becomes evictable before its head (vLLM order).
  for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend(); ++b) {
    Block& block = m.blocks[*b];
    PENG_CHECK(block.ref > 0);
    if (--block.ref > 0) continue;
    if (m.cache.IsCached(*b)) {
      m.cache.OnUnreferenced(*b);
    } else {
      released.emplace_back(block.pages);
      dropped.push_back(*b);
    }
  }
  m.pool->Release(released);
  for (const int32_t b : dropped) {
    m.blocks[b].pages.clear();
    m.free_block_ids.push_back(b);
  }
  m.seqs.erase(it);
}

bool KvManager::Has(SeqId seq) const {
  return impl_->lean ? impl_->lean->Has(seq) : impl_->Find(seq) != nullptr;
}

int64_t KvManager::Length(SeqId seq) const {
  if (impl_->lean) return impl_->lean->Length(seq);
  const Sequence* s = impl_->Find(seq);
  return s == nullptr ? 0 : static_cast<int64_t>(s->blocks.size()) * impl_->options.tokens_per_page;
}

int64_t KvManager::ReadOnlyTokens(SeqId seq) const {
  const Sequence* s = impl_->Find(seq);
  return s == nullptr ? 0 : s->committed_blocks * impl_->options.tokens_per_page;
}

int64_t KvManager::MatchPrefix(SeqId seq, std::span<const int32_t> prompt, int64_t prompt_path) {
  Impl& m = *impl_;
  if (m.lean) {
    PENG_CHECK(m.lean->Length(seq) == 0);
    m.lean->SetPrompt(seq, static_cast<int64_t>(prompt.size()));
    return 0;
  }
  Sequence& s = m.Touch(seq);
  PENG_CHECK(s.blocks.empty());
  if (!m.options.enable_prefix_caching) return 0;
  const std::vector<int32_t> chain = m.MatchChain(prompt, prompt_path, &s.chain);
  for (const int32_t id : chain) {
    if (m.blocks[id].ref++ == 0) m.cache.OnReferenced(id);
    m.Append(s, id);
  }
  s.committed_blocks = static_cast<int64_t>(chain.size());
  return static_cast<int64_t>(chain.size()) * m.options.tokens_per_page;
}

void KvManager::CountPrefixLookup(int64_t prompt_tokens, int64_t hit_tokens) {
  Impl& m = *impl_;
  if (m.lean || !m.options.enable_prefix_caching) return;
  m.stats.queries += prompt_tokens;
  m.stats.hits += hit_tokens;
}

int64_t KvManager::PagesToAdmit(std::span<const int32_t> prompt, int64_t new_len, int64_t prompt_path) const {
  const Impl& m = *impl_;
  if (m.lean) return m.lean->PagesToAdmit(new_len);
  PrefixCache::Link end;
  const std::vector<int32_t> chain = m.MatchChain(prompt, prompt_path, &end);
  int64_t revived = 0;
  for (const int32_t id : chain) revived += m.blocks[id].ref == 0 ? 1 : 0;
  const int64_t fresh =
      std::max<int64_t>(0, m.BlocksFor(new_len) - static_cast<int64_t>(chain.size()));
  return (revived + fresh) * m.pages_per_block;
}

void KvManager::CommitComputed(SeqId seq, std::span<const int32_t> tokens, int64_t computed,
                               int64_t prompt_path) {
  Impl& m = *impl_;
  if (m.lean) {
    PENG_CHECK(computed <= static_cast<int64_t>(tokens.size()));
    return m.lean->Commit(seq, computed);
  }
  const auto it = m.seqs.find(seq);
  PENG_CHECK(it != m.seqs.end());
  Sequence& s = it->second;
  const int64_t tpp = m.options.tokens_per_page;
  PENG_CHECK(computed <= static_cast<int64_t>(tokens.size()));
  PENG_CHECK(computed <= static_cast<int64_t>(s.blocks.size()) * tpp);
  const int64_t full = computed / tpp;
  std::vector<int32_t> key;
  for (int64_t i = s.committed_blocks; i < full; ++i) {
    const int32_t id = s.blocks[i];
    // Only blocks past the committed prefix are written, and Grow gave those to this sequence
    // alone: a shared or cached block here would mean a write into someone else's KV.
    PENG_CHECK(m.blocks[id].ref == 1 && !m.cache.IsCached(id));
    if (!m.options.enable_prefix_caching || s.chain_broken) continue;
    const auto result = m.cache.Register(id, s.chain, m.BlockKey(tokens, i, prompt_path, &key), &s.chain);
    if (result == PrefixCache::RegisterResult::kCollision) s.chain_broken = true;
  }
  s.committed_blocks = std::max(s.committed_blocks, full);
}

PrefixCacheStats KvManager::prefix_cache_stats() const { return impl_->stats; }

std::span<const int32_t> KvManager::PageTable(SeqId seq, int layer, int kv_head) const {
  PENG_CHECK(layer >= 0 && layer < impl_->shape.num_layers);
  PENG_CHECK(kv_head >= 0 && kv_head < impl_->shape.num_kv_heads);
  const Sequence* s = impl_->Find(seq);
  if (s == nullptr) return {};
  return s->tables[static_cast<size_t>(layer) * impl_->shape.num_kv_heads + kv_head];
}

const LeanKv* KvManager::lean() const { return impl_->lean.get(); }
std::vector<float> KvManager::TakeFinishedSparsity() {
  return impl_->lean ? impl_->lean->TakeFinishedSparsity() : std::vector<float>{};
}

void KvManager::SetParallelFor(ParallelForFn parallel_for) {
  if (impl_->lean) impl_->lean->SetParallelFor(std::move(parallel_for));
}

uint8_t* KvManager::PageData(int32_t page) { return impl_->pool->Data(page); }
const uint8_t* KvManager::PageData(int32_t page) const { return impl_->pool->Data(page); }

}  // namespace peng::memory
