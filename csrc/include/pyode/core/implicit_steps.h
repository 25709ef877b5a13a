// The implicit steppers of the solve loop (RowSolver::attempt dispatches on Method::kind): Rosenbrock
// (pyode/_solvers/implicit_rosenbrock.py) and ESDIRK with simplified Newton (implicit_step.py, newton.py),
// the same operations in the same order as the torch path, on a dense n x n Jacobian (a compiled
// jac(t, y, J, p) or forward differences) and the LU of dense_lu.h. Included at the end of solve_loop.h.
#pragma once

#include <cmath>
#include <limits>

#include "pyode/core/dense_lu.h"
#include "pyode/core/solve_loop.h"

namespace pyode::core {

// newton.py's constants: refresh J when Newton contracted slower than kRefreshTheta; stop when the predicted
// remaining error is below kKappa of the allowed local error (also the stall level); at most kNewtonIters
// iterations; a failed solve rejects the step with ratio kNewtonFailureBase^order (the I controller then
// halves h, as Hairer & Wanner's codes do).
constexpr double kRefreshTheta = 0.05;
constexpr double kKappa = 1e-2;
constexpr int kNewtonIters = 10;
// implicit_step.py's fixed-grid Newton: no tolerance to solve to, so each stage to FIXED_ULPS ulps of the state
// (kappa 1 in those units), a stall below FIXED_STALL of them counting as converged; torchdiffeq's 100 iterations.
constexpr double kFixedUlps = 4.0;
constexpr double kFixedStall = 64.0;
constexpr int kFixedNewtonIters = 100;
constexpr double kNewtonFailureBase = 0.9 / 0.5;

// J (n x n, row-major) at (t, y): the compiled jac if rhs has one, else forward differences around f = f(t, y)
// (evaluated here when f is nullptr).
template <class Rhs, class T>
void RowSolver<Rhs, T>::jacobian_into(double t, const double* y, const double* f, double* J) {
  bool done = false;
  if constexpr (HasJacobian<Rhs>::value) done = rhs_.jacobian(t, y, J);
  if (done) return;
  auto fe = [this](double tt, const double* yy, double* dy) { eval(tt, yy, dy); };
  if (f == nullptr) {
    eval(t, y, ws_.ft.data());
    f = ws_.ft.data();
  }
  fd_jacobian(fe, t, y, f, n_, J, ws_.res.data(), ws_.fp.data());
}

// J at the step start (t0, y0) with f0 = f(t0, y0). An ESDIRK's f0 is the last stage derivative
// (Y_s - base) / hγ: Newton's error over hγ, which the differences would divide by sqrt(eps) again (J off by ~1e3
// on Van der Pol mu = 1000, and steps collapse). Differences need f(t0, y0) itself: one more evaluation (ft is
// free for ESDIRKs).
template <class Rhs, class T>
void RowSolver<Rhs, T>::jacobian_at(double t0, const double* y0, const double* f0) {
  jacobian_into(t0, y0, m_->kind == Kind::kEsdirk ? nullptr : f0, ws_.J.data());
  st_.have_jac = true;
  st_.stale = false;
  st_.jac_t = t0;
  st_.jac_step = stats_.n_accepted;
  ++st_.jac_id;
}

// An Adams step from (t0, y0) with f0 = f(t0, y0) into y1 (fixed_grid.py, AdamsLoop.step and _corrector): f0
// joins the past derivatives (all forgotten when h differs from the previous step's: the weights assume equal
// spacing); with order = min(known, adams_history) >= 3, y1 = y0 + dy with dy the Adams-Bashforth predictor, then
// with max_iters > 0 corrected by fixed-point Adams-Moulton iterations until two agree. False: fewer than 3
// are known, the caller takes its starter's step. float64 only (called where kStiff, as the stiff kinds).
template <class Rhs, class T>
bool RowSolver<Rhs, T>::adams_step(const double* y0, double h, const double* f0, double* y1) {
  const int cap = std::max(m_->adams_history, 1);
  if (!std::isnan(adams_h_) && !(std::fabs(h - adams_h_) <= 1e-9 * std::fmax(std::fabs(h), std::fabs(adams_h_))))
    adams_len_ = 0;  // math.isclose(h, last_h, rel_tol=1e-9)
  adams_h_ = h;
  adams_start_ = (adams_start_ + cap - 1) % cap;
  std::memcpy(adams_past(0), f0, sizeof(double) * n_);
  adams_len_ = std::min(adams_len_ + 1, cap);
  const int order = std::min(adams_len_, m_->adams_history);
  if (order < 3) return false;
  double* dy = ws_.dy.data();
  adams_sum(m_->adams_ab + static_cast<int64_t>(order - 1) * m_->adams_history, h, order, dy);
  if (m_->max_iters > 0 && !adams_correct(y0, h, order)) {
    ++stats_.n_unconverged;
    --adams_len_;  // drop the oldest derivative: a lower order for the next steps
  }
  for (int i = 0; i < n_; ++i) y1[i] = y0[i] + dy[i];
  return true;
}

// out = h Σ_j w_j f_j over the `order` newest past derivatives (newest first), summed per element in increasing j
// from 0 (AdamsLoop's lincomb_row(None, used, ...)).
template <class Rhs, class T>
void RowSolver<Rhs, T>::adams_sum(const double* w, double h, int order, double* out) {
  for (int i = 0; i < n_; ++i) out[i] = 0.0;
  for (int j = 0; j < order; ++j) {
    const double wj = h * w[j];
    const double* past = adams_past(j);
    for (int i = 0; i < n_; ++i) out[i] += wj * past[i];
  }
}

// Adams-Moulton fixed-point iterations on ws_.dy (AdamsLoop._corrector): dy = delta + h w_0 f(t1, y0 + dy), with
// delta = h Σ_j w_{j+1} f_j over the order past derivatives, until max|dy_old - dy| / (atol + rtol max(|dy_old|,
// |dy|)) < 1. False: not converged within max_iters.
template <class Rhs, class T>
bool RowSolver<Rhs, T>::adams_correct(const double* y0, double h, int order) {
  const double* am = m_->adams_am + static_cast<int64_t>(order - 1) * (m_->adams_history + 1);
  double *dy = ws_.dy.data(), *dy_old = ws_.dy_old.data(), *delta = ws_.y1b.data();
  double *point = ws_.stage.data(), *f = ws_.probe.data();
  adams_sum(am + 1, h, order, delta);
  const double w0 = h * am[0];
  for (int it = 0; it < m_->max_iters; ++it) {
    std::memcpy(dy_old, dy, sizeof(double) * n_);
    for (int i = 0; i < n_; ++i) point[i] = y0[i] + dy[i];
    eval(adams_t1_, point, f);
    bool converged = true;
    for (int i = 0; i < n_; ++i) {
      dy[i] = delta[i] + w0 * f[i];
      const double scale = o_.atol + o_.rtol * std::fmax(std::fabs(dy_old[i]), std::fabs(dy[i]));
      if (!(std::fabs(dy_old[i] - dy[i]) / scale < 1.0)) converged = false;
    }
    if (converged) return true;
  }
  return false;
}

// method="auto": h rho of the explicit step just accepted, rho = |k_s - k_{s-1}| / |Y_s - Y_{s-1}| from its last two
// stages (both at c = 1), Y_s - Y_{s-1} = h Σ_j (a_sj - a_{s-1,j}) k_j (implicit_auto.py, _explicit_stiffness).
template <class Rhs, class T>
double RowSolver<Rhs, T>::explicit_stiffness(double h) {
  if constexpr (kStiff) {
    const int s = m_->s;
    const double* K = ws_.K.data();
    double* d = ws_.pv.data();
    for (int i = 0; i < n_; ++i) d[i] = K[(s - 1) * n_ + i] - K[(s - 2) * n_ + i];
    const double dk = norm2(d, n_);
    for (int j = 0; j < s - 1; ++j) ws_.w[j] = h * (m_->a[(s - 1) * s + j] - m_->a[(s - 2) * s + j]);
    for (int i = 0; i < n_; ++i) d[i] = 0.0;
    combine(d, K, ws_.w.data(), s - 1, n_, d);
    const double dy = norm2(d, n_);
    return dy > 0.0 ? h * dk / dy : 0.0;
  }
  return 0.0;
}

// method="auto" after an accepted step of size h ending at t1 in y1 (explicit_rho: explicit_stiffness's estimate
// when the explicit method took it): updates the counters and switches the method of the next step when they say
// so (implicit_auto.py, _after_accepted).
template <class Rhs, class T>
void RowSolver<Rhs, T>::auto_after_accept(double t1, const T* y1, double h, double explicit_rho) {
  if constexpr (kStiff) {
    if (m_ == auto_.stiff_method) {
      const double stiffness = st_.have_jac ? h * spectral_radius(ws_.J.data(), n_, ws_.pv.data(), ws_.pw.data())
                                            : INFINITY;
      if (auto_.stiff_accepted(stiffness)) {
        m_ = auto_.explicit_method;
        auto_.switched();
      }
      return;
    }
    bool window_stiff = false;
    if (auto_.explicit_accepted(explicit_rho)) {  // many rejections in the window: ask the Jacobian itself
      jacobian_into(t1, y1, nullptr, ws_.Jx.data());
      window_stiff = h * spectral_radius(ws_.Jx.data(), n_, ws_.pv.data(), ws_.pw.data()) > kStabilityBoundary;
    }
    if (auto_.explicit_done(window_stiff)) {
      m_ = auto_.stiff_method;
      auto_.switched();
    }
  }
}

// LU of the step's matrix for step size h, kept while J and h are unchanged: I/(hγ) - J (Rosenbrock) or
// I - hγJ (ESDIRK; newton.py's stage_matrix). False: singular or non-finite (the step is rejected).
template <class Rhs, class T>
bool RowSolver<Rhs, T>::factor(double h) {
  if (st_.lu_jac == st_.jac_id && st_.lu_h == h) return st_.lu_ok;
  const long nn = static_cast<long>(n_) * n_;
  double* LU = ws_.LU.data();
  const double* J = ws_.J.data();
  if (m_->kind == Kind::kRosenbrock) {
    const double d = 1.0 / (h * m_->gamma);
    for (long q = 0; q < nn; ++q) LU[q] = -J[q];
    for (int i = 0; i < n_; ++i) LU[static_cast<long>(i) * n_ + i] = d - J[static_cast<long>(i) * n_ + i];
  } else {
    const double coef = -h * m_->gamma;
    for (long q = 0; q < nn; ++q) LU[q] = coef * J[q];
    for (int i = 0; i < n_; ++i) LU[static_cast<long>(i) * n_ + i] += 1.0;
  }
  switch (n_) {  // a small matrix: the loops unrolled (the same arithmetic)
    case 2: st_.lu_ok = lu_factor_n<2>(LU, n_, ws_.piv.data()); break;
    case 3: st_.lu_ok = lu_factor_n<3>(LU, n_, ws_.piv.data()); break;
    case 4: st_.lu_ok = lu_factor_n<4>(LU, n_, ws_.piv.data()); break;
    default: st_.lu_ok = lu_factor(LU, n_, ws_.piv.data());
  }
  st_.lu_jac = st_.jac_id;
  st_.lu_h = h;
  return st_.lu_ok;
}

// RODAS-type step: W u_i = f(t0 + α_i h, y0 + Σ a_ij u_j) + Σ (c_ij / h) u_j + h d_i f_t with W = I/(hγ) - J;
// y1 = y0 + Σ m_i u_i, error Σ m_err_i u_i. J and f_t (forward difference in t) are computed once per step
// start and kept while a rejected step is retried. K[0] = f0; the u_i go to ws_.U. The sums run over the
// non-zero coefficients only (ws_.coef), in increasing j: combine's arithmetic, without rescanning the tableau.
template <class Rhs, class T>
double RowSolver<Rhs, T>::attempt_rosenbrock(double t0, const double* y0, double h, double* K, double* y1,
                                          double t_end) {
  const double* f0 = K;
  double* ft = ws_.ft.data();
  if (!(st_.have_jac && st_.jac_t == t0 && st_.jac_step == stats_.n_accepted)) {
    jacobian_at(t0, y0, f0);
    const double dt = std::sqrt(std::numeric_limits<double>::epsilon()) * py_max(std::fabs(t0), 1.0);
    eval(t0 + dt, y0, ws_.fp.data());
    for (int i = 0; i < n_; ++i) ft[i] = (ws_.fp[i] - f0[i]) / dt;
  }
  if (!factor(h)) return INFINITY;
  switch (n_) {  // a small state: its stage vectors in registers (lu_solve_fixed)
    case 1: rosenbrock_stages<1>(t0, y0, h, f0, t_end); return rosenbrock_finish<1>(y0, y1);
    case 2: rosenbrock_stages<2>(t0, y0, h, f0, t_end); return rosenbrock_finish<2>(y0, y1);
    case 3: rosenbrock_stages<3>(t0, y0, h, f0, t_end); return rosenbrock_finish<3>(y0, y1);
    case 4: rosenbrock_stages<4>(t0, y0, h, f0, t_end); return rosenbrock_finish<4>(y0, y1);
    default: rosenbrock_stages<0>(t0, y0, h, f0, t_end); return rosenbrock_finish<0>(y0, y1);
  }
}

// y1 = y0 + Σ m_i u_i, the error Σ m_err_i u_i (each element summed in increasing i, zero weights skipped) and
// the error ratio; N > 0: n = N known at compile time.
template <class Rhs, class T>
template <int N>
double RowSolver<Rhs, T>::rosenbrock_finish(const double* y0, double* y1) {
  const SparseRows& coef = ws_.coef;
  const double* U = ws_.U.data();
  double* err = ws_.probe.data();
  const int rb = 2 * m_->s, re = 2 * m_->s + 1;
  combine_terms<N>(y0, U, coef.index(rb), coef.weight(rb), coef.size(rb), n_, y1);
  combine_terms<N>(nullptr, U, coef.index(re), coef.weight(re), coef.size(re), n_, err);
  return error_ratio(err, y0, y1, n_, o_.atol, o_.rtol);
}

// The increments u_i of attempt_rosenbrock into ws_.U; N > 0: n = N known at compile time.
template <class Rhs, class T>
template <int N>
void RowSolver<Rhs, T>::rosenbrock_stages(double t0, const double* y0, double h, const double* f0, double t_end) {
  const int s = m_->s;
  const long n = N > 0 ? N : n_;
  const SparseRows& coef = ws_.coef;
  const double* ft = ws_.ft.data();
  double* U = ws_.U.data();
  double wc[kMaxStages];
  int jc[kMaxStages];
  const double inv_h = 1.0 / h;  // c_ij / h as c_ij * (1/h), as implicit_rosenbrock.py: one division a step
  for (int i = 0; i < s; ++i) {
    const double* fi = f0;
    if (i > 0) {
      combine_terms<N>(y0, U, coef.index(i), coef.weight(i), coef.size(i), static_cast<int>(n), ws_.stage.data());
      eval(m_->c[i] == 1.0 ? t_end : t0 + m_->c[i] * h, ws_.stage.data(), ws_.fp.data());
      fi = ws_.fp.data();
    }
    // c_ij / h, a product that underflowed to 0 skipped as combine skips zero weights.
    int terms = 0;
    for (int q = 0; q < coef.size(s + i); ++q) {
      const double w = coef.weight(s + i)[q] * inv_h;
      if (w != 0.0) { wc[terms] = w; jc[terms++] = coef.index(s + i)[q]; }
    }
    double* ui = U + i * n;
    const double hd = h * m_->ros_d[i];
    if constexpr (N > 0) {  // terms outer, the N elements inner (unrolled): x stays in registers
      double x[N];
      for (int e = 0; e < N; ++e) x[e] = fi[e];
      for (int q = 0; q < terms; ++q)
        for (int e = 0; e < N; ++e) x[e] += wc[q] * U[jc[q] * N + e];
      if (hd != 0.0)
        for (int e = 0; e < N; ++e) x[e] += hd * ft[e];
      lu_solve_fixed<N>(ws_.LU.data(), ws_.piv.data(), x);
      for (int e = 0; e < N; ++e) ui[e] = x[e];
    } else {
      for (long e = 0; e < n; ++e) {
        double acc = fi[e];
        for (int q = 0; q < terms; ++q) acc += wc[q] * U[jc[q] * n + e];
        ui[e] = hd != 0.0 ? acc + hd * ft[e] : acc;
      }
      lu_solve(ws_.LU.data(), ws_.piv.data(), static_cast<int>(n), ui);
    }
  }
}

// ESDIRK step: the stages by simplified Newton (solve_esdirk), y1 = y0 + Σ h b_j K_j, and the error
// Σ h b_err_j K_j filtered by (I - hγJ)^-1 (Hairer & Wanner IV.8, eq. 8.20, as implicit_step.py does for a
// single-γ pair): the raw estimate overstates the error of the stiff components that the stages damp.
template <class Rhs, class T>
double RowSolver<Rhs, T>::attempt_esdirk(double t0, const double* y0, double h, double* K, double* y1,
                                      double t_end) {
  const int s = m_->s;
  if (!solve_esdirk(t0, y0, h, K, t_end))  // adaptive: reject and shrink; a fixed grid: stop (run_fixed)
    return m_->adaptive() ? std::pow(kNewtonFailureBase, m_->order) : INFINITY;
  double* w = ws_.w.data();
  for (int j = 0; j < s; ++j) w[j] = h * m_->b[j];
  combine(y0, K, w, s, n_, y1);
  if (!m_->adaptive()) return 0.0;
  double* err = ws_.probe.data();
  for (int q = 0; q < n_; ++q) err[q] = 0.0;
  for (int j = 0; j < s; ++j) w[j] = h * m_->b_err[j];
  combine(err, K, w, s, n_, err);
  lu_solve(ws_.LU.data(), ws_.piv.data(), n_, err);  // the LU of I - hγJ the last stage used
  return error_ratio(err, y0, y1, n_, o_.atol, o_.rtol);
}

// All stages (K[0] = f0 is the explicit first stage); with a stale Jacobian that fails, once more with a
// fresh one (implicit_step.py, _solve_stages). False: Newton failed or I - hγJ is singular.
template <class Rhs, class T>
bool RowSolver<Rhs, T>::solve_esdirk(double t0, const double* y0, double h, double* K, double t_end) {
  const int s = m_->s;
  bool force = false;
  double* base = ws_.stage.data();
  double* w = ws_.w.data();
  while (true) {
    const bool fresh = st_.have_jac && st_.jac_t == t0 && st_.jac_step == stats_.n_accepted;
    bool now_fresh = fresh;
    if (!fresh && (force || st_.stale || !st_.have_jac)) {
      jacobian_at(t0, y0, K);
      now_fresh = true;
    }
    st_.theta_max = 0.0;
    bool ok = factor(h);
    for (int i = 1; ok && i < s; ++i) {
      const double t_i = m_->c[i] == 1.0 ? t_end : t0 + m_->c[i] * h;
      for (int j = 0; j < i; ++j) w[j] = h * m_->a[i * s + j];
      combine(y0, K, w, i, n_, base);
      const double hg = h * m_->a[i * s + i];
      double* ki = k(K, i);  // the Newton start: base + hg * (predicted stage derivative)
      if (m_->predictor != nullptr) {
        for (int j = 0; j < i; ++j) w[j] = m_->predictor[i * s + j];
        for (int q = 0; q < n_; ++q) ki[q] = 0.0;
        combine(ki, K, w, i, n_, ki);
      } else {
        std::memcpy(ki, k(K, i - 1), sizeof(double) * n_);
      }
      double* z = ws_.z.data();
      for (int q = 0; q < n_; ++q) z[q] = base[q] + hg * ki[q];
      ok = newton_stage(t_i, base, hg, y0, z);
      if (ok)
        for (int q = 0; q < n_; ++q) ki[q] = (z[q] - base[q]) / hg;  // = f(t_i, Y_i) at convergence
    }
    if (ok) {
      st_.stale = st_.theta_max > kRefreshTheta;
      return true;
    }
    if (now_fresh) return false;
    force = true;
  }
}

// Simplified Newton for Y = base + hg f(t_i, Y) from y_stage (overwritten with the solution): newton.py's
// NewtonState.iterate (rate θ, predicted error η|Δ| <= κ, early stop when it cannot converge in time).
template <class Rhs, class T>
bool RowSolver<Rhs, T>::newton_stage(double t_i, const double* base, double hg, const double* y0, double* z) {
  double* dz = ws_.dz.data();
  const bool fixed = !m_->adaptive();  // implicit_step.py's _tolerances and NewtonState's kappa/stall
  const double kappa = fixed ? 1.0 : kKappa, stall = fixed ? kFixedStall : kKappa;
  const double ulps = kFixedUlps * std::numeric_limits<double>::epsilon();
  const double atol = fixed ? ulps : o_.atol, rtol = fixed ? ulps : o_.rtol;
  const int iters = m_->max_iters > 0 ? m_->max_iters : fixed ? kFixedNewtonIters : kNewtonIters;
  double eta = std::pow(py_max(st_.eta_old, 1e-16), 0.8);
  double previous = -1.0;
  for (int it = 0; it < iters; ++it) {
    eval(t_i, z, ws_.fp.data());
    for (int q = 0; q < n_; ++q) dz[q] = (base[q] + hg * ws_.fp[q]) - z[q];
    lu_solve(ws_.LU.data(), ws_.piv.data(), n_, dz);
    for (int q = 0; q < n_; ++q) z[q] += dz[q];
    const double size = scaled_norm(dz, nullptr, y0, n_, atol, rtol);
    if (!std::isfinite(size)) return false;
    if (previous > 0.0) {
      const double theta = size / previous;
      st_.theta_max = py_max(st_.theta_max, theta);
      if (theta >= 1.0) return size <= stall;  // diverging, unless stalled at rounding level
      eta = theta / (1.0 - theta);
      const int left = iters - 1 - it;
      if (left > 0 && std::pow(theta, left) * eta * size > kappa && size > stall) return false;
    }
    if (eta * size <= kappa || size == 0.0) {
      st_.eta_old = eta;
      return true;
    }
    previous = size;
  }
  return false;
}

}  // namespace pyode::core
