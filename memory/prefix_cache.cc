#include "memory/prefix_cache.h"

#include <algorithm>

#include "base/check.h"

namespace peng::memory {
namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

bool SameTokens(std::span<const int32_t> a, std::span<const int32_t> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

uint64_t DefaultBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens) {
  constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
  uint64_t h = Mix(parent_hash + kGolden);
  for (const int32_t t : tokens) h = Mix(h ^ (static_cast<uint32_t>(t) + kGolden));
  return Mix(h ^ tokens.size());
}

int32_t PrefixCache::Find(Link parent, std::span<const int32_t> tokens, Link* next) const {
  const uint64_t hash = hash_(parent.hash, tokens);
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const Entry& e = entries_[it->second];
  // The hash only proposes; the stored chain and tokens decide.
  if (e.parent_serial != parent.serial || !SameTokens(e.tokens, tokens)) return -1;
  *next = Link{hash, e.serial};
  return it->second;
}

PrefixCache::RegisterResult PrefixCache::Register(int32_t block, Link parent,
                                                  std::span<const int32_t> tokens, Link* next) {
  PENG_CHECK(!IsCached(block));
  const uint64_t hash = hash_(parent.hash, tokens);
  const auto [it, inserted] = by_hash_.try_emplace(hash, block);
  if (!inserted) {
    const Entry& other = entries_[it->second];
    if (other.parent_serial != parent.serial || !SameTokens(other.tokens, tokens)) {
      return RegisterResult::kCollision;
    }
    *next = Link{hash, other.serial};
    return RegisterResult::kDuplicate;
  }
  Entry& e = At(block);
  e.cached = true;
  e.evictable = false;
  e.hash = hash;
  e.serial = next_serial_++;
  e.parent_serial = parent.serial;
  e.tokens.assign(tokens.begin(), tokens.end());
  *next = Link{hash, e.serial};
  return RegisterResult::kRegistered;
}

bool PrefixCache::IsCached(int32_t block) const {
  return block >= 0 && block < static_cast<int32_t>(entries_.size()) && entries_[block].cached;
}

void PrefixCache::OnUnreferenced(int32_t block) {
  Entry& e = At(block);
  PENG_CHECK(e.cached && !e.evictable);
  e.evictable = true;
  e.lru_prev = lru_tail_;
  e.lru_next = -1;
  if (lru_tail_ >= 0) entries_[lru_tail_].lru_next = block;
  else lru_head_ = block;
  lru_tail_ = block;
  ++num_evictable_;
}

void PrefixCache::OnReferenced(int32_t block) {
  PENG_CHECK(IsCached(block) && entries_[block].evictable);
  Unlink(block);
}

int32_t PrefixCache::EvictLru() {
  const int32_t block = lru_head_;
  if (block < 0) return -1;
  Unlink(block);
  Entry& e = entries_[block];
  by_hash_.erase(e.hash);  // the hash maps to this block: a cached block owns its hash
  e = Entry{};
  return block;
}

PrefixCache::Entry& PrefixCache::At(int32_t block) {
  PENG_CHECK(block >= 0);
  if (block >= static_cast<int32_t>(entries_.size())) entries_.resize(block + 1);
  return entries_[block];
}

void PrefixCache::Unlink(int32_t block) {
  Entry& e = entries_[block];
  if (e.lru_prev >= 0) entries_[e.lru_prev].lru_next = e.lru_next;
  else lru_head_ = e.lru_next;
  if (e.lru_next >= 0) entries_[e.lru_next].lru_prev = e.lru_prev;
  else lru_tail_ = e.lru_prev;
  e.lru_prev = e.lru_next = -1;
  e.evictable = false;
  --num_evictable_;
}

}  // namespace peng::memory
