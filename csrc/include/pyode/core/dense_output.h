// Dense output weights of a Runge-Kutta step (pyode/_solvers/interpolation.py, weights_at): the state at
// t0 + θh is y0 + Σ_j w_j K_j with w_j = Σ_p h θ^(p+1) P[p][j], accumulated in the same order as Python.
#pragma once

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

// out = y0 + Σ_j w_j K_j over the terms K (num_terms arrays of n, contiguous with stride n), summed per
// element in increasing j from y0, as pyode's lincomb kernels: in the state's type T, each weight rounded to T
// first (lincomb_cpu<T>). Zero weights are skipped (exact: adding 0 * finite changes nothing, and unused f1
// terms may be unset); per element, so a small state keeps its running sum in a register.
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
  for (int i = 0; i < n; ++i) {
    T acc = y0[i];
    for (int q = 0; q < nz; ++q) acc += wt[q] * K[static_cast<long>(idx[q]) * n + i];
    out[i] = acc;
  }
}

}  // namespace pyode::core
