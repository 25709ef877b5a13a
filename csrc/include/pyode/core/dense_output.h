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

// out = y0 + Σ_j w_j K_j over the terms K (num_terms arrays of n, contiguous with stride n).
inline void combine(const double* y0, const double* K, const double* w, int terms, int n, double* out) {
  for (int i = 0; i < n; ++i) out[i] = y0[i];
  for (int j = 0; j < terms; ++j) {
    const double wj = w[j];
    if (wj == 0.0) continue;  // exact: adding 0 * finite changes nothing (and skips unused f1 terms)
    const double* k = K + static_cast<long>(j) * n;
    for (int i = 0; i < n; ++i) out[i] += wj * k[i];
  }
}

}  // namespace pyode::core
