// Shared definitions for pyode's kernels: dtype tags, the cache-block size and parallel threshold.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define PYODE_HD __host__ __device__ inline
#else
#define PYODE_HD inline
#endif

namespace pyode {

enum class DType : int { kFloat32 = 0, kFloat64 = 1 };

// Elements per cache block. Multi-pass work inside one block stays in L1/L2, so every kernel is a
// single pass over main memory. Reductions are summed per block, then across blocks in a fixed order:
// results do not depend on the number of threads.
constexpr int64_t kBlock = 2048;

// Below this many elements a kernel runs single-threaded: thread start-up costs more than it saves.
constexpr int64_t kParallelThreshold = int64_t(1) << 16;

// The message is only turned into a std::string on failure: these checks run on every kernel call.
inline void check(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("pyode kernel: ") + message);
}

inline void check(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("pyode kernel: " + message);
}

}  // namespace pyode
