// Helpers shared by the CUDA kernels: error checks, the device guard, and the deterministic block sum.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_kernels.h"

namespace pyode {
namespace cuda {

inline void throw_on_error(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("pyode CUDA kernel: ") + what + ": " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
  }
}

// Launch errors (bad configuration, no kernel image for this GPU) surface here; errors inside a running
// kernel surface at the next synchronising call, like PyTorch's own kernels.
inline void check_launch(const char* kernel) { throw_on_error(cudaGetLastError(), kernel); }

inline cudaStream_t stream_of(const Launch& launch) { return static_cast<cudaStream_t>(launch.stream); }

// Makes launch.device current for the scope and restores the previous device after: this module has its
// own (static) CUDA runtime, and the caller's runtime (PyTorch's) must not see its current device move.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    throw_on_error(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) throw_on_error(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Sum over the kThreads threads of a block, in a fixed tree (warp shuffles, then the warp totals in order):
// the same inputs always give bitwise the same result. The total is valid in thread 0.
__device__ inline double block_sum(double value) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be whole warps");
  __shared__ double warp_totals[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_totals[warp] = value;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += warp_totals[w];
  }
  __syncthreads();  // warp_totals may be reused by a following call
  return total;
}

// Blocks for a grid-stride loop over `work` items: enough to fill any current GPU, within grid limits.
inline unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(1) << 20;
  return static_cast<unsigned>(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
}

}  // namespace cuda
}  // namespace pyode
