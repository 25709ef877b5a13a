// The starting step of Hairer, Nørsett & Wanner (1993), II.4, as pyode/_solvers/controller.py
// (initial_step) computes it: one extra evaluation of f, final exponent 1 / order.
#pragma once

#include <algorithm>
#include <cmath>

#include "pyode/core/norms.h"

namespace pyode::core {

// Returns NaN when no usable step exists (f0 or y0 non-finite, or h0 underflowed). `probe` and `f1` are
// scratch arrays of n; rhs(t, y, dy) evaluates f. T: the state's type (float or double); the norms are
// scaled_norm's for T, the probe y0 + h0 f0 is lincomb_cpu<T>'s (h0 rounded to T).
template <class Rhs, class T>
double initial_step(Rhs& rhs, double t0, const T* y0, const T* f0, int n, int order, double rtol,
                    double atol, T* probe, T* f1) {
  const double d0 = scaled_norm(y0, nullptr, y0, n, atol, rtol);
  const double d1 = scaled_norm(f0, nullptr, y0, n, atol, rtol);
  if (!(std::isfinite(d0) && std::isfinite(d1))) return NAN;
  const double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  if (h0 == 0.0) return NAN;
  const T w = static_cast<T>(h0);
  for (int i = 0; i < n; ++i) probe[i] = y0[i] + w * f0[i];
  rhs(t0 + h0, probe, f1);
  const double d2 = scaled_norm(f1, f0, y0, n, atol, rtol) / h0;
  double h1;
  if (d1 <= 1e-15 && d2 <= 1e-15) {
    h1 = py_max(1e-6, h0 * 1e-3);
  } else {
    h1 = std::pow(0.01 / py_max(d1, d2), 1.0 / order);
  }
  return py_min(100.0 * h0, h1);
}

}  // namespace pyode::core
