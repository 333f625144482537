// This process's Linux control groups, for the limits a container puts on it: the CPU quota
// (ThreadPool::UsableCpuCount) and the memory limit (AvailableMemoryBytes). A container sees
// its node's CPUs and memory in /proc; only its cgroup says what it may use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace peng {

// The directories holding this process's cgroup files, most specific first: for cgroup v2, the
// unified hierarchy at its own path ("0::<path>" in /proc/self/cgroup), then the namespace
// root; for cgroup v1, the controller's mount (e.g. "memory", "cpu,cpuacct") at the
// controller's path, then the mount's root.
std::string CgroupV2Dir();
std::string CgroupV1Dir(const std::string& mount, const std::string& controller);

// The whole text of a small file; "" when it cannot be read.
std::string ReadSmallFile(const std::string& path);

// What a memory limit leaves: limit - usage, from cgroup v2's memory.max / memory.current or
// v1's memory.limit_in_bytes / memory.usage_in_bytes texts; nullopt for no limit ("max", or
// v1's near-2^63 sentinel) or an unreadable pair.
std::optional<int64_t> CgroupMemoryHeadroom(const std::string& limit, const std::string& usage);

// The memory left under this process's cgroup limit (v2, else v1); nullopt when unlimited.
std::optional<int64_t> CgroupMemoryHeadroom();

}  // namespace peng
