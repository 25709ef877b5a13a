// CPU implementation of rk_finish: y1, the error estimate and its scaled RMS norm in one pass.
#include "pyode/rk_finish.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pyode/rk_math.h"

namespace pyode {
namespace {

// One unit of work: elements [start, start + len) of segment seg (never straddles a segment).
struct Chunk {
  int64_t seg, start, len;
};

std::vector<Chunk> make_chunks(const FinishArgs& args) {
  std::vector<Chunk> chunks;
  const int64_t nseg = args.seg_offsets ? args.nseg : 1;
  for (int64_t q = 0; q < nseg; ++q) {
    const int64_t lo = args.seg_offsets ? args.seg_offsets[q] : 0;
    const int64_t hi = args.seg_offsets ? args.seg_offsets[q + 1] : args.n;
    for (int64_t start = lo; start < hi; start += kBlock) chunks.push_back({q, start, std::min(kBlock, hi - start)});
  }
  return chunks;
}

// Writes y1 (and err) for one chunk; returns the chunk's sum of squared scaled errors.
template <typename T>
double finish_chunk(const FinishArgs& args, const Chunk& c) {
  const T* y0 = static_cast<const T*>(args.y0) + c.start;
  T* y1 = static_cast<T*>(args.y1) + c.start;
  if (args.b != nullptr) {  // else y1 already holds the solution (FSAL: it was the last stage's input)
    for (int64_t i = 0; i < c.len; ++i) y1[i] = y0[i];
  }
  for (int64_t j = 0; args.b != nullptr && j < args.s; ++j) {
    if (args.b[j] == 0.0) continue;
    const T bj = static_cast<T>(args.b[j]);
    const T* k = static_cast<const T*>(args.ks[j]) + c.start;
    for (int64_t i = 0; i < c.len; ++i) y1[i] += bj * k[i];
  }
  if (args.e == nullptr) return 0.0;
  T local[kBlock];
  T* err = args.err_out ? static_cast<T*>(args.err_out) + c.start : local;
  for (int64_t i = 0; i < c.len; ++i) err[i] = T(0);
  for (int64_t j = 0; j < args.s; ++j) {
    if (args.e[j] == 0.0) continue;
    const T ej = static_cast<T>(args.e[j]);
    const T* k = static_cast<const T*>(args.ks[j]) + c.start;
    for (int64_t i = 0; i < c.len; ++i) err[i] += ej * k[i];
  }
  const T atol = static_cast<T>(args.atol), rtol = static_cast<T>(args.rtol);
  T sum = T(0);  // within one block in T (vectorises); across blocks in double
  for (int64_t i = 0; i < c.len; ++i) {
    const T r = scaled_error(err[i], y0[i], y1[i], atol, rtol);
    sum += r * r;
  }
  return static_cast<double>(sum);
}

}  // namespace

template <typename T>
double rk_finish_cpu(const FinishArgs& args) {
  const std::vector<Chunk> chunks = make_chunks(args);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  std::vector<double> partial(chunks.size(), 0.0);
#pragma omp parallel for schedule(static) if (args.n >= kParallelThreshold)
  for (int64_t c = 0; c < nchunks; ++c) partial[c] = finish_chunk<T>(args, chunks[c]);

  // Fixed-order summation: deterministic whatever the thread count.
  double total = 0.0;
  const int64_t nseg = args.seg_offsets ? args.nseg : 1;
  std::vector<double> seg_sum(nseg, 0.0);
  for (int64_t c = 0; c < nchunks; ++c) {
    seg_sum[chunks[c].seg] += partial[c];
    total += partial[c];
  }
  if (args.seg_norms != nullptr) {
    for (int64_t q = 0; q < nseg; ++q) {
      const int64_t len = args.seg_offsets ? args.seg_offsets[q + 1] - args.seg_offsets[q] : args.n;
      args.seg_norms[q] = len > 0 ? std::sqrt(seg_sum[q] / static_cast<double>(len)) : 0.0;
    }
  }
  return args.n > 0 ? std::sqrt(total / static_cast<double>(args.n)) : 0.0;
}

template double rk_finish_cpu<float>(const FinishArgs&);
template double rk_finish_cpu<double>(const FinishArgs&);

}  // namespace pyode
