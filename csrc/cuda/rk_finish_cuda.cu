// CUDA implementation of rk_finish (see pyode/rk_finish.h): y1, the error estimate and its scaled RMS
// norms -- global and per segment -- in one pass over memory, then a small deterministic reduction.
//
// Pass 1: one block per chunk of kFinishChunk elements of one segment; each block writes y1 (and err) and
//         the double sum of its squared scaled errors to partials[chunk].
// Pass 2: one block per segment sums that segment's partials, one more block sums all of them; both in a
//         fixed order, so the norms are bitwise reproducible run to run. Results stay on the device.
#include <cmath>

#include "cuda_common.cuh"
#include "pyode/rk_math.h"

namespace pyode {
namespace cuda {
namespace {

struct FinishParams {
  const void* ks[kMaxTerms];
  double b[kMaxTerms];  // zero where the term only feeds the error
  double e[kMaxTerms];  // zero where the term only feeds y1
  int nterms;
  bool has_b, has_e;
  void* y1;
  void* err_out;
  const void* y0;
  int64_t n;
  double atol, rtol;
  const int64_t* seg_offsets;   // device (nseg + 1,) or nullptr
  const int64_t* chunk_starts;  // device (nseg + 1,) or nullptr
  int64_t nseg;
  double* partials;
};

// The element range [lo, hi) of chunk `block`: without segments a fixed slice of [0, n); with them,
// found by binary search for the segment q with chunk_starts[q] <= block < chunk_starts[q + 1].
__device__ void chunk_range(const FinishParams& p, int64_t block, int64_t* lo, int64_t* hi) {
  if (p.chunk_starts == nullptr) {
    *lo = block * kFinishChunk;
    *hi = min(*lo + kFinishChunk, p.n);
    return;
  }
  int64_t a = 0, b = p.nseg;  // chunk_starts[a] <= block < chunk_starts[b]; empty segments are skipped
  while (b - a > 1) {
    const int64_t mid = (a + b) / 2;
    if (p.chunk_starts[mid] <= block) a = mid;
    else b = mid;
  }
  *lo = p.seg_offsets[a] + (block - p.chunk_starts[a]) * kFinishChunk;
  *hi = min(*lo + kFinishChunk, p.seg_offsets[a + 1]);
}

// y1[i] (written or read) and the squared scaled error of element i.
template <typename T>
__device__ double finish_element(const FinishParams& p, int64_t i) {
  const T y0 = static_cast<const T*>(p.y0)[i];
  T y1 = p.has_b ? y0 : static_cast<const T*>(p.y1)[i];
  T err = T(0);
  for (int j = 0; j < p.nterms; ++j) {
    const T k = __ldg(static_cast<const T*>(p.ks[j]) + i);
    if (p.has_b && p.b[j] != 0.0) y1 += static_cast<T>(p.b[j]) * k;
    if (p.e[j] != 0.0) err += static_cast<T>(p.e[j]) * k;
  }
  if (p.has_b) static_cast<T*>(p.y1)[i] = y1;
  if (!p.has_e) return 0.0;
  if (p.err_out != nullptr) static_cast<T*>(p.err_out)[i] = err;
  const double r = scaled_error<T>(err, y0, y1, static_cast<T>(p.atol), static_cast<T>(p.rtol));
  return r * r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) finish_kernel(const __grid_constant__ FinishParams p) {
  int64_t lo, hi;
  chunk_range(p, blockIdx.x, &lo, &hi);
  double sum = 0.0;
#pragma unroll
  for (int item = 0; item < kFinishItemsPerThread; ++item) {
    const int64_t i = lo + int64_t(item) * kThreads + threadIdx.x;
    if (i < hi) sum += finish_element<T>(p, i);
  }
  if (!p.has_e) return;
  sum = block_sum(sum);
  if (threadIdx.x == 0) p.partials[blockIdx.x] = sum;
}

// Block q < nseg: RMS of segment q into seg_norms[q]; the last block: the global RMS into *norm.
__global__ void __launch_bounds__(kThreads) norms_kernel(const double* partials, int64_t nchunks,
                                                         const int64_t* chunk_starts, const int64_t* seg_offsets,
                                                         int64_t nseg, int64_t n, double* seg_norms, double* norm) {
  const bool global = chunk_starts == nullptr || blockIdx.x == nseg;
  const int64_t first = global ? 0 : chunk_starts[blockIdx.x];
  const int64_t last = global ? nchunks : chunk_starts[blockIdx.x + 1];
  const int64_t count = global ? n : seg_offsets[blockIdx.x + 1] - seg_offsets[blockIdx.x];
  double sum = 0.0;
  for (int64_t c = first + threadIdx.x; c < last; c += kThreads) sum += partials[c];
  sum = block_sum(sum);
  if (threadIdx.x != 0) return;
  const double rms = count > 0 ? sqrt(sum / static_cast<double>(count)) : 0.0;
  if (global) *norm = rms;
  else seg_norms[blockIdx.x] = rms;
}

// The launch parameters, keeping only the terms with a non-zero b or e weight.
FinishParams make_params(const FinishArgs& args, const FinishWork& work) {
  FinishParams p{};
  p.has_b = args.b != nullptr;
  p.has_e = args.e != nullptr;
  for (int64_t j = 0; j < args.s; ++j) {
    const double bj = p.has_b ? args.b[j] : 0.0, ej = p.has_e ? args.e[j] : 0.0;
    if (bj == 0.0 && ej == 0.0) continue;
    if (p.nterms == kMaxTerms) {
      throw std::invalid_argument("pyode CUDA kernel: rk_finish takes at most " + std::to_string(kMaxTerms) +
                                  " terms with non-zero weights; combine the rest with lincomb first");
    }
    p.ks[p.nterms] = args.ks[j];
    p.b[p.nterms] = bj;
    p.e[p.nterms] = ej;
    ++p.nterms;
  }
  p.y1 = args.y1;
  p.err_out = args.err_out;
  p.y0 = args.y0;
  p.n = args.n;
  p.atol = args.atol;
  p.rtol = args.rtol;
  p.seg_offsets = work.chunk_starts != nullptr ? args.seg_offsets : nullptr;
  p.chunk_starts = work.chunk_starts;
  p.nseg = work.chunk_starts != nullptr ? args.nseg : 1;
  p.partials = work.partials;
  return p;
}

}  // namespace

template <typename T>
void rk_finish_cuda(const FinishArgs& args, const FinishWork& work, const Launch& launch) {
  const FinishParams p = make_params(args, work);
  if (!p.has_b && !p.has_e) return;  // y1 given and no error wanted: nothing to compute
  DeviceGuard guard(launch.device);
  const cudaStream_t stream = stream_of(launch);
  if (work.nchunks > 0) {
    finish_kernel<T><<<static_cast<unsigned>(work.nchunks), kThreads, 0, stream>>>(p);
    check_launch("rk_finish");
  }
  if (!p.has_e) return;
  const unsigned norm_blocks = work.chunk_starts != nullptr ? static_cast<unsigned>(args.nseg + 1) : 1u;
  norms_kernel<<<norm_blocks, kThreads, 0, stream>>>(work.partials, work.nchunks, p.chunk_starts, p.seg_offsets,
                                                     p.nseg, args.n, args.seg_norms, work.norm);
  check_launch("rk_finish norms");
}

template void rk_finish_cuda<float>(const FinishArgs&, const FinishWork&, const Launch&);
template void rk_finish_cuda<double>(const FinishArgs&, const FinishWork&, const Launch&);

}  // namespace cuda
}  // namespace pyode
