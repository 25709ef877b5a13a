// Dense LU with partial pivoting for the small Newton / Rosenbrock matrices of the native stiff steppers
// (n up to a few hundred; no LAPACK), and the forward-difference Jacobian of pyode/_solvers/newton.py.
#pragma once

#include <cmath>
#include <limits>
#include <utility>

namespace pyode::core {

// Factors the row-major n x n matrix A in place (L unit lower, U upper; piv[k] the row swapped into k). The
// diagonal holds 1 / u_kk: a solve then multiplies instead of dividing (a division's latency, n per solve and
// 8 solves per rodas5 step, was the largest single cost of a step at n = 2, ~20%). Returns false when A has a
// NaN/inf or is singular to working precision (min |u_kk| <= eps * max |u_kk|, the test of newton.py's factor()),
// so the caller rejects the step and tries a smaller one. N > 0: n = N known at compile time (the loops unrolled,
// the same arithmetic).
template <int N>
inline bool lu_factor_n(double* A, int n_runtime, int* piv) {
  const int n = N > 0 ? N : n_runtime;
  for (long q = 0; q < static_cast<long>(n) * n; ++q)
    if (!std::isfinite(A[q])) return false;
  double dmin = INFINITY, dmax = 0.0;
  for (int k = 0; k < n; ++k) {
    int p = k;
    double best = std::fabs(A[static_cast<long>(k) * n + k]);
    for (int i = k + 1; i < n; ++i) {
      const double v = std::fabs(A[static_cast<long>(i) * n + k]);
      if (v > best) { best = v; p = i; }
    }
    piv[k] = p;
    if (p != k)
      for (int j = 0; j < n; ++j) std::swap(A[static_cast<long>(k) * n + j], A[static_cast<long>(p) * n + j]);
    const double pivot = A[static_cast<long>(k) * n + k];
    dmin = std::fmin(dmin, std::fabs(pivot));
    dmax = std::fmax(dmax, std::fabs(pivot));
    if (pivot == 0.0) return false;
    const double inv = 1.0 / pivot;
    A[static_cast<long>(k) * n + k] = inv;
    const double* rk = A + static_cast<long>(k) * n;
    for (int i = k + 1; i < n; ++i) {
      double* ri = A + static_cast<long>(i) * n;
      const double l = ri[k] * inv;
      ri[k] = l;
      if (l != 0.0)
        for (int j = k + 1; j < n; ++j) ri[j] -= l * rk[j];
    }
  }
  return n == 0 || dmin > dmax * std::numeric_limits<double>::epsilon();
}

// n known at run time only.
inline bool lu_factor(double* A, int n, int* piv) { return lu_factor_n<0>(A, n, piv); }

// lu_solve for a compile-time n on x[0..N) (a local array the caller keeps in registers): the same operations
// in the same order, the row swaps by constant indices. A small Rosenbrock state's stages solve this way (the
// generic loop stores and reloads b[k] at every step, since b might alias LU).
template <int N>
inline void lu_solve_fixed(const double* LU, const int* piv, double* x) {
  for (int k = 0; k < N; ++k) {
    for (int j = k + 1; j < N; ++j)
      if (piv[k] == j) std::swap(x[k], x[j]);
    double acc = x[k];
    for (int j = 0; j < k; ++j) acc -= LU[k * N + j] * x[j];
    x[k] = acc;
  }
  for (int k = N - 1; k >= 0; --k) {
    double acc = x[k];
    for (int j = k + 1; j < N; ++j) acc -= LU[k * N + j] * x[j];
    x[k] = acc * LU[k * N + k];
  }
}

// Solves A x = b in place (b becomes x) with the factors of lu_factor (the diagonal holding 1 / u_kk).
inline void lu_solve(const double* LU, const int* piv, int n, double* b) {
  for (int k = 0; k < n; ++k) {
    if (piv[k] != k) std::swap(b[k], b[piv[k]]);
    const double* rk = LU + static_cast<long>(k) * n;
    double acc = b[k];
    for (int j = 0; j < k; ++j) acc -= rk[j] * b[j];
    b[k] = acc;
  }
  for (int k = n - 1; k >= 0; --k) {
    const double* rk = LU + static_cast<long>(k) * n;
    double acc = b[k];
    for (int j = k + 1; j < n; ++j) acc -= rk[j] * b[j];
    b[k] = acc * rk[k];
  }
}

// J (row-major n x n) = ∂f/∂y at (t, y) by forward differences with f = f(t, y) given: column j from one
// evaluation at y + δ_j e_j, δ_j = sqrt(eps max(|y_j|, 1e-5)) (Hairer's RADAU5/RODAS: balances truncation
// ~δ|f''| against rounding ~eps|f|/δ relative to y_j itself, so a small component is not perturbed by a large
// part of itself), divided by the step as represented. `yp` and `fp` are scratch arrays of n. Twin of
// Jacobian._differences in pyode/_solvers/newton.py.
constexpr double kFdFloor = 1e-5;

template <class Eval>
void fd_jacobian(Eval& eval, double t, const double* y, const double* f, int n, double* J, double* yp, double* fp) {
  const double eps = std::numeric_limits<double>::epsilon();
  for (int i = 0; i < n; ++i) yp[i] = y[i];
  for (int j = 0; j < n; ++j) {
    const double step = (y[j] + std::sqrt(eps * std::fmax(std::fabs(y[j]), kFdFloor))) - y[j];
    yp[j] = y[j] + step;
    eval(t, yp, fp);
    yp[j] = y[j];
    for (int i = 0; i < n; ++i) J[static_cast<long>(i) * n + j] = (fp[i] - f[i]) / step;
  }
}

}  // namespace pyode::core
