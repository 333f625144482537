// PrefixCache: the index of full KV blocks that later requests may share (vLLM v1 style). A
// block is named by the hash chain of its tokens: hash(parent block's hash, its token ids).
// The cache maps hashes to block ids and keeps, per registered block, its token ids and its
// parent's registration serial, so a hash collision can never return another prefix's data.
// Registered blocks nobody references sit in an LRU list and are the eviction candidates.
// The cache only names blocks; their pages and reference counts belong to the KvManager.
// Owned by the KvManager (engine loop thread); not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace peng::memory {

using BlockHashFn = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> tokens);

// The default block hash (splitmix64-style mixing; deterministic across runs).
uint64_t DefaultBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens);

// The position in a hash chain after some block; the chain starts at PrefixCache::kRoot.
struct ChainLink {
  uint64_t hash = 0;
  uint64_t serial = 0;  // registration serial of that block; 0 = the empty prefix
};

class PrefixCache {
 public:
  using Link = ChainLink;
  static constexpr Link kRoot = {};

  explicit PrefixCache(BlockHashFn hash = nullptr)
      : hash_(hash != nullptr ? hash : DefaultBlockHash) {}

  // The cached block that follows `parent` and holds exactly `tokens`, or -1. On a hit,
  // `*next` becomes the link after that block.
  int32_t Find(Link parent, std::span<const int32_t> tokens, Link* next) const;

  enum class RegisterResult {
    kRegistered,   // `block` is now cached
    kDuplicate,    // an identical block is cached already; `*next` continues through it
    kCollision,    // another prefix owns this hash; the chain cannot continue (`*next` unset)
  };
  // Registers `block` (not cached yet) as the block after `parent` holding `tokens`.
  RegisterResult Register(int32_t block, Link parent, std::span<const int32_t> tokens, Link* next);

  bool IsCached(int32_t block) const;
  // Reference count transitions of a cached block, reported by the KvManager.
  void OnUnreferenced(int32_t block);  // 1 -> 0: becomes evictable (most recently used end)
  void OnReferenced(int32_t block);    // 0 -> 1: leaves the evictable list
  // Forgets the least recently used unreferenced block and returns it, or -1 if none.
  int32_t EvictLru();
  int64_t num_evictable() const { return num_evictable_; }
  int64_t num_cached() const { return static_cast<int64_t>(by_hash_.size()); }

 private:
  struct Entry {
    bool cached = false;
    bool evictable = false;
    uint64_t hash = 0;
    uint64_t serial = 0;
    uint64_t parent_serial = 0;
    std::vector<int32_t> tokens;
    int32_t lru_prev = -1;
    int32_t lru_next = -1;
  };
  Entry& At(int32_t block);
  void Unlink(int32_t block);

  BlockHashFn hash_;
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  std::vector<Entry> entries_;  // indexed by block id, grown on demand
  uint64_t next_serial_ = 1;
  int32_t lru_head_ = -1;       // least recently used; evicted first
  int32_t lru_tail_ = -1;
  int64_t num_evictable_ = 0;
};

}  // namespace peng::memory
