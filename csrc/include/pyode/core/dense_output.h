// Dense output weights of a Runge-Kutta step (pyode/_solvers/interpolation.py, weights_at): the state at
// t0 + θh is y0 + Σ_j w_j K_j with w_j = Σ_p h θ^(p+1) P[p][j], accumulated in the same order as Python.
#pragma once

#include <algorithm>

#include "pyode/common.h"
#include "pyode/core/method.h"

namespace pyode::core {

// w: (m.num_terms) weights at θ (already times h).
inline void dense_weights(const Method& m, double theta, double h, double* w) {
  for (int j = 0; j < m.num_terms; ++j) w[j] = 0.0;
  double power = h;
  for (int p = 0; p < m.interp_degree; ++p) {
    power *= theta;
    for (int j = 0; j < m.num_terms; ++j) w[j] += power * m.P[p * m.num_terms + j];
  }
}

// Rows of at least this many elements are combined term by term over blocks (combine_blocked), which
// vectorises across elements; shorter ones element by element with the running sum in a register.
constexpr int kCombineBlockedMin = 64;

// combine for a long row: lincomb_cpu's blocked path (per block of pyode::kBlock elements: the base, then each
// term in increasing j). Each element sees the same operations in the same order as the per-element loop, so
// the two give the same bits. out may be y0 itself, or a term not among the non-zero ones (idx).
template <class T>
inline void combine_blocked(const T* y0, const T* K, const int* idx, const T* wt, int nz, int n, T* out) {
  for (int start = 0; start < n; start += static_cast<int>(pyode::kBlock)) {
    const int len = std::min(static_cast<int>(pyode::kBlock), n - start);
    T* o = out + start;
    if (o != y0 + start)
      for (int i = 0; i < len; ++i) o[i] = y0[start + i];
    for (int q = 0; q < nz; ++q) {
      const T w = wt[q];
      const T* k = K + static_cast<long>(idx[q]) * n + start;
      for (int i = 0; i < len; ++i) o[i] += w * k[i];
    }
  }
}

// out = y0 + Σ_j w_j K_j over the terms K (num_terms arrays of n, contiguous with stride n), summed per
// element in increasing j from y0, as pyode's lincomb kernels: in the state's type T, each weight rounded to T
// first (lincomb_cpu<T>). Zero weights are skipped (exact: adding 0 * finite changes nothing, and unused f1
// terms may be unset).
template <class T>
inline void combine(const T* y0, const T* K, const double* w, int terms, int n, T* out) {
  int idx[kMaxTerms];
  T wt[kMaxTerms];
  int nz = 0;
  for (int j = 0; j < terms && j < kMaxTerms; ++j)  // terms <= kMaxTerms: checked at the entry points
    if (w[j] != 0.0) {
      idx[nz] = j;
      wt[nz++] = static_cast<T>(w[j]);
    }
  if (n >= kCombineBlockedMin) return combine_blocked(y0, K, idx, wt, nz, n, out);
  for (int i = 0; i < n; ++i) {
    T acc = y0[i];
    for (int q = 0; q < nz; ++q) acc += wt[q] * K[static_cast<long>(idx[q]) * n + i];
    out[i] = acc;
  }
}

}  // namespace pyode::core
