// pyode_native.h's entry points: argument checks, the function-pointer right-hand side, and trajectories
// spread over threads. The integration itself is pyode/core/solve_loop.h.
#include "pyode/pyode_native.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "native_error.h"
#include "pyode/core/solve_loop.h"
#include "sigint_watch.h"

namespace pyode::native {

namespace {
thread_local std::string g_last_error;
}  // namespace

void set_last_error(const std::string& message) { g_last_error = message; }

}  // namespace pyode::native

namespace {

using pyode::core::LoopOptions;
using pyode::core::Method;
using pyode::core::RowOutputOf;
using pyode::core::RowSolver;
using pyode::core::RowStats;
using pyode::core::WorkspaceOf;

using pyode::native::set_last_error;

struct InvalidArgument {
  std::string what;
};

// A literal message: nothing is built unless the check fails (a std::string argument would allocate at every
// call, and a small solve makes dozens of checks).
void require(bool ok, const char* what) {
  if (!ok) throw InvalidArgument{what};
}

// The C types of a solve whose state is T: pyode_solve's for double, pyode_solve_f32's for float.
template <class T>
struct Abi;
template <>
struct Abi<double> {
  using Rhs = pyode_rhs_fn;
  using Event = pyode_event_fn;
  using Problem = pyode_problem;
  static constexpr const char* kName = "pyode_solve: ";
};
template <>
struct Abi<float> {
  using Rhs = pyode_rhs_f32_fn;
  using Event = pyode_event_f32_fn;
  using Problem = pyode_problem_f32;
  static constexpr const char* kName = "pyode_solve_f32: ";
};

// The user's f in solver time s = sign * t: f_solver(s, y) = sign * f(sign * s, y) (pyode's FlatFunc).
// Its Jacobian likewise: J_solver(s, y) = sign * J(sign * s, y); false when there is no compiled jac (always
// for float states: the stiff kinds run in double only).
template <class T>
struct FnPtrRhs {
  typename Abi<T>::Rhs f;
  const T* p;
  double sign;
  int n;
  pyode_jac_fn jac = nullptr;
  void operator()(double s, const T* y, T* dy) const {
    f(sign * s, y, dy, p);
    if (sign < 0)
      for (int i = 0; i < n; ++i) dy[i] = -dy[i];
  }
  bool jacobian(double s, const double* y, double* J) const {
    if constexpr (std::is_same_v<T, double>) {
      if (jac == nullptr) return false;
      jac(sign * s, y, J, p);
      if (sign < 0)
        for (long q = 0; q < static_cast<long>(n) * n; ++q) J[q] = -J[q];
      return true;
    }
    return false;
  }
};

template <class T>
struct FnPtrEvent {
  static constexpr bool active = true;
  typename Abi<T>::Event e;
  const T* p;
  double sign;
  double value(double s, const T* y) const { return e(sign * s, y, p); }
};

// The implicit kinds' extra data (method.h): Rosenbrock needs ros_c, ros_d, b_err and gamma > 0; ESDIRK a
// stiffly accurate adaptive tableau with an explicit first stage at c = 0 and one diagonal gamma.
void check_implicit(const pyode_method* pm, Method& m) {
  const int s = m.s;
  require(pm->kind == 1 || pm->kind == 2, "method.kind must be 0 (explicit), 1 (Rosenbrock), 2 (ESDIRK), 3 (Adams), 4 (ALF) or 5 (BDF)");
  require(std::isfinite(pm->gamma) && pm->gamma > 0.0, "method.gamma must be finite and > 0");
  require(pm->b_err != nullptr || pm->kind == 2,
          "a Rosenbrock method must be adaptive (method.b_err not NULL); ESDIRKs may run on a fixed grid");
  require(pm->max_iters >= 0, "method.max_iters must be >= 0");
  m.gamma = pm->gamma;
  m.max_iters = pm->max_iters;
  m.predictor = pm->predictor;
  m.restep = false;
  if (pm->kind == 1) {
    require(pm->ros_c != nullptr && pm->ros_d != nullptr, "a Rosenbrock method needs ros_c and ros_d");
    require(!pm->fsal, "a Rosenbrock method has fsal = 0");
    require(pm->interp_degree == 0 ? pm->interp_terms == s + 1 : pm->interp_terms == s,
            "a Rosenbrock method has interp_terms = s (its own interpolant on the increments, interp_degree >= 1) "
            "or s + 1 (cubic Hermite, interp_degree = 0)");
    m.kind = pyode::core::Kind::kRosenbrock;
    m.ros_c = pm->ros_c;
    m.ros_d = pm->ros_d;
    return;
  }
  require(s >= 2 && pm->c[0] == 0.0 && pm->a[0] == 0.0,
          "an ESDIRK method needs an explicit first stage (c[0] = a[0][0] = 0)");
  for (int i = 1; i < s; ++i) require(pm->a[i * s + i] == pm->gamma, "an ESDIRK method's diagonal must be gamma");
  const bool adaptive = pm->b_err != nullptr;
  if (adaptive || pm->fsal) {  // y1 is the last stage: f(t1, y1) is its derivative
    require(pm->fsal && pm->c[s - 1] == 1.0, "an adaptive ESDIRK method needs fsal = 1 and c[s-1] = 1");
    for (int j = 0; j < s; ++j)
      require(pm->a[(s - 1) * s + j] == pm->b[j], "an fsal ESDIRK method must be stiffly accurate (b = last row of a)");
  }
  m.kind = pyode::core::Kind::kEsdirk;
}

// Adams (kind 3): a fixed-grid method (no b_err) whose tableau is its starter's, with its weight tables.
void check_adams(const pyode_method* pm, Method& m) {
  require(pm->b_err == nullptr && !pm->interp_restep, "an Adams method runs on a fixed grid (b_err NULL, no restep)");
  require(pm->adams_history >= 1 && pm->adams_history <= pyode::core::kMaxStages, "method.adams_history must be 1..64");
  require(pm->max_iters >= 0, "method.max_iters must be >= 0");
  require(pm->adams_ab != nullptr && pm->adams_am != nullptr, "an Adams method needs adams_ab and adams_am");
  m.kind = pyode::core::Kind::kAdams;
  m.adams_history = pm->adams_history;
  m.max_iters = pm->max_iters;
  m.adams_ab = pm->adams_ab;
  m.adams_am = pm->adams_am;
}

Method check_method(const pyode_method* pm) {
  require(pm != nullptr, "method is NULL");
  if (pm->kind == 4) {  // ALF: no tableau
    Method m;
    m.kind = pyode::core::Kind::kAlf;
    m.order = 2;
    return m;
  }
  if (pm->kind == 5) {  // BDF: no tableau; adams_history its maximum order
    require(pm->adams_history >= 1 && pm->adams_history <= pyode::core::kBdfMaxOrder,
            "method.adams_history (the maximum order of kind 5, BDF) must be 1..5");
    Method m;
    m.kind = pyode::core::Kind::kBdf;
    m.order = 1;
    m.adams_history = pm->adams_history;
    return m;
  }
  const int s = pm->num_stages;
  require(s >= 1 && s <= pyode::core::kMaxStages, "method.num_stages must be 1..64");
  require(pm->order >= 1, "method.order must be >= 1");
  require(pm->c && pm->a && pm->b, "method.c, a and b must not be NULL");
  require(pm->kind == 1 || pm->interp_restep || (pm->interp_degree >= 1 && pm->interp_P != nullptr),
          "method needs an interpolant (interp_degree >= 1 and interp_P) or interp_restep = 1");
  require(pm->interp_terms == s || pm->interp_terms == s + 1, "method.interp_terms must be s or s + 1");
  require(!pm->fsal || s >= 2, "an FSAL method needs at least 2 stages");
  require(pm->interp_degree >= 0 && pm->interp_degree <= 16, "method.interp_degree must be 0..16");
  Method m;
  m.s = s;
  m.order = pm->order;
  m.fsal = pm->fsal != 0;
  m.c = pm->c;
  m.a = pm->a;
  m.b = pm->b;
  m.b_err = pm->b_err;
  m.interp_degree = pm->interp_restep ? 0 : pm->interp_degree;
  m.num_terms = pm->interp_terms;
  m.P = pm->interp_P;
  m.restep = pm->interp_restep != 0;
  if (pm->kind == 3) check_adams(pm, m);
  else if (pm->kind != 0) check_implicit(pm, m);
  return m;
}

// method="auto": the stiff partner of the explicit method m (pyode_method.stiff_partner's conditions).
Method check_partner(const pyode_method* pm, const Method& m) {
  const pyode_method* sp = pm->stiff_partner;
  require(m.kind == pyode::core::Kind::kExplicit && m.adaptive() && m.s >= 2 && m.c[m.s - 1] == 1.0 &&
              m.c[m.s - 2] == 1.0,
          "a method with a stiff_partner must be explicit, adaptive, with its last two stages at c = 1");
  require(sp->kind == 1 || sp->kind == 2, "method.stiff_partner must be an implicit kind (1 or 2)");
  require(sp->stiff_partner == nullptr, "method.stiff_partner must not have a stiff_partner itself");
  require(sp->order == m.order, "method.stiff_partner must have the method's order (one controller serves both)");
  return check_method(sp);
}

LoopOptions check_options(const pyode_options* po, const Method& m) {
  require(po != nullptr, "options is NULL");
  require(po->struct_size == static_cast<int64_t>(sizeof(pyode_options)),
          "options.struct_size does not match this library's pyode_options (rebuild the caller)");
  auto finite_nonneg = [](double x) { return std::isfinite(x) && x >= 0.0; };
  require(finite_nonneg(po->rtol) && finite_nonneg(po->atol), "rtol and atol must be finite and >= 0");
  require(!m.adaptive() || po->rtol > 0.0 || po->atol > 0.0, "rtol and atol cannot both be 0");
  require(po->safety > 0.0 && po->safety <= 1.0, "options.safety must be in (0, 1]");
  require(po->dfactor > 0.0 && po->dfactor <= 1.0, "options.dfactor must be in (0, 1]");
  require(po->ifactor >= 1.0 && std::isfinite(po->ifactor), "options.ifactor must be finite and >= 1");
  require(std::isfinite(po->pcoeff) && std::isfinite(po->icoeff) && std::isfinite(po->dcoeff),
          "options.pcoeff/icoeff/dcoeff must be finite");
  require(finite_nonneg(po->min_step) && po->max_step > 0.0 && po->min_step <= po->max_step,
          "need 0 <= min_step <= max_step and max_step > 0");
  require(po->max_num_steps >= 1, "options.max_num_steps must be >= 1");
  require(finite_nonneg(po->first_step), "options.first_step must be finite and >= 0");
  require(m.adaptive() || (std::isfinite(po->step_size) && po->step_size > 0.0) ||
              (m.kind == pyode::core::Kind::kAlf && po->step_size == 0.0),
          "a fixed-grid method needs options.step_size > 0 (ALF: or 0, one step per output interval)");
  require(po->num_threads >= 0, "options.num_threads must be >= 0");
  require(po->controller >= PYODE_CONTROLLER_DEFAULT && po->controller <= PYODE_CONTROLLER_PREDICTIVE,
          "options.controller must be 0 (default), 1 (PID) or 2 (predictive)");
  LoopOptions o;
  o.rtol = po->rtol;
  o.atol = po->atol;
  o.controller = {m.order, po->safety, po->ifactor, po->dfactor, po->pcoeff, po->icoeff, po->dcoeff,
                  po->min_step, po->max_step,
                  po->controller == PYODE_CONTROLLER_PREDICTIVE ||
                      (po->controller == PYODE_CONTROLLER_DEFAULT && m.kind != pyode::core::Kind::kExplicit)};
  o.first_step = po->first_step;
  o.max_num_steps = po->max_num_steps;
  o.step_size = po->step_size;
  o.event_tol = std::isfinite(po->event_tol) && po->event_tol > 0.0 ? po->event_tol : 0.0;
  o.cancel = po->cancel;
  return o;
}

template <class Problem>
void check_problem(const Problem* pp, int64_t stats_len) {
  require(pp != nullptr, "problem is NULL");
  const int64_t M = pp->num_traj, n = pp->n, k = pp->num_params, T = pp->num_times;
  require(M >= 1 && n >= 0 && n < (int64_t{1} << 30) && k >= 0 && T >= 1, "need num_traj >= 1, n >= 0, "
          "num_params >= 0, num_times >= 1");
  require(pp->params_stride == 0 || pp->params_stride == k, "params_stride must be 0 (shared) or num_params");
  require(M <= (int64_t{1} << 40) / std::max<int64_t>(n, 1) / T, "num_traj * n * num_times is too large");
  require(pp->y0 != nullptr && pp->y0_len >= M * n, "y0 is NULL or shorter than num_traj * n");
  const int64_t need_p = pp->params_stride == 0 ? k : M * k;
  require(need_p == 0 || (pp->params != nullptr && pp->params_len >= need_p), "params is NULL or too short");
  require(pp->t != nullptr && pp->t_len >= T, "t is NULL or shorter than num_times");
  require(pp->ys != nullptr && pp->ys_len >= T * M * n, "ys is NULL or shorter than num_times * num_traj * n");
  require(pp->y_event == nullptr || pp->y_event_len >= M * n, "y_event is shorter than num_traj * n");
  require(stats_len >= M, "stats is shorter than num_traj");
  for (int64_t q = 0; q < T; ++q) require(std::isfinite(pp->t[q]), "t contains NaN or inf");
  if (T > 1) {
    const bool up = pp->t[1] > pp->t[0];
    for (int64_t q = 1; q < T; ++q)
      require(up ? pp->t[q] > pp->t[q - 1] : pp->t[q] < pp->t[q - 1],
              "t must be strictly increasing or strictly decreasing");
  }
}

// step_t / jump_t in solver time (sign * t), finite, sorted, without repeats.
std::vector<double> solver_times(const double* values, int64_t count, double sign, const char* name) {
  if (count < 0 || (count > 0 && values == nullptr))
    throw InvalidArgument{std::string(name) + " is NULL or has a negative length"};
  std::vector<double> out(values, values + count);
  for (double& x : out) {
    if (!std::isfinite(x)) throw InvalidArgument{std::string(name) + " contains NaN or inf"};
    x *= sign;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

pyode_traj_stats to_c(const RowStats& r, double sign) {
  pyode_traj_stats out{};
  out.status = static_cast<int32_t>(r.status);
  out.t_reached = sign * r.t_reached;
  out.event_t = sign * r.event_t;
  out.n_accepted = r.n_accepted;
  out.n_rejected = r.n_rejected;
  out.n_feval = r.n_feval;
  out.n_unconverged = static_cast<int32_t>(std::min<int64_t>(r.n_unconverged, INT32_MAX));
  return out;
}

template <class T>
struct Job {
  const Method& m;
  const Method* stiff;  // method="auto": m's stiff partner, else nullptr
  const LoopOptions& o;
  typename Abi<T>::Rhs rhs;
  pyode_jac_fn jac;
  typename Abi<T>::Event event;
  const typename Abi<T>::Problem& p;
  const std::vector<double>& t_out;  // solver times
  double sign;
  pyode_traj_stats* stats;

  void row(int64_t r, WorkspaceOf<T>& ws) const {
    const int n = static_cast<int>(p.n);
    const T* params = p.num_params == 0 ? nullptr : p.params + r * p.params_stride;
    FnPtrRhs<T> f{rhs, params, sign, n, jac};
    RowSolver<FnPtrRhs<T>, T> solver(m, o, f, ws, n, stiff);
    RowOutputOf<T> out{p.ys + r * p.n, p.num_traj * p.n, p.y_event ? p.y_event + r * p.n : nullptr};
    RowStats rs;
    if (pyode::core::cancelled(o)) {  // never started: nothing written but y0
      for (int64_t k = 0; k < p.num_times; ++k)
        for (int i = 0; i < n; ++i) out.ys[k * out.stride + i] = k == 0 ? p.y0[r * p.n + i] : static_cast<T>(NAN);
      rs.status = pyode::core::Status::kCancelled;
      rs.t_reached = t_out[0];
    } else if (event != nullptr) {
      FnPtrEvent<T> ev{event, params, sign};
      rs = solver.run(p.y0 + r * p.n, t_out.data(), p.num_times, out, ev);
    } else {
      pyode::core::NoEvent ev;
      rs = solver.run(p.y0 + r * p.n, t_out.data(), p.num_times, out, ev);
    }
    const bool alf_v = m.kind == pyode::core::Kind::kAlf && rs.status == pyode::core::Status::kSuccess;
    if (out.y_event != nullptr && rs.status != pyode::core::Status::kEvent && !alf_v)  // ALF: its final v
      for (int i = 0; i < n; ++i) out.y_event[i] = static_cast<T>(NAN);
    stats[r] = to_c(rs, sign);
  }
};

// A workspace no larger than this stays with its thread for the next solve (tuning: about the buffers of an
// n = 180 implicit solve; an explicit one of n = 16k).
constexpr size_t kKeepWorkspaceBytes = size_t{1} << 19;

// All rows in the calling thread with the workspace this thread kept from its previous solve: its buffers keep
// their capacity, so a small solve allocates nothing (allocating and freeing them was half the fixed cost of a
// one-trajectory solve). False when that workspace is in use: a right-hand side that itself solves (a torch
// func calling pyode.solve) re-enters here, and the inner solve must not share the outer one's buffers.
template <class T>
bool run_rows_reusing(const Job<T>& job, const Method& m, int64_t M) {
  thread_local WorkspaceOf<T> kept;
  thread_local bool busy = false;
  if (busy) return false;
  struct Release {
    ~Release() {
      if (kept.bytes() > kKeepWorkspaceBytes) kept = WorkspaceOf<T>();  // a large state's buffers go back
      busy = false;
    }
  } release;
  busy = true;
  kept.resize(m, static_cast<int>(job.p.n), job.stiff);
  for (int64_t r = 0; r < M; ++r) job.row(r, kept);
  return true;
}

// Rows handed out one at a time from a shared counter: each thread takes the next unsolved trajectory,
// so slow trajectories (many steps) do not hold up a fixed share. Workspaces are allocated here, in the
// calling thread, so an allocation failure reaches the caller instead of terminating a worker; if the
// system refuses a thread, the ones that started (and this one) do all the rows.
template <class T>
void run_rows(const Job<T>& job, const Method& m, int64_t M, int threads) {
  if (threads == 1 && run_rows_reusing(job, m, M)) return;
  std::vector<WorkspaceOf<T>> workspaces(threads);
  for (auto& ws : workspaces) ws.resize(m, static_cast<int>(job.p.n), job.stiff);
  std::atomic<int64_t> next{0};
  auto worker = [&](int q) {
    for (int64_t r = next++; r < M; r = next++) job.row(r, workspaces[q]);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads > 1 ? threads - 1 : 0);
  try {
    for (int q = 1; q < threads; ++q) pool.emplace_back(worker, q);
  } catch (const std::system_error&) {
  }
  worker(0);
  for (auto& th : pool) th.join();
}

template <class T>
int32_t solve_impl(const pyode_method* pm, const pyode_options* po, typename Abi<T>::Rhs rhs, pyode_jac_fn jac,
                   typename Abi<T>::Event event, const typename Abi<T>::Problem* pp, pyode_traj_stats* stats,
                   int64_t stats_len) {
  const Method m = check_method(pm);
  const Method stiff = pm->stiff_partner != nullptr ? check_partner(pm, m) : Method{};
  const Method* partner = pm->stiff_partner != nullptr ? &stiff : nullptr;
  require(std::is_same_v<T, double> || (m.kind == pyode::core::Kind::kExplicit && partner == nullptr),
          "float32 states need an explicit method (a Runge-Kutta tableau: method.kind 0, no stiff_partner); the stiff "
          "kinds, Adams and ALF run in float64");
  LoopOptions o = check_options(po, m);
  require(rhs != nullptr, "rhs is NULL");
  require(stats != nullptr, "stats is NULL");
  require(event == nullptr || (m.adaptive() && m.kind != pyode::core::Kind::kBdf),
          "events need an adaptive Runge-Kutta method (e.g. dopri5), not BDF");
  check_problem(pp, stats_len);
  require(((m.kind == pyode::core::Kind::kExplicit || m.kind == pyode::core::Kind::kAdams ||
            m.kind == pyode::core::Kind::kAlf) && partner == nullptr) ||
              pp->n <= 4096,
          "implicit methods factor a dense n x n matrix: n must be <= 4096");
  const double sign = pp->num_times > 1 && pp->t[1] < pp->t[0] ? -1.0 : 1.0;
  std::vector<double> t_out(pp->t, pp->t + pp->num_times);
  for (double& x : t_out) x *= sign;
  const std::vector<double> jumps = solver_times(po->jump_t, po->num_jump_t, sign, "jump_t");
  std::vector<double> stops = solver_times(po->step_t, po->num_step_t, sign, "step_t");
  stops.insert(stops.end(), jumps.begin(), jumps.end());
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  require(stops.empty() || m.adaptive(), "step_t/jump_t need an adaptive method");
  o.stops = stops.data();
  o.num_stops = static_cast<int64_t>(stops.size());
  o.jumps = jumps.data();
  o.num_jumps = static_cast<int64_t>(jumps.size());
  const int64_t M = pp->num_traj;
  // (hardware_concurrency reads /sys on Linux, ~5 us: not for one trajectory)
  int threads = M == 1 ? 1 : po->num_threads > 0 ? po->num_threads
                                                 : static_cast<int>(std::thread::hardware_concurrency());
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, M)));
  const pyode::native::SigintWatch sigint(po->stop_on_sigint != 0);
  o.interrupts = sigint.counter();
  o.interrupts_at = sigint.start();
  Job<T> job{m, partner, o, rhs, jac, event, *pp, t_out, sign, stats};
  run_rows(job, m, M, threads);
  return PYODE_OK;
}

// A C entry's body: its exceptions become return codes and pyode_last_error's message (prefixed with name).
template <class F>
int32_t guarded(const char* name, F&& solve) {
  try {
    set_last_error("");
    return solve();
  } catch (const InvalidArgument& e) {
    set_last_error(name + e.what);
    return PYODE_EINVAL;
  } catch (const std::bad_alloc&) {
    set_last_error(std::string(name) + "out of memory");
    return PYODE_ENOMEM;
  } catch (const std::exception& e) {  // std::thread creation failure and the like
    set_last_error(name + std::string(e.what()));
    return PYODE_ENOMEM;
  }
}

}  // namespace

extern "C" {

int32_t pyode_native_abi_version(void) { return PYODE_NATIVE_ABI; }

const char* pyode_last_error(void) { return pyode::native::g_last_error.c_str(); }

int32_t pyode_solve(const pyode_method* method, const pyode_options* options, pyode_rhs_fn rhs,
                    pyode_event_fn event, const pyode_problem* problem, pyode_traj_stats* stats,
                    int64_t stats_len) {
  return pyode_solve_jac(method, options, rhs, nullptr, event, problem, stats, stats_len);
}

int32_t pyode_solve_jac(const pyode_method* method, const pyode_options* options, pyode_rhs_fn rhs,
                        pyode_jac_fn jac, pyode_event_fn event, const pyode_problem* problem,
                        pyode_traj_stats* stats, int64_t stats_len) {
  return guarded(Abi<double>::kName, [&] {
    return solve_impl<double>(method, options, rhs, jac, event, problem, stats, stats_len);
  });
}

int32_t pyode_solve_f32(const pyode_method* method, const pyode_options* options, pyode_rhs_f32_fn rhs,
                        pyode_event_f32_fn event, const pyode_problem_f32* problem, pyode_traj_stats* stats,
                        int64_t stats_len) {
  return guarded(Abi<float>::kName, [&] {
    return solve_impl<float>(method, options, rhs, nullptr, event, problem, stats, stats_len);
  });
}

}  // extern "C"
