// Host-side interface of pyode's CUDA kernels. Plain C++ types only (no CUDA headers), so the pybind11
// bindings (a .cpp compiled by the host compiler) can include it; everything CUDA lives in the .cu files.
//
// Contracts are those of the CPU kernels (pyode/lincomb.h, pyode/rk_finish.h), with every tensor pointer
// a device pointer; coefficient arrays (w, b, e) and the ks pointer array stay on the host and travel to
// the kernel by value, as launch parameters: no host-to-device copy and no synchronisation per call.
#pragma once
#include <cstdint>

#include "pyode/lincomb.h"
#include "pyode/rk_finish.h"

namespace pyode {
namespace cuda {

// Terms (ks) and output rows that fit into one launch's parameters. lincomb splits larger problems into
// several launches; rk_finish requires at most kMaxTerms terms with a non-zero weight (the largest
// tableau, dopri8, has 14 stages) and the Python layer pre-combines anything bigger.
constexpr int kMaxTerms = 16;
constexpr int kMaxRows = 16;

// Threads per block, and elements per block of rk_finish: its unit of per-block partial sums.
constexpr int kThreads = 256;
constexpr int kFinishItemsPerThread = 8;
constexpr int64_t kFinishChunk = int64_t(kThreads) * kFinishItemsPerThread;

// Where a kernel runs: the device ordinal and a cudaStream_t (PyTorch's current stream) as a raw handle.
struct Launch {
  int device;
  void* stream;
};

// Device buffers of rk_finish's two-pass reduction. Without segments chunk c covers elements
// [c * kFinishChunk, ...) of [0, n); with segments, segment q owns chunks [chunk_starts[q], chunk_starts[q+1])
// (ceil(len_q / kFinishChunk) of them), so that no chunk straddles two segments.
struct FinishWork {
  const int64_t* chunk_starts;  // device (nseg + 1,), or nullptr without segments
  int64_t nchunks;              // total number of chunks (= blocks of the first pass)
  double* partials;             // device (nchunks,): per-chunk sums of squared scaled errors
  double* norm;                 // device scalar: the global RMS norm (FinishArgs::seg_norms gets the rest)
};

// out[r] = base + sum_j w[r, j] k_j on the device; any m and s (split into launches of kMaxRows x kMaxTerms).
template <typename T>
void lincomb_cuda(const LincombArgs& args, const Launch& launch);

// y1, error and RMS norms of a step (FinishArgs with device pointers; seg_offsets and seg_norms device
// arrays). Writes the norms to work.norm / args.seg_norms on the device and returns without waiting.
template <typename T>
void rk_finish_cuda(const FinishArgs& args, const FinishWork& work, const Launch& launch);

// Number of visible devices; 0 (not an error) when there is no driver or no GPU.
int device_count();
int runtime_version();
int driver_version();  // 0 without a driver

}  // namespace cuda
}  // namespace pyode
