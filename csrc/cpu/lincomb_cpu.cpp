// CPU implementation of lincomb. One row (a stage input) streams all terms in one pass; several rows
// (dense output at many times) are blocked so that a block of every term stays in cache across rows.
#include "pyode/lincomb.h"

#include <algorithm>

#include "pyode/cpu_parallel.h"
#include "pyode/stream_terms.h"

namespace pyode {
namespace {

// Elements per unit of parallel work in the streaming path (long runs keep the prefetchers busy).
constexpr int64_t kStreamBlock = 1 << 15;

template <typename T>
void lincomb_block(const LincombArgs& args, int64_t start, int64_t len) {
  const T* base = static_cast<const T*>(args.base);
  for (int64_t r = 0; r < args.m; ++r) {
    T* out = static_cast<T*>(args.out) + r * args.out_row_stride + start;
    if (base != nullptr) {
      const T* src = base + start;
      for (int64_t i = 0; i < len; ++i) out[i] = src[i];
    } else {
      for (int64_t i = 0; i < len; ++i) out[i] = T(0);
    }
    for (int64_t j = 0; j < args.s; ++j) {
      const double wj = args.w[r * args.s + j];
      if (wj == 0.0) continue;  // tableaux are sparse: skip the memory traffic of zero terms
      const T w = static_cast<T>(wj);
      const T* k = static_cast<const T*>(args.ks[j]) + start;
      for (int64_t i = 0; i < len; ++i) out[i] += w * k[i];
    }
  }
}

// One row when the output overlaps no input: out[i] = base[i] + sum_q w_q k_q[i] in a single pass.
template <typename T>
bool try_stream_row(const LincombArgs& args) {
  TermSet<T> terms;
  if (args.m != 1 || !compact_terms<T>(args.ks, args.w, args.s, terms)) return false;
  if (!disjoint<T>(args.out, args.base, args.n)) return false;
  for (int q = 0; q < terms.count; ++q)
    if (!disjoint<T>(args.out, terms.k[q], args.n)) return false;
  T* __restrict out = static_cast<T*>(args.out);
  const T* base = static_cast<const T*>(args.base);
  const int64_t n = args.n;
  const int64_t nblocks = (n + kStreamBlock - 1) / kStreamBlock;
  const bool non_temporal = use_non_temporal<T>(n);
  with_term_count(terms.count, [&](auto count) {
    constexpr int S = decltype(count)::value;
    parallel_for(nblocks, n >= kParallelThreshold, [&](int64_t blk) {
      const int64_t lo = blk * kStreamBlock, hi = std::min(n, lo + kStreamBlock);
      if (base == nullptr) {
        write_row(out, lo, hi, non_temporal, [&](int64_t i) { return add_terms<T, S>(T(0), terms, i); });
      } else {
        write_row(out, lo, hi, non_temporal, [&](int64_t i) { return add_terms<T, S>(base[i], terms, i); });
      }
    });
  });
  return true;
}

}  // namespace

template <typename T>
void lincomb_cpu(const LincombArgs& args) {
  if (try_stream_row<T>(args)) return;
  const int64_t nblocks = (args.n + kBlock - 1) / kBlock;
  parallel_for(nblocks, args.n * (args.m > 0 ? args.m : 1) >= kParallelThreshold, [&](int64_t blk) {
    const int64_t start = blk * kBlock;
    lincomb_block<T>(args, start, std::min(kBlock, args.n - start));
  });
}

template void lincomb_cpu<float>(const LincombArgs&);
template void lincomb_cpu<double>(const LincombArgs&);

namespace {

// Elements per block of the pair kernel: both rows of a block are computed while its slice of every term
// (<= 8 x 64 KB in float32) stays in L2, so the second row's reads do not reach memory.
constexpr int64_t kPairBlock = 1 << 14;

template <typename T>
bool same_terms(const TermSet<T>& a, const TermSet<T>& b) {
  if (a.count != b.count) return false;
  for (int q = 0; q < a.count; ++q)
    if (a.k[q] != b.k[q]) return false;
  return true;
}

}  // namespace

template <typename T>
bool lincomb_pair_cpu(void* out0, void* out1, int64_t n, const void* base, const void* const* ks,
                      const double* w0, const double* w1, int64_t s) {
  TermSet<T> t0, t1;
  if (!compact_terms<T>(ks, w0, s, t0) || !compact_terms<T>(ks, w1, s, t1) || !same_terms(t0, t1)) return false;
  const void* outputs[2] = {out0, out1};
  for (const void* out : outputs) {
    if (!disjoint<T>(out, base, n)) return false;
    for (int q = 0; q < t0.count; ++q)
      if (!disjoint<T>(out, t0.k[q], n)) return false;
  }
  if (!disjoint<T>(out0, out1, n)) return false;
  T* __restrict y = static_cast<T*>(out0);
  T* __restrict err = static_cast<T*>(out1);
  const T* b = static_cast<const T*>(base);
  const bool non_temporal = use_non_temporal<T>(n);
  const int64_t nblocks = (n + kPairBlock - 1) / kPairBlock;
  with_term_count(t0.count, [&](auto count) {
    constexpr int S = decltype(count)::value;
    parallel_for(nblocks, n >= kParallelThreshold, [&](int64_t blk) {
      const int64_t lo = blk * kPairBlock, hi = std::min(n, lo + kPairBlock);
      write_row(y, lo, hi, non_temporal, [&](int64_t i) { return add_terms<T, S>(b[i], t0, i); });
      write_row(err, lo, hi, non_temporal, [&](int64_t i) { return add_terms<T, S>(T(0), t1, i); });
    });
  });
  return true;
}

template bool lincomb_pair_cpu<float>(void*, void*, int64_t, const void*, const void* const*, const double*,
                                      const double*, int64_t);
template bool lincomb_pair_cpu<double>(void*, void*, int64_t, const void*, const void* const*, const double*,
                                       const double*, int64_t);

}  // namespace pyode
