#include "server/response_store.h"

#include <utility>

namespace peng::server {

void ResponseStore::Put(const std::string& id, Entry entry) {
  // The size as text: what the entry costs, near enough (nlohmann's nodes add a constant factor).
  const size_t bytes = id.size() + entry.response.dump().size() + entry.messages.dump().size() +
                       (entry.input_items.is_null() ? 0 : entry.input_items.dump().size());
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = slots_.find(id); it != slots_.end()) EraseLocked(it);
  if (bytes > max_bytes_ || max_responses_ == 0) return;
  order_.push_front(id);
  slots_[id] = Slot{std::make_shared<const Entry>(std::move(entry)), bytes, order_.begin()};
  bytes_ += bytes;
  while (slots_.size() > max_responses_ || bytes_ > max_bytes_) EraseLocked(slots_.find(order_.back()));
}

std::shared_ptr<const ResponseStore::Entry> ResponseStore::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = slots_.find(id);
  return it == slots_.end() ? nullptr : it->second.entry;
}

bool ResponseStore::Erase(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = slots_.find(id);
  if (it == slots_.end()) return false;
  EraseLocked(it);
  return true;
}

size_t ResponseStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_.size();
}

size_t ResponseStore::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

void ResponseStore::EraseLocked(std::unordered_map<std::string, Slot>::iterator it) {
  bytes_ -= it->second.bytes;
  order_.erase(it->second.age);
  slots_.erase(it);
}

}  // namespace peng::server
