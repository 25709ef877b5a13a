// Dense output weights of a Runge-Kutta step (pyode/_solvers/interpolation.py, weights_at): the state at
// t0 + θh is y0 + Σ_j w_j K_j with w_j = Σ_p h θ^(p+1) P[p][j], accumulated in the same order as Python.
#pragma once

#include <algorithm>

#include "pyode/common.h"
#include "pyode/core/method.h"

namespace pyode::core {

// w: (m.num_terms) weights at θ (already times h).
inline void dense_weights(const Method& m, double theta, double h, double* w) {
  // locals: a store through w could alias m's fields, which the compiler would then reload every iteration
  const int terms = m.num_terms, degree = m.interp_degree;
  const double* P = m.P;
  if (degree == 0) {
    for (int j = 0; j < terms; ++j) w[j] = 0.0;
    return;
  }
  double power = h * theta;
  // w_j = 0 + power P[0][j] first (the sum from 0, without a separate zeroing pass), then the higher powers
  for (int j = 0; j < terms; ++j) w[j] = 0.0 + power * P[j];
  for (int p = 1; p < degree; ++p) {
    power *= theta;
    const double* row = P + static_cast<long>(p) * terms;
    for (int j = 0; j < terms; ++j) w[j] += power * row[j];
  }
}

// Rows of at least this many elements are combined term by term over blocks (combine_blocked), which
// vectorises across elements; shorter ones element by element with the running sum in a register.
constexpr int kCombineBlockedMin = 64;

// combine for a long row: lincomb_cpu's blocked path (per block of pyode::kBlock elements: the base, then each
// term in increasing j). Each element sees the same operations in the same order as the per-element loop, so
// the two give the same bits. out may be y0 itself, or a term not among the non-zero ones (idx); y0 nullptr: from 0.
template <class T>
inline void combine_blocked(const T* y0, const T* K, const int* idx, const T* wt, int nz, int n, T* out) {
  for (int start = 0; start < n; start += static_cast<int>(pyode::kBlock)) {
    const int len = std::min(static_cast<int>(pyode::kBlock), n - start);
    T* o = out + start;
    if (y0 == nullptr)  // from 0
      for (int i = 0; i < len; ++i) o[i] = T(0);
    else if (o != y0 + start)
      for (int i = 0; i < len; ++i) o[i] = y0[start + i];
    for (int q = 0; q < nz; ++q) {
      const T w = wt[q];
      const T* k = K + static_cast<long>(idx[q]) * n + start;
      for (int i = 0; i < len; ++i) o[i] += w * k[i];
    }
  }
}

// The weights of combine: the non-zero ones (indices idx, values rounded to T, lincomb_cpu<T>); returns how many.
template <class T>
inline int nonzero_weights(const double* w, int terms, int* idx, T* wt) {
  int nz = 0;
  for (int j = 0; j < terms && j < kMaxTerms; ++j)  // terms <= kMaxTerms: checked at the entry points
    if (w[j] != 0.0) {
      idx[nz] = j;
      wt[nz++] = static_cast<T>(w[j]);
    }
  return nz;
}

// out[i] = y0[i] + Σ_q wt[q] term(idx[q])[i] for i in [begin, end), summed per element in increasing q from y0
// (from 0 when y0 is nullptr), in the state's type T. The one stage combination of the C++ paths (combine_sparse
// below; combine_small and combine_blocked do the same operations per element). term(j): a pointer to term j's
// elements, indexed like out.
template <class T, class TermAt>
inline void combine_nonzero(const T* y0, TermAt term, const int* idx, const T* wt, int nz, int64_t begin,
                            int64_t end, T* out) {
  for (int64_t i = begin; i < end; ++i) {
    T acc = y0 != nullptr ? y0[i] : T(0);
    for (int q = 0; q < nz; ++q) acc += wt[q] * term(idx[q])[i];
    out[i] = acc;
  }
}

// combine_nonzero with the weights w (terms of them) rounded to T, zero weights skipped (exact: adding 0 * finite
// changes nothing, and unused f1 terms may be unset).
template <class T, class TermAt>
inline void combine_terms(const T* y0, TermAt term, const double* w, int terms, int64_t begin, int64_t end, T* out) {
  int idx[kMaxTerms];
  T wt[kMaxTerms];
  const int nz = nonzero_weights(w, terms, idx, wt);
  combine_nonzero(y0, term, idx, wt, nz, begin, end, out);
}

// combine_nonzero for a state of N (compile-time) elements: the terms outer, the N sums in registers (each element
// still sums its terms in increasing q from y0, so the result is the same bit for bit; the N chains of adds
// overlap instead of running one after another).
template <int N, class T>
inline void combine_small(const T* y0, const T* K, const int* idx, const T* wt, int nz, T* out) {
  T acc[N];
  for (int e = 0; e < N; ++e) acc[e] = y0 != nullptr ? y0[e] : T(0);
  for (int q = 0; q < nz; ++q) {
    const T w = wt[q];
    const T* kq = K + static_cast<long>(idx[q]) * N;
    for (int e = 0; e < N; ++e) acc[e] += w * kq[e];
  }
  for (int e = 0; e < N; ++e) out[e] = acc[e];
}

// combine over the non-zero terms idx[0..nz) with their weights wt (already in T).
template <class T>
inline void combine_sparse(const T* y0, const T* K, const int* idx, const T* wt, int nz, int n, T* out) {
  switch (n) {  // the small states of per-sample rows and small systems
    case 1: return combine_small<1>(y0, K, idx, wt, nz, out);
    case 2: return combine_small<2>(y0, K, idx, wt, nz, out);
    case 3: return combine_small<3>(y0, K, idx, wt, nz, out);
    case 4: return combine_small<4>(y0, K, idx, wt, nz, out);
    default: break;
  }
  if (n >= kCombineBlockedMin) return combine_blocked(y0, K, idx, wt, nz, n, out);
  combine_nonzero(y0, [K, n](int j) { return K + static_cast<long>(j) * n; }, idx, wt, nz, 0, n, out);
}

// out = y0 + Σ_j w_j K_j over the terms K (num_terms arrays of n, contiguous with stride n): combine_sparse on the
// non-zero weights (per element, or for a long row its blocked twin: the same operations per element).
template <class T>
inline void combine(const T* y0, const T* K, const double* w, int terms, int n, T* out) {
  int idx[kMaxTerms];
  T wt[kMaxTerms];
  const int nz = nonzero_weights(w, terms, idx, wt);
  combine_sparse(y0, K, idx, wt, nz, n, out);
}

}  // namespace pyode::core
