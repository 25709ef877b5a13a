// The BDF/NDF stepper kind (Kind::kBdf, method="bdf"): variable order 1..5 and variable step by modified divided
// differences (Shampine & Reichelt 1997; SciPy's BDF). C++ twin of pyode/_solvers/bdf.py (BdfLoop): the same
// operations in the same order, so both take the same steps; see that module for the method. float64 only (the
// Newton matrix). Buffers (WorkspaceOf::resize): D in H ((kBdfMaxOrder + 3) rows of n), its rescaling scratch in U,
// J / LU / piv, y_pred in y1b, ψ in stage, Newton's iterate in y1, d in z, its increment in dz, f in K.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>

namespace pyode::core {

constexpr int kBdfMaxOrder = 5;
constexpr int kBdfRows = kBdfMaxOrder + 3;  // rows of D
constexpr int kBdfNewtonIters = 4;
constexpr double kBdfMinFactor = 0.2, kBdfMaxFactor = 10.0;

// γ_k = Σ_{j<=k} 1/j, α_k = (1 - κ_k) γ_k, E_k = κ_k γ_k + 1/(k+1) with the NDF κ (bdf.py's tables).
struct BdfCoefficients {
  double gamma[kBdfMaxOrder + 1], alpha[kBdfMaxOrder + 1], error_const[kBdfMaxOrder + 1];
  BdfCoefficients() {
    const double kappa[kBdfMaxOrder + 1] = {0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0};
    for (int k = 0; k <= kBdfMaxOrder; ++k) {
      double g = 0.0;
      for (int j = 1; j <= k; ++j) g += 1.0 / j;
      gamma[k] = g;
      alpha[k] = (1.0 - kappa[k]) * g;
      error_const[k] = kappa[k] * g + 1.0 / (k + 1);
    }
  }
};

inline const BdfCoefficients& bdf_coefficients() {
  static const BdfCoefficients coefficients;
  return coefficients;
}

// W = R(factor) R(1) ((order+1)^2, row-major): D'[i] = Σ_j W[j][i] D[j] after the step size changes by factor
// (bdf.py, change_matrix: the same products in the same order).
inline void bdf_change_matrix(int order, double factor, double* W) {
  const int size = order + 1;
  double R[(kBdfMaxOrder + 1) * (kBdfMaxOrder + 1)], U[(kBdfMaxOrder + 1) * (kBdfMaxOrder + 1)];
  for (double* M : {R, U}) {
    const double f = M == R ? factor : 1.0;
    for (int j = 0; j < size; ++j) M[j] = 1.0;
    for (int i = 1; i < size; ++i) {
      M[i * size] = 0.0;
      for (int j = 1; j < size; ++j) M[i * size + j] = M[(i - 1) * size + j] * ((i - 1 - f * j) / i);
    }
  }
  for (int i = 0; i < size; ++i)
    for (int j = 0; j < size; ++j) {
      double acc = 0.0;
      for (int m = 0; m < size; ++m) acc += R[i * size + m] * U[m * size + j];
      W[i * size + j] = acc;
    }
}

// Newton's tolerance in the scaled norm (bdf.py, newton_tolerance; float64).
inline double bdf_newton_tolerance(double rtol) {
  if (!(rtol > 0.0)) return 0.03;
  return py_max(10.0 * std::numeric_limits<double>::epsilon() / rtol, py_min(0.03, std::sqrt(rtol)));
}

// error^(-1/exponent): inf for a zero error, 0 for an infinite or NaN one (bdf.py, _factor).
inline double bdf_factor(double error, int exponent) {
  if (error == 0.0) return INFINITY;
  if (!std::isfinite(error)) return 0.0;
  return std::pow(error, -1.0 / exponent);
}

// out = Σ_j w_j rows[j] (rows: count arrays of n, stride n), from 0 (the kernels' lincomb_row with no base).
inline void bdf_sum(const double* rows, const double* w, int count, int n, double* out) {
  combine_terms<double>(nullptr, [rows, n](int j) { return rows + static_cast<long>(j) * n; }, w, count, 0, n, out);
}

template <class Rhs, class T>
void RowSolver<Rhs, T>::run_bdf(const T* y0_in, const double* t_out, int64_t num_times) {
  if constexpr (!kStiff) {
    fail(Status::kNonFinite, t_out[0]);  // unreachable: the float entry point refuses kind 5
  } else {
    const int n = n_;
    double* D = ws_.H.data();
    double* f0 = ws_.K.data();
    const double t0 = t_out[0];
    std::memcpy(D, y0_in, sizeof(double) * n);
    eval(t0, D, f0);
    double h = o_.first_step;
    if (!(h > 0.0)) {
      auto f = [this](double tt, const double* yy, double* dy) { eval(tt, yy, dy); };
      h = initial_step(f, t0, D, f0, n, 2, o_.rtol, o_.atol, ws_.probe.data(), ws_.event_y.data());
      if (!(std::isfinite(h) && h > 0.0)) { fail(Status::kNonFinite, t0); return; }
    }
    for (int i = 0; i < n; ++i) D[n + i] = f0[i] * h;
    std::fill(D + 2 * static_cast<long>(n), D + static_cast<long>(kBdfRows) * n, 0.0);
    bdf_ = BdfState{t0, h, 1, 0};
    bdf_.newton_tol = bdf_newton_tolerance(o_.rtol);
    jacobian_into(t0, D, f0, ws_.J.data());
    while (written_ < num_times) {
      const double t_prev = bdf_.t;
      if (!bdf_step(t_out[num_times - 1])) return;
      const double h_step = bdf_.t - t_prev;
      for (; written_ < num_times && t_out[written_] <= bdf_.t; ++written_) {
        T* dst = out_.ys + written_ * out_.stride;
        if (t_out[written_] == bdf_.t) copy(ws_.y1.data(), dst);
        else bdf_dense(t_prev + ((t_out[written_] - t_prev) / h_step) * h_step, dst);
      }
      stats_.t_reached = bdf_.t;
    }
  }
}

// One accepted step (rejections retry inside); false when the row failed (status set). bdf.py, BdfLoop._step.
template <class Rhs, class T>
bool RowSolver<Rhs, T>::bdf_step(double t_end) {
  const BdfCoefficients& co = bdf_coefficients();
  BdfState& b = bdf_;
  b.fresh_jac = false;
  double t_new, safety, error;
  while (true) {
    if (cancelled(o_)) return !fail(Status::kCancelled, b.t);
    if (stats_.n_accepted + stats_.n_rejected >= o_.max_num_steps) return !fail(Status::kMaxSteps, b.t);
    if (!(b.h > step_resolution(b.t))) return !fail(b.non_finite ? Status::kNonFinite : Status::kStepUnderflow, b.t);
    t_new = b.t + b.h;
    if (t_new > t_end) {  // the last step lands on t_end exactly
      t_new = t_end;
      bdf_rescale((t_new - b.t) / b.h, false);
    }
    b.h = t_new - b.t;
    const int iters = bdf_corrector(t_new);
    if (iters == 0) {  // Newton failed with a fresh Jacobian: halve the step
      ++stats_.n_rejected;
      bdf_rescale(0.5, false);
      continue;
    }
    const int k = b.order;
    safety = 0.9 * (2 * kBdfNewtonIters + 1) / (2 * kBdfNewtonIters + iters);
    error = std::fabs(co.error_const[k]) * scaled_norm(ws_.z.data(), nullptr, ws_.y1.data(), n_, o_.atol, o_.rtol);
    if (!(error <= 1.0)) {
      ++stats_.n_rejected;
      const double shrink = std::isfinite(error) ? safety * std::pow(error, -1.0 / (k + 1)) : kBdfMinFactor;
      bdf_rescale(py_max(kBdfMinFactor, shrink), true);  // keeps Newton's matrix (bdf.py, _rescale)
      continue;
    }
    break;
  }
  ++stats_.n_accepted;
  bdf_accept(t_new, safety, error);
  return true;
}

// D updated with the step's d (ws_.z); after k + 1 equal steps the order and step size (bdf.py, _accept).
template <class Rhs, class T>
void RowSolver<Rhs, T>::bdf_accept(double t_new, double safety, double error) {
  const BdfCoefficients& co = bdf_coefficients();
  BdfState& b = bdf_;
  const int n = n_, k = b.order;
  double* D = ws_.H.data();
  auto row = [D, n](int j) { return D + static_cast<long>(j) * n; };
  const double* d = ws_.z.data();
  for (int i = 0; i < n; ++i) row(k + 2)[i] = d[i] - row(k + 1)[i];
  std::memcpy(row(k + 1), d, sizeof(double) * n);
  for (int j = k; j >= 0; --j)
    for (int i = 0; i < n; ++i) row(j)[i] = row(j)[i] + row(j + 1)[i];
  b.t = t_new;
  if (++b.n_equal < k + 1) return;
  const double* y_new = ws_.y1.data();
  const double lower =
      k > 1 ? std::fabs(co.error_const[k - 1]) * scaled_norm(row(k), nullptr, y_new, n, o_.atol, o_.rtol) : INFINITY;
  const double upper = k < m_->adams_history
                           ? std::fabs(co.error_const[k + 1]) * scaled_norm(row(k + 2), nullptr, y_new, n, o_.atol, o_.rtol)
                           : INFINITY;
  const double factors[3] = {bdf_factor(lower, k), bdf_factor(error, k + 1), bdf_factor(upper, k + 2)};
  int best = 0;
  for (int i = 1; i < 3; ++i)
    if (factors[i] > factors[best]) best = i;
  b.order = k + best - 1;
  bdf_rescale(py_min(kBdfMaxFactor, safety * factors[best]), false);
}

// The step size times factor: D[0..order] rescaled to the new spacing (bdf.py, _rescale).
template <class Rhs, class T>
void RowSolver<Rhs, T>::bdf_rescale(double factor, bool keep_lu) {
  BdfState& b = bdf_;
  const int k = b.order, size = k + 1, n = n_;
  double W[(kBdfMaxOrder + 1) * (kBdfMaxOrder + 1)], w[kBdfMaxOrder + 1];
  bdf_change_matrix(k, factor, W);
  double* D = ws_.H.data();
  double* scratch = ws_.U.data();
  for (int i = 0; i < size; ++i) {
    for (int j = 0; j < size; ++j) w[j] = W[j * size + i];
    bdf_sum(D, w, size, n, scratch + static_cast<long>(i) * n);
  }
  std::memcpy(D, scratch, sizeof(double) * size * n);
  b.h *= factor;
  b.n_equal = 0;
  if (!keep_lu) b.lu_held = false;
}

// Newton on the corrector with the held Jacobian, then once more with one at the predictor if that fails and
// none was computed during this step. Returns the iterations (0: failed); y_new in ws_.y1, d in ws_.z.
template <class Rhs, class T>
int RowSolver<Rhs, T>::bdf_corrector(double t_new) {
  const BdfCoefficients& co = bdf_coefficients();
  BdfState& b = bdf_;
  const int k = b.order, n = n_;
  const double* D = ws_.H.data();
  double w[kBdfMaxOrder + 1];
  for (int j = 0; j <= k; ++j) w[j] = 1.0;
  bdf_sum(D, w, k + 1, n, ws_.y1b.data());  // the predictor
  for (int j = 1; j <= k; ++j) w[j - 1] = co.gamma[j] / co.alpha[k];
  bdf_sum(D + n, w, k, n, ws_.stage.data());  // ψ
  const double c = b.h / co.alpha[k];
  while (true) {
    if (!b.lu_held) {  // LU of I - cJ, kept until dropped
      double* LU = ws_.LU.data();
      const long nn = static_cast<long>(n) * n;
      for (long q = 0; q < nn; ++q) LU[q] = -c * ws_.J[q];
      for (int i = 0; i < n; ++i) LU[static_cast<long>(i) * n + i] += 1.0;
      b.lu_held = lu_factor(LU, n, ws_.piv.data());
    }
    const int iters = b.lu_held ? bdf_newton(t_new, c) : 0;
    if (iters > 0 || b.fresh_jac) return iters;
    jacobian_into(t_new, ws_.y1b.data(), nullptr, ws_.J.data());
    b.lu_held = false;
    b.fresh_jac = true;
  }
}

// Simplified Newton on d - c f(t_new, y_p + d) + ψ = 0 from d = 0 (bdf.py, _newton). Returns the iterations, or 0.
template <class Rhs, class T>
int RowSolver<Rhs, T>::bdf_newton(double t_new, double c) {
  BdfState& b = bdf_;
  const int n = n_;
  const double *y_pred = ws_.y1b.data(), *psi = ws_.stage.data();
  double *y = ws_.y1.data(), *d = ws_.z.data(), *f = ws_.K.data(), *dy = ws_.dz.data();
  std::memcpy(y, y_pred, sizeof(double) * n);
  std::fill(d, d + n, 0.0);
  double previous = -1.0;  // < 0: no previous increment
  for (int it = 0; it < kBdfNewtonIters; ++it) {
    eval(t_new, y, f);
    b.non_finite = false;
    for (int i = 0; i < n; ++i) b.non_finite = b.non_finite || !std::isfinite(f[i]);
    if (b.non_finite) return 0;
    for (int i = 0; i < n; ++i) dy[i] = c * f[i] - psi[i] - d[i];
    lu_solve(ws_.LU.data(), ws_.piv.data(), n, dy);
    const double size = scaled_norm(dy, nullptr, y_pred, n, o_.atol, o_.rtol);
    const bool rated = previous >= 0.0;
    const double rate = rated ? size / previous : 0.0;
    if (rated && (rate >= 1.0 || std::pow(rate, kBdfNewtonIters - it) / (1.0 - rate) * size > b.newton_tol)) return 0;
    for (int i = 0; i < n; ++i) {
      y[i] += dy[i];
      d[i] += dy[i];
    }
    if (size == 0.0 || (rated && rate / (1.0 - rate) * size < b.newton_tol)) return it + 1;
    previous = size;
  }
  return 0;
}

// The polynomial held after the last step at time t (bdf.py, interpolant_weights and BdfLoop.dense).
template <class Rhs, class T>
void RowSolver<Rhs, T>::bdf_dense(double t, double* dst) {
  const BdfState& b = bdf_;
  double w[kBdfMaxOrder + 1];
  double p = 1.0;
  for (int m = 0; m < b.order; ++m) {
    p *= (t - (b.t - m * b.h)) / ((m + 1) * b.h);
    w[m] = p;
  }
  combine(ws_.H.data(), ws_.H.data() + n_, w, b.order, n_, dst);
}

}  // namespace pyode::core
