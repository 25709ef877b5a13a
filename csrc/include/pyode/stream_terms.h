// Streaming weighted sums over a few terms: the inner loop of every single-row kernel.
//
// A stage input y0 + sum_j w_j k_j is memory-bound. Summing term by term over a cache block (the
// blocked path) re-reads and re-writes the block for every term and gives the hardware prefetcher
// only short runs per stream; measured on the 2-core EPYC machine at N = 1e7 float32 with 6 terms it
// reached 15 GB/s against 24 GB/s for STREAM triad. Reading all terms in one loop over i, with the term
// count a compile-time constant so the loop vectorises, reaches the triad bandwidth (23-26 GB/s).
//
// Zero weights are dropped first (tableaux are sparse), then the count selects the instantiation. The
// summation order is the blocked path's (base, then terms in index order), so results are bitwise equal.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "pyode/common.h"

namespace pyode {

// Largest number of non-zero terms with a streaming instantiation (dopri5: 6, tsit5: 7; dopri8 takes
// the blocked path).
constexpr int kMaxStreamTerms = 8;

// The non-zero terms of one weighted sum: k[q] with weight w[q] (as T), q < count.
template <typename T>
struct TermSet {
  const T* k[kMaxStreamTerms];
  T w[kMaxStreamTerms];
  int count = 0;
};

// Compacts (ks, weights) to the non-zero terms; false if there are more than kMaxStreamTerms of them.
template <typename T>
bool compact_terms(const void* const* ks, const double* weights, int64_t s, TermSet<T>& out) {
  out.count = 0;
  for (int64_t j = 0; j < s; ++j) {
    if (weights[j] == 0.0) continue;
    if (out.count == kMaxStreamTerms) return false;
    out.k[out.count] = static_cast<const T*>(ks[j]);
    out.w[out.count] = static_cast<T>(weights[j]);
    ++out.count;
  }
  return true;
}

// sum_{q < S} w[q] * k[q][i], accumulated onto acc in index order.
template <typename T, int S>
inline T add_terms(T acc, const TermSet<T>& t, int64_t i) {
#pragma GCC unroll 8
  for (int q = 0; q < S; ++q) acc += t.w[q] * t.k[q][i];
  return acc;
}

// Calls f(std::integral_constant<int, S>{}) with S = count (0..kMaxStreamTerms): one vectorised loop
// body per term count.
template <typename F>
void with_term_count(int count, F&& f) {
  switch (count) {
    case 0: f(std::integral_constant<int, 0>{}); break;
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

// Single-row outputs (stage inputs) of at least this many bytes are written with non-temporal stores
// (write_row). Default: half the 32 MB L3 of the EPYC machines here -- a larger output is evicted before
// its reader (func) gets to it anyway, so writing it around the cache costs nothing and saves each line's
// read-for-ownership, one memory stream per kernel. Measured at N = 1e7 float32, 1-6 terms, interleaved
// in one process (python bench/kernels_nt.py): +2-13% (1 thread) and +4-13% (2 threads) counted
// bandwidth, never slower. Settable at run time (pyode._C.set_non_temporal) for that comparison.
inline std::atomic<int64_t> non_temporal_min_bytes{int64_t(16) << 20};

// Whether an output of n elements of T is written with non-temporal stores.
template <typename T>
inline bool use_non_temporal(int64_t n) {
  return n * static_cast<int64_t>(sizeof(T)) >= non_temporal_min_bytes.load(std::memory_order_relaxed);
}

#if defined(__SSE2__)
// Stores one 64-byte line (16 floats / 8 doubles) from `src` to the 64-byte aligned `dst`, bypassing the cache.
inline void stream_line(float* dst, const float* src) {
  for (int q = 0; q < 16; q += 4) _mm_stream_ps(dst + q, _mm_load_ps(src + q));
}
inline void stream_line(double* dst, const double* src) {
  for (int q = 0; q < 8; q += 2) _mm_stream_pd(dst + q, _mm_load_pd(src + q));
}
#endif

// out[i] = value(i) for lo <= i < hi. With `non_temporal` (and SSE2), whole aligned cache lines are
// computed into a local line and stored around the cache; the ragged ends use plain stores. The values
// are the same either way: only how they reach memory differs.
template <typename T, typename F>
inline void write_row(T* __restrict out, int64_t lo, int64_t hi, bool non_temporal, F&& value) {
  int64_t i = lo;
#if defined(__SSE2__)
  if (non_temporal) {
    constexpr int64_t kLine = 64 / sizeof(T);
    for (; i < hi && (reinterpret_cast<uintptr_t>(out + i) & 63) != 0; ++i) out[i] = value(i);
    alignas(64) T line[kLine];
    for (; i + kLine <= hi; i += kLine) {
      for (int64_t l = 0; l < kLine; ++l) line[l] = value(i + l);
      stream_line(out + i, line);
    }
    for (; i < hi; ++i) out[i] = value(i);
    _mm_sfence();  // non-temporal stores are weakly ordered: make them visible before the kernel returns
    return;
  }
#else
  (void)non_temporal;
#endif
  for (; i < hi; ++i) out[i] = value(i);
}

// sum_{lo <= i < hi} square(value(i)), accumulated in kSumLanes interleaved partial sums so the loop
// vectorises (a single running sum is a serial dependency GCC may not reorder), then added in lane order:
// the result is the same whatever the thread count or instruction set. In float32 a square overflows from
// |value| ~ 1.8e19 on, although its double is finite: such a block (rare) is summed again in double, so the
// norm is what the reference backend (which squares in double) gives, not a spurious inf.
constexpr int kSumLanes = 16;

template <typename A, typename T, typename F>
A lane_sum_of_squares(int64_t lo, int64_t hi, F&& value) {
  A lanes[kSumLanes] = {};
  int64_t i = lo;
  for (; i + kSumLanes <= hi; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) {
      const A r = static_cast<A>(static_cast<T>(value(i + l)));
      lanes[l] += r * r;
    }
  }
  for (int l = 0; i < hi; ++i, ++l) {
    const A r = static_cast<A>(static_cast<T>(value(i)));
    lanes[l] += r * r;
  }
  A sum = A(0);
  for (int l = 0; l < kSumLanes; ++l) sum += lanes[l];
  return sum;
}

template <typename T, typename F>
double sum_of_squares(int64_t lo, int64_t hi, F&& value) {
  const T sum = lane_sum_of_squares<T, T>(lo, hi, value);
  if (std::is_same<T, double>::value || std::isfinite(sum)) return static_cast<double>(sum);
  return lane_sum_of_squares<double, T>(lo, hi, value);
}

// True if [p, p + n) and [q, q + n) (elements of T) do not overlap: the streaming loops write through a
// restrict pointer and need their output apart from every input.
template <typename T>
bool disjoint(const void* p, const void* q, int64_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  const uintptr_t bytes = static_cast<uintptr_t>(n) * sizeof(T);
  return a == 0 || b == 0 || a + bytes <= b || b + bytes <= a;
}

}  // namespace pyode
