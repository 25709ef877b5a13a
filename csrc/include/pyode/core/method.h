// A Runge-Kutta method as data: tableau, embedded error weights, interpolant matrix and FSAL flag.
// The numbers come from pyode/_solvers/tableaux.py (and rk_step's interpolant) at run time; nothing here
// re-types a tableau.
#pragma once

#include <cstdint>

namespace pyode::core {

constexpr int kMaxStages = 64;
constexpr int kMaxTerms = kMaxStages + 1;  // the stages and f1

// The stepper the loop calls (solve_loop.h, attempt): an explicit Runge-Kutta step, a Rosenbrock step (one LU
// of I/(hγ) - J per step, linear stages), an ESDIRK step (stage by stage simplified Newton on I - hγJ), or a
// fixed-grid Adams step (past derivatives; the tableau is its Runge-Kutta starter's), or an asynchronous leapfrog
// step (ALF: the state carries v ~ f alongside y; no tableau; RowSolver::run_alf), or the variable-order BDF/NDF
// (its own step and order control and interpolant: no tableau; RowSolver::run_bdf, bdf.h; adams_history is its
// maximum order, 1..5).
enum class Kind : int { kExplicit = 0, kRosenbrock = 1, kEsdirk = 2, kAdams = 3, kAlf = 4, kBdf = 5 };

// View of a method; it does not own the arrays (the caller keeps them alive for the solve).
struct Method {
  int s = 0;                      // stages
  int order = 1;                  // order of the propagated solution (the controller's exponent)
  bool fsal = false;              // stage s-1 is f(t0 + h, y1): its input is y1 and it starts the next step
  const double* c = nullptr;      // (s) nodes
  const double* a = nullptr;      // (s*s) row-major, strictly lower triangular
  const double* b = nullptr;      // (s) propagated weights
  const double* b_err = nullptr;  // (s) error weights b - b_hat, or nullptr for a fixed-grid method
  // Interpolant y(t0 + θh) = y0 + h Σ_j W_j(θ) K_j with W_j(θ) = Σ_p θ^(p+1) P[p][j]; the terms K_j are the
  // s stages, plus f1 = f(t0 + h, y1) as term s when the method is not FSAL (num_terms = s + 1).
  int interp_degree = 0;          // rows of P
  int num_terms = 0;              // columns of P: s (FSAL) or s + 1
  const double* P = nullptr;      // (interp_degree * num_terms)
  bool restep = false;            // dense output by a fresh step of size θh instead (high-order methods)
  // Implicit kinds (pyode/_solvers/implicit_tableaux.py). Rosenbrock (Hairer & Wanner's transformed form):
  // c = α, a = a_ij (strictly lower), b = m, b_err = m_err, ros_c = c_ij (strictly lower), ros_d = d, gamma = γ;
  // dense output is the method's own continuous extension when interp_degree > 0 (P: weights on the s
  // increments u_i, num_terms = s, y(t0 + θh) = y0 + Σ_i Σ_p θ^(p+1) P[p][i] u_i, no factor h), else the cubic
  // Hermite through (y0, f0), (y1, f1), f1 as term s. ESDIRK (stiffly accurate,
  // explicit first stage c_0 = 0): a lower triangular with the diagonal γ, fsal (the last stage derivative is
  // f(t1, y1)), predictor (s*s, row i: weights on stages j < i of the Newton start), P the Hermite weights.
  Kind kind = Kind::kExplicit;
  double gamma = 0.0;
  const double* ros_c = nullptr;
  const double* ros_d = nullptr;
  const double* predictor = nullptr;
  // Adams (pyode/_solvers/fixed_grid.py, AdamsLoop: torchdiffeq's explicit_adams / implicit_adams): a step uses
  // up to adams_history past derivatives (max_order - 1); with fewer than 3 it is a step of the tableau (the RK4
  // starter). adams_ab row k-1: the k Adams-Bashforth weights (adams_history x adams_history); adams_am row k-1:
  // the k + 1 Adams-Moulton weights (adams_history x (adams_history + 1)); max_iters corrector iterations
  // (0: Adams-Bashforth only). Outputs by linear interpolation. An ESDIRK on a fixed grid (b_err nullptr):
  // max_iters Newton iterations per stage (0: the default, 100).
  int adams_history = 0;
  int max_iters = 0;
  const double* adams_ab = nullptr;
  const double* adams_am = nullptr;

  bool adaptive() const { return b_err != nullptr || kind == Kind::kBdf; }
  // True when the interpolant reads f1 (a non-FSAL method whose P has a non-zero column s).
  bool needs_f1() const {
    if (kind == Kind::kRosenbrock) return interp_degree == 0;  // only the Hermite fallback reads f1
    if (kind == Kind::kAdams || kind == Kind::kAlf || kind == Kind::kBdf) return false;  // linear interpolation / outputs on the grid
    if (fsal || restep || num_terms <= s) return false;
    for (int p = 0; p < interp_degree; ++p)
      if (P[p * num_terms + s] != 0.0) return true;
    return false;
  }
};

}  // namespace pyode::core
