// CPU implementation of rk_finish: y1, the error estimate and its scaled RMS norm in one pass.
#include "pyode/rk_finish.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pyode/rk_math.h"
#include "pyode/cpu_parallel.h"
#include "pyode/stream_terms.h"

namespace pyode {
namespace {

// One unit of work: elements [start, start + len) of segment seg (never straddles a segment).
struct Chunk {
  int64_t seg, start, len;
};

// visit(chunk) for every chunk in order: segments in order, kBlock elements at a time within each.
template <typename F>
void for_each_chunk(const FinishArgs& args, F&& visit) {
  const int64_t nseg = args.seg_offsets ? args.nseg : 1;
  for (int64_t q = 0; q < nseg; ++q) {
    const int64_t lo = args.seg_offsets ? args.seg_offsets[q] : 0;
    const int64_t hi = args.seg_offsets ? args.seg_offsets[q + 1] : args.n;
    for (int64_t start = lo; start < hi; start += kBlock) visit(Chunk{q, start, std::min(kBlock, hi - start)});
  }
}

std::vector<Chunk> make_chunks(const FinishArgs& args) {
  std::vector<Chunk> chunks;
  for_each_chunk(args, [&](const Chunk& c) { chunks.push_back(c); });
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
  // within one block in T (vectorises); across blocks in double
  const double sum = sum_of_squares<T>(0, c.len, [&](int64_t i) { return scaled_error(err[i], y0[i], y1[i], atol, rtol); });
  return static_cast<double>(sum);
}

// The non-zero b and e terms, compacted for the streaming chunk (see stream_terms.h); usable when
// there are few enough of them and y1 overlaps no input.
template <typename T>
struct FinishTerms {
  TermSet<T> b, e;
  bool ok = false;
};

template <typename T>
FinishTerms<T> stream_terms(const FinishArgs& args) {
  FinishTerms<T> t;
  if (args.err_out != nullptr || args.e == nullptr) return t;
  if (!compact_terms<T>(args.ks, args.e, args.s, t.e)) return t;
  if (args.b != nullptr) {
    if (!compact_terms<T>(args.ks, args.b, args.s, t.b)) return t;
    if (!disjoint<T>(args.y1, args.y0, args.n)) return t;
    for (int q = 0; q < t.b.count; ++q)
      if (!disjoint<T>(args.y1, t.b.k[q], args.n)) return t;
  }
  t.ok = true;
  return t;
}

// finish_chunk with every term read in one loop: y1 (when b is given) in one pass over the chunk,
// then the error and its norm in a second pass that finds y1 still in cache. Same sums, same order.
template <typename T>
double finish_chunk_stream(const FinishArgs& args, const FinishTerms<T>& t, const Chunk& c) {
  const T* y0 = static_cast<const T*>(args.y0);
  const int64_t lo = c.start, hi = c.start + c.len;
  if (args.b != nullptr) {
    T* __restrict y1 = static_cast<T*>(args.y1);
    with_term_count(t.b.count, [&](auto count) {
      constexpr int S = decltype(count)::value;
      for (int64_t i = lo; i < hi; ++i) y1[i] = add_terms<T, S>(y0[i], t.b, i);
    });
  }
  const T* y1 = static_cast<const T*>(args.y1);
  const T atol = static_cast<T>(args.atol), rtol = static_cast<T>(args.rtol);
  double sum = 0.0;
  with_term_count(t.e.count, [&](auto count) {
    constexpr int S = decltype(count)::value;
    sum = sum_of_squares<T>(lo, hi, [&](int64_t i) {
      return scaled_error(add_terms<T, S>(T(0), t.e, i), y0[i], y1[i], atol, rtol);
    });
  });
  return static_cast<double>(sum);
}

}  // namespace

template <typename T>
double rk_finish_cpu(const FinishArgs& args) {
  const FinishTerms<T> terms = stream_terms<T>(args);
  auto chunk_sum = [&](const Chunk& c) {
    return terms.ok ? finish_chunk_stream<T>(args, terms, c) : finish_chunk<T>(args, c);
  };
  const int64_t nseg = args.seg_offsets ? args.nseg : 1;
  std::vector<double> seg_sum(args.seg_norms != nullptr ? nseg : 0, 0.0);
  double total = 0.0;
  // Chunk sums are added in chunk order on both paths: the result does not depend on the thread count.
  auto add = [&](const Chunk& c, double value) {
    if (!seg_sum.empty()) seg_sum[c.seg] += value;
    total += value;
  };
  if (args.n >= kParallelThreshold) {
    const std::vector<Chunk> chunks = make_chunks(args);
    std::vector<double> partial(chunks.size(), 0.0);
    parallel_for(static_cast<int64_t>(chunks.size()), true, [&](int64_t c) { partial[c] = chunk_sum(chunks[c]); });
    for (size_t c = 0; c < chunks.size(); ++c) add(chunks[c], partial[c]);
  } else {
    for_each_chunk(args, [&](const Chunk& c) { add(c, chunk_sum(c)); });
  }
  for (int64_t q = 0; q < static_cast<int64_t>(seg_sum.size()); ++q) {
    const int64_t len = args.seg_offsets ? args.seg_offsets[q + 1] - args.seg_offsets[q] : args.n;
    args.seg_norms[q] = len > 0 ? std::sqrt(seg_sum[q] / static_cast<double>(len)) : 0.0;
  }
  return args.n > 0 ? std::sqrt(total / static_cast<double>(args.n)) : 0.0;
}

template double rk_finish_cpu<float>(const FinishArgs&);
template double rk_finish_cpu<double>(const FinishArgs&);

}  // namespace pyode
