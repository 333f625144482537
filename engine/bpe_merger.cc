#include "engine/bpe_merger.h"

#include <algorithm>

namespace peng {
namespace {

struct Candidate {
  int32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t left_id;
  int32_t right_id;
  int32_t merged_id;
};

// Heap order: lowest rank first, then leftmost.
bool LaterThan(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

}  // namespace

void BpeMerger::Add(int32_t left_id, int32_t right_id, int32_t rank, int32_t merged_id) {
  auto [it, inserted] = pairs_.try_emplace(Key(left_id, right_id), Merge{rank, merged_id});
  if (!inserted && rank < it->second.rank) it->second = Merge{rank, merged_id};
}

const BpeMerger::Merge* BpeMerger::Find(int32_t left_id, int32_t right_id) const {
  auto it = pairs_.find(Key(left_id, right_id));
  return it == pairs_.end() ? nullptr : &it->second;
}

void BpeMerger::Apply(std::vector<BpeSymbol>* symbols) const {
  std::vector<BpeSymbol>& s = *symbols;
  const int32_t n = static_cast<int32_t>(s.size());
  if (n < 2 || pairs_.empty()) return;
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  std::vector<Candidate> heap;
  heap.reserve(n);
  auto push = [&](int32_t l, int32_t r) {
    if (s[l].id < 0 || s[r].id < 0) return;
    const Merge* m = Find(s[l].id, s[r].id);
    if (m == nullptr) return;
    heap.push_back({m->rank, l, s[l].id, s[r].id, m->merged_id});
    std::push_heap(heap.begin(), heap.end(), LaterThan);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterThan);
    const Candidate c = heap.back();
    heap.pop_back();
    // Stale candidates: either side merged since (its id or its neighbour changed).
    if (s[c.pos].len == 0 || s[c.pos].id != c.left_id) continue;
    const int32_t r = next[c.pos];
    if (r < 0 || s[r].id != c.right_id) continue;
    s[c.pos].id = c.merged_id;
    s[c.pos].len += s[r].len;
    s[r].len = 0;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    if (prev[c.pos] >= 0) push(prev[c.pos], c.pos);
    if (next[c.pos] >= 0) push(c.pos, next[c.pos]);
  }
  s.erase(std::remove_if(s.begin(), s.end(), [](const BpeSymbol& x) { return x.len == 0; }),
          s.end());
}

}  // namespace peng
