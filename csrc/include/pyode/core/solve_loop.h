// The integration loop of one row (one trajectory): accept/reject, the PID controller, the initial step,
// output times by dense output and terminal events, for a method given as data: an explicit Runge-Kutta
// method, or a stiff one (Rosenbrock, ESDIRK) whose step is another stepper kind of the same loop
// (RowSolver::attempt dispatches on Method::kind; implicit_steps.h).
// It is the C++ twin of pyode/_solvers/adaptive.py (AdaptiveLoop) and fixed_grid.py (FixedGridLoop):
// the same operations in the same order, so both take the same steps. A solve of R rows runs R of these
// independently (each row its own t, h and controller state; no lockstep), on any threads.
//
// Templated on the right-hand side (any callable rhs(t, y, dy) in solver time) and the event (a type with
// `static constexpr bool active` and value(t, y) -> double), so a function pointer, a Python callback or a
// device function can plug in without another loop; the stiff kinds use rhs.jacobian(t, y, J) -> bool when
// it has one (a compiled Jacobian), else forward differences.
//
// And templated on the state's scalar T: double, or float for the explicit kinds (the torch path's float32
// states). The state, stages, outputs, stage sums, error terms and dense output are in T, computed as the
// compiled kernels compute them for T (combine, norms.h); time, step size, tableau weights (h a_ij, rounded to
// T per term), controller and error ratio stay double. The stiff kinds run only with T = double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "pyode/core/auto_switch.h"
#include "pyode/core/controller.h"
#include "pyode/core/dense_lu.h"
#include "pyode/core/dense_output.h"
#include "pyode/core/initial_step.h"
#include "pyode/core/method.h"
#include "pyode/core/norms.h"
#include "pyode/core/sparse_rows.h"

namespace pyode::core {

enum class Status : int32_t {
  kSuccess = 0, kMaxSteps = 1, kStepUnderflow = 2, kNonFinite = 3, kEvent = 4, kCancelled = 5
};

struct LoopOptions {
  double rtol = 0.0, atol = 0.0;
  ControllerParams controller;
  double first_step = 0.0;           // > 0: the first step; otherwise Hairer's rule
  int64_t max_num_steps = 2147483647;
  double step_size = 0.0;            // the grid spacing of fixed-grid methods
  double event_tol = 0.0;            // time tolerance of a located event (pyode uses atol)
  const int32_t* cancel = nullptr;   // non-zero stops every row at its next step (Ctrl-C); may be nullptr
  // A counter of interrupts (SIGINT) another party increments; every row stops at its next step once it
  // differs from interrupts_at, its value when the solve began. May be nullptr.
  const uint64_t* interrupts = nullptr;
  uint64_t interrupts_at = 0;
  // step_t / jump_t of pyode's adaptive loop, in solver time, sorted ascending: steps land on every stop
  // (stops = step_t ∪ jump_t); f is discontinuous at a jump, so stages there see only its left piece and
  // the next step starts from its right piece (evaluated one ulp after it).
  const double* stops = nullptr;
  int64_t num_stops = 0;
  const double* jumps = nullptr;
  int64_t num_jumps = 0;
};

inline bool cancelled(const LoopOptions& o) {
  return (o.cancel != nullptr && __atomic_load_n(o.cancel, __ATOMIC_RELAXED) != 0) ||
         (o.interrupts != nullptr && __atomic_load_n(o.interrupts, __ATOMIC_RELAXED) != o.interrupts_at);
}

struct RowStats {
  Status status = Status::kSuccess;
  double t_reached = NAN;  // solver time (the caller flips the sign back)
  double event_t = NAN;    // solver time of the event, NaN when none
  int64_t n_accepted = 0, n_rejected = 0, n_feval = 0;
  int64_t n_unconverged = 0;  // Adams: steps whose corrector did not converge
};

// Where one row writes: output k at ys + k * stride (n values of T each); the state at an event at y_event.
template <class T>
struct RowOutputOf {
  T* ys = nullptr;
  int64_t stride = 0;
  T* y_event = nullptr;  // may be nullptr
};
using RowOutput = RowOutputOf<double>;

struct NoEvent {
  static constexpr bool active = false;
  template <class T>
  double value(double, const T*) const { return 1.0; }
};

// Scratch of one row; a thread reuses one for all its rows. The implicit kinds add the Jacobian J, the LU
// factors of their matrix, the Rosenbrock increments U (s x n) and Newton's vectors; method="auto" (an explicit
// method with a stiff partner) both methods' buffers, and the Jacobian check's Jx and power-iteration vectors.
// An allocator whose blocks start on a cache line and fill whole lines. Ensemble threads each own a Workspace;
// with plain vectors, small buffers of two workspaces (n = 3: 24-192 bytes each) shared cache lines, and two
// threads spent 2.5x the CPU time of one on the same trajectories (bench/native_lorenz.py --scaling).
//
// A batch of rows that one thread runs (core/batched_rows.h) packs its workspaces into an Arena instead: there no
// other thread shares the lines, a row's small buffers then share a few lines, and the batch allocates a few
// large blocks instead of a dozen small ones per row. Blocks are freed with the arena.
class Arena {
 public:
  void* take(std::size_t bytes) {
    bytes = (bytes + kAlign - 1) / kAlign * kAlign;
    if (blocks_.empty() || used_ + bytes > size_) {
      size_ = std::max<std::size_t>(bytes, kBlockBytes);
      blocks_.emplace_back(new std::byte[size_]);  // aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__ (>= 16)
      used_ = 0;
    }
    void* p = blocks_.back().get() + used_;
    used_ += bytes;
    return p;
  }

 private:
  static constexpr std::size_t kAlign = 16, kBlockBytes = std::size_t(1) << 16;
  std::vector<std::unique_ptr<std::byte[]>> blocks_;
  std::size_t used_ = 0, size_ = 0;
};

template <class T>
struct LineAllocator {
  using value_type = T;
  using propagate_on_container_move_assignment = std::true_type;  // `v = LineVector<T>(alloc)` adopts alloc
  static constexpr std::size_t kLine = 64;
  Arena* arena = nullptr;  // nullptr: whole cache lines from the heap
  LineAllocator() = default;
  explicit LineAllocator(Arena* a) noexcept : arena(a) {}
  template <class U>
  LineAllocator(const LineAllocator<U>& other) noexcept : arena(other.arena) {}  // NOLINT: rebinding
  T* allocate(std::size_t count) {
    if (arena != nullptr) return static_cast<T*>(arena->take(count * sizeof(T)));
    const std::size_t bytes = (count * sizeof(T) + kLine - 1) / kLine * kLine;
    return static_cast<T*>(::operator new(bytes, std::align_val_t(kLine)));
  }
  void deallocate(T* ptr, std::size_t) noexcept {
    if (arena == nullptr) ::operator delete(ptr, std::align_val_t(kLine));
  }
  template <class U>
  bool operator==(const LineAllocator<U>& other) const noexcept { return arena == other.arena; }
  template <class U>
  bool operator!=(const LineAllocator<U>& other) const noexcept { return arena != other.arena; }
};
template <class T>
using LineVector = std::vector<T, LineAllocator<T>>;

// The state buffers are in T; the weights w and the implicit kinds' buffers (T = double only) in double.
template <class T>
struct WorkspaceOf {
  LineVector<T> K, K2, y, y1, y1b, stage, probe, event_y, H, dy, dy_old;
  LineVector<double> w, J, LU, U, ft, z, dz, res, fp, Jx, pv, pw;
  LineVector<int> piv;
  WorkspaceOf() = default;
  // Every buffer from `arena` (a batch of rows on one thread).
  explicit WorkspaceOf(Arena* arena) {
    for (auto* v : {&K, &K2, &y, &y1, &y1b, &stage, &probe, &event_y, &H, &dy, &dy_old})
      *v = LineVector<T>(LineAllocator<T>(arena));
    for (auto* v : {&w, &J, &LU, &U, &ft, &z, &dz, &res, &fp, &Jx, &pv, &pw})
      *v = LineVector<double>(LineAllocator<double>(arena));
    piv = LineVector<int>(LineAllocator<int>(arena));
  }
  // Rosenbrock: the non-zero a_ij (rows 0..s-1), c_ij (rows s..2s-1), m (row 2s) and m_err (row 2s+1).
  SparseRows coef;
  // A method with a tableau (explicit, Adams' starter): the non-zero a_ij (rows 0..s-1), b (row s), b_err (row s+1).
  SparseRows plan;
  // For method m, and with `partner` (method="auto": m explicit, partner its stiff method) for both. with_plan:
  // derive m's coefficient rows (plan); false where the row reads another workspace's (RowSolver::share_plan).
  void resize(const Method& m, int n, const Method* partner = nullptr, bool with_plan = true) {
    const Method& sm = partner != nullptr ? *partner : m;  // the one whose implicit buffers are needed
    coef.clear();
    plan.clear();
    if (with_plan && (m.kind == Kind::kExplicit || m.kind == Kind::kAdams) && m.a != nullptr) {
      for (int i = 0; i < m.s; ++i) plan.add(m.a + i * m.s, i);
      plan.add(m.b, m.s);
      if (m.b_err != nullptr) plan.add(m.b_err, m.s);
    }
    if (sm.kind == Kind::kRosenbrock) {
      for (int i = 0; i < sm.s; ++i) coef.add(sm.a + i * sm.s, i);
      for (int i = 0; i < sm.s; ++i) coef.add(sm.ros_c + i * sm.s, i);
      coef.add(sm.b, sm.s);
      coef.add(sm.b_err, sm.s);
    }
    const bool bdf = sm.kind == Kind::kBdf;
    const bool stiff = sm.kind == Kind::kRosenbrock || sm.kind == Kind::kEsdirk || bdf;
    const size_t nn = stiff ? static_cast<size_t>(n) * n : 0, nv = stiff ? static_cast<size_t>(n) : 0;
    J.assign(nn, 0.0); LU.assign(nn, 0.0); piv.assign(nv, 0);
    // Rosenbrock: its increments; BDF: the rescaling scratch of D
    U.assign(sm.kind == Kind::kRosenbrock ? static_cast<size_t>(sm.s) * n : bdf ? static_cast<size_t>(6) * n : 0, 0.0);
    ft.assign(nv, 0.0); z.assign(nv, 0.0); dz.assign(nv, 0.0); res.assign(nv, 0.0); fp.assign(nv, 0.0);
    Jx.assign(partner != nullptr ? nn : 0, 0.0);
    pv.assign(partner != nullptr ? nv : 0, 0.0); pw.assign(partner != nullptr ? nv : 0, 0.0);
    const size_t terms = static_cast<size_t>(std::max(m.s, sm.s)) + 1;  // s stages + f1
    K.assign(terms * n, 0.0);
    K2.assign(m.restep || sm.restep ? terms * n : 0, 0.0);
    y.assign(n, 0.0); y1.assign(n, 0.0); y1b.assign(n, 0.0); stage.assign(n, 0.0); probe.assign(n, 0.0);
    event_y.assign(n, 0.0);
    w.assign(terms, 0.0);
    const bool adams = m.kind == Kind::kAdams;  // the past derivatives, newest first (a ring), and the increments
    // BDF: its differences D, 8 rows (bdf.h, kBdfRows)
    H.assign(adams ? static_cast<size_t>(std::max(m.adams_history, 1)) * n : bdf ? static_cast<size_t>(8) * n : 0, 0.0);
    dy.assign(adams || m.kind == Kind::kAlf ? n : 0, 0.0);  // ALF: its v
    dy_old.assign(adams ? n : 0, 0.0);
  }
  // The memory the buffers hold (their capacity), in bytes.
  size_t bytes() const {
    size_t states = 0, doubles = 0;
    for (const auto* v : {&K, &K2, &y, &y1, &y1b, &stage, &probe, &event_y, &H, &dy, &dy_old})
      states += v->capacity();
    for (const auto* v : {&w, &J, &LU, &U, &ft, &z, &dz, &res, &fp, &Jx, &pv, &pw}) doubles += v->capacity();
    return states * sizeof(T) + doubles * sizeof(double) + piv.capacity() * sizeof(int);
  }
};
using Workspace = WorkspaceOf<double>;

// Whether rhs has a compiled Jacobian: `bool jacobian(t, y, J)` (false: none, use finite differences).
template <class R, class = void>
struct HasJacobian : std::false_type {};
template <class R>
struct HasJacobian<R, std::void_t<decltype(std::declval<R&>().jacobian(0.0, static_cast<const double*>(nullptr),
                                                                        static_cast<double*>(nullptr)))>>
    : std::true_type {};

// The Jacobian and Newton bookkeeping of the implicit steppers (newton.py: Jacobian reuse, NewtonState).
struct StiffState {
  bool have_jac = false, stale = true;
  double jac_t = NAN;        // the point the held J was computed at: (jac_t, jac_step)
  int64_t jac_step = -1;     // n_accepted at that time (the same point while a step is retried)
  int64_t jac_id = 0;        // changes whenever J does
  int64_t lu_jac = -1;       // the LU held: of (lu_jac, lu_h)
  double lu_h = NAN;
  bool lu_ok = false;
  double eta_old = 1.0, theta_max = 0.0;  // Newton's rate memory (Hairer & Wanner IV.8)
};

// The BDF kind's state between steps (bdf.h; bdf.py's _History): time, step size, order, equal steps so far,
// whether an LU of I - cJ is held, whether J was refreshed during the current step, Newton's tolerance.
struct BdfState {
  double t = 0.0, h = 0.0;
  int order = 1, n_equal = 0;
  bool lu_held = false, fresh_jac = false, non_finite = false;
  double newton_tol = 0.03;
};

template <class Rhs, class T = double>
class RowSolver {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, float>, "the state is float or double");
  // The stiff kinds' LU, Newton and Jacobian work in double: they run only with double states (the float
  // entry point, pyode_solve_f32, refuses them before a row starts).
  static constexpr bool kStiff = std::is_same_v<T, double>;

 public:
  // stiff: method="auto" (m explicit, stiff its partner, ws resized for both), else nullptr.
  RowSolver(const Method& m, const LoopOptions& o, Rhs& rhs, WorkspaceOf<T>& ws, int n,
            const Method* stiff = nullptr)
      : m_(&m), o_(o), rhs_(rhs), ws_(ws), n_(n), plan_(&ws.plan), ctrl_(o.controller) {
    if (stiff != nullptr) auto_ = AutoSwitch{&m, stiff};
  }

  // Integrates from y0 at t_out[0] through the increasing solver times t_out (num_times >= 1).
  template <class Event>
  RowStats run(const T* y0, const double* t_out, int64_t num_times, RowOutputOf<T> out, Event& ev) {
    out_ = out;
    std::memcpy(out.ys, y0, sizeof(T) * n_);
    written_ = 1;
    stats_.t_reached = t_out[0];
    if (num_times > 1) {
      if (m_->kind == Kind::kBdf) run_bdf(y0, t_out, num_times);
      else if (m_->adaptive()) run_adaptive(y0, t_out, num_times, ev);
      else if (m_->kind == Kind::kAlf) run_alf(y0, t_out, num_times);
      else run_fixed(y0, t_out, num_times);
    }
    return finish_outputs(num_times);
  }

  // The row as resumable steps, for a caller that evaluates f for many rows at once (per-sample mode,
  // core/batched_rows.h): the same steps as run() without an event, for an adaptive explicit method whose dense
  // output is its interpolant (not restep), with LoopOptions::first_step > 0 and no stops or jumps. start()
  // takes y0 at t_out[0] and f0 = f(t_out[0], y0); then, while pending() names a point (solver time, n values),
  // the caller writes f there into resume()'s argument; once pending() is false, result() gives the stats (the
  // outputs the row never reached are NaN).
  // slot: where the row writes its stage inputs (n values, the caller's batch buffer; nullptr: its own), so that
  // pending() names it and the caller need not copy (the last stage of an FSAL method is y1, the row's own).
  void start(const T* y0, const T* f0, const double* t_out, int64_t num_times, RowOutputOf<T> out, T* slot) {
    slot_ = slot != nullptr ? slot : ws_.stage.data();
    out_ = out;
    std::memcpy(out.ys, y0, sizeof(T) * n_);
    written_ = 1;
    t_out_ = t_out;
    num_times_ = num_times;
    t_ = t_out[0];
    t_end_ = t_out[num_times - 1];
    stats_.t_reached = t_;
    std::memcpy(ws_.y.data(), y0, sizeof(T) * n_);
    std::memcpy(ws_.K.data(), f0, sizeof(T) * n_);
    h_ = o_.first_step;
    waiting_ = bound_first_step(t_, &h_) && begin_step();
  }
  // The point the row waits for f at: its solver time and state (n values); false once the row is done.
  bool pending(double* t, const T** y) const {
    if (!waiting_) return false;
    *t = stage_t_;
    *y = stage_y_;
    return true;
  }
  // f at the pending point (n values): the row moves on to the next point it needs f at.
  void resume(const T* f) {
    ++stats_.n_feval;
    copy(f, k(ws_.K.data(), stage_));
    if (stage_ == m_->s) waiting_ = end_accepted();  // f1 of a method without FSAL
    else waiting_ = ++stage_ < m_->s ? next_stage() : end_step();
  }
  RowStats result() { return finish_outputs(num_times_); }
  // Reads the method's coefficient rows from `plan` (the same method's, e.g. another row's of a batch) instead of
  // its workspace's: rows of a batch share one copy.
  void share_plan(const SparseRows* plan) { plan_ = plan; }
  // Whether the row stopped short of its end (a failure status; an event is not one here).
  bool failed() const { return stats_.status != Status::kSuccess; }

 private:
  const Method* m_;  // the method of the next step: fixed, or with auto_ the one the switch chose
  const LoopOptions& o_;
  Rhs& rhs_;
  WorkspaceOf<T>& ws_;
  int n_;
  // The resumable row's position (start/pending/resume): the step, the stage it waits for (s: f1), the outputs.
  // Next to the fields above: a batch of rows touches these on every evaluation.
  int stage_ = 0;
  bool waiting_ = false;
  const T* stage_y_ = nullptr;
  T* slot_ = nullptr;
  const SparseRows* plan_;  // the method's coefficient rows: the workspace's, or one shared by a batch of rows
  double t_ = 0.0, h_ = 0.0, h_step_ = 0.0, t_end_ = 0.0, stage_t_ = 0.0, ratio_ = 0.0, t1_ = 0.0;
  const double* t_out_ = nullptr;
  int64_t num_times_ = 0;
  RowStats stats_;
  RowOutputOf<T> out_;
  int64_t written_ = 0;
  PIDController ctrl_;
  double sign0_ = 1.0;
  StiffState st_;
  AutoSwitch auto_;
  int adams_start_ = 0, adams_len_ = 0;  // Adams: the ring of past derivatives in ws_.H (newest at adams_start_)
  double adams_h_ = NAN;                 // Adams: the previous step's size
  double adams_t1_ = NAN;                // Adams: the grid point the step ends on (its corrector's time)
  int64_t non_finite_ = 0, stalled_ = 0;  // the stall rule's counters (stalled)
  BdfState bdf_;                          // the BDF kind's state (bdf.h)

  // Implicit steppers (implicit_steps.h).
  void jacobian_into(double t, const double* y, const double* f, double* J);
  void jacobian_at(double t0, const double* y0, const double* f0);
  double explicit_stiffness(double h);
  bool adams_step(const double* y0, double h, const double* f0, double* y1);
  bool adams_correct(const double* y0, double h, int order);
  void adams_sum(const double* w, double h, int order, double* out);
  T* adams_past(int j) {  // the j-th newest past derivative (Adams)
    return ws_.H.data() + static_cast<int64_t>((adams_start_ + j) % std::max(m_->adams_history, 1)) * n_;
  }
  void auto_after_accept(double t_end_of_step, const T* y1, double h, double explicit_rho);
  bool factor(double h);
  double attempt_rosenbrock(double t0, const double* y0, double h, double* K, double* y1, double t_end);
  template <int N>
  void rosenbrock_stages(double t0, const double* y0, double h, const double* f0, double t_end);
  template <int N>
  double rosenbrock_finish(const double* y0, double* y1);
  double attempt_esdirk(double t0, const double* y0, double h, double* K, double* y1, double t_end);
  bool solve_esdirk(double t0, const double* y0, double h, double* K, double t_end);
  bool newton_stage(double t_i, const double* base, double hg, const double* y0, double* y_stage);

  // The resumable row's next step from (t_, ws_.y), waiting for its stage 1; false when the row is done.
  bool begin_step() {
    if (!(t_ < t_end_ && written_ < num_times_)) return false;
    h_step_ = clamp(t_, h_, t_end_);
    stage_ = 1;
    return next_stage();
  }
  bool next_stage() {
    stage_y_ = stage_input(ws_.y.data(), h_step_, ws_.K.data(), ws_.y1.data(), stage_, slot_);
    stage_t_ = stage_time(t_, h_step_, t_ + h_step_, stage_);
    return true;
  }
  // After the last stage: accept or reject (run_adaptive's rules); then the point the row waits for next (f1 of
  // an accepted step without FSAL, or the next step's stage 1), or false when the row is done.
  bool end_step() {
    ratio_ = explicit_finish(ws_.y.data(), h_step_, ws_.K.data(), ws_.y1.data());
    const bool accepted = ratio_ <= 1.0;
    h_ = ctrl_.next_step(h_step_, ratio_, accepted);
    if (!accepted) return !reject(t_, h_, h_step_, ratio_) && begin_step();
    t1_ = py_min(t_end_, t_ + h_step_);
    if (accept_stalls(t1_)) return false;
    if (m_->fsal) return end_accepted();
    stage_ = m_->s;  // f1 = f(t + h, y1): the interpolant's term s and the next step's K[0]
    stage_y_ = ws_.y1.data();
    stage_t_ = t_ + h_step_;
    return true;
  }
  bool end_accepted() {
    return !advance(t_, h_step_, t1_, h_, ratio_, false, t_out_, num_times_, t_end_) && begin_step();
  }

  // NaN into the outputs the row never reached; its stats.
  RowStats finish_outputs(int64_t num_times) {
    for (int64_t k = written_; k < num_times; ++k)
      for (int i = 0; i < n_; ++i) out_.ys[k * out_.stride + i] = static_cast<T>(NAN);
    return stats_;
  }

  void eval(double t, const T* y, T* dy) {
    ++stats_.n_feval;
    rhs_(t, y, dy);
  }
  T* k(T* K, int j) const { return K + static_cast<int64_t>(j) * n_; }
  // dst = src (n values) every step: a loop, not a call to memcpy, for the small states of a fast step
  void copy(const T* src, T* dst) const {
    const int n = n_;  // a local: a store through dst could alias n_
    for (int i = 0; i < n; ++i) dst[i] = src[i];
  }

  // One step of size h from (t0, y0) with K[0] = f(t0, y0) already there: stages into K, y1 into `y1`.
  // Returns the error ratio (0 for fixed-grid methods).
  double attempt(double t0, const T* y0, double h, T* K, T* y1, bool ends_at_jump = false) {
    const double t_end = ends_at_jump ? std::nextafter(t0 + h, -INFINITY) : t0 + h;
    if constexpr (kStiff) {
      if (m_->kind == Kind::kRosenbrock) return attempt_rosenbrock(t0, y0, h, K, y1, t_end);
      if (m_->kind == Kind::kEsdirk) return attempt_esdirk(t0, y0, h, K, y1, t_end);
      if (m_->kind == Kind::kAdams && adams_step(y0, h, K, y1)) return 0.0;  // else the starter's step
    }
    for (int i = 1; i < m_->s; ++i) {
      const T* in = stage_input(y0, h, K, y1, i, ws_.stage.data());
      eval(stage_time(t0, h, t_end, i), in, k(K, i));
    }
    return explicit_finish(y0, h, K, y1);
  }

  // The explicit step's pieces, shared by attempt and the resumable rows (start/pending/resume).
  // Stage i's time; t_end: the step's end (one ulp short of it when the step ends on a jump).
  double stage_time(double t0, double h, double t_end, int i) const {
    return m_->c[i] == 1.0 ? t_end : t0 + m_->c[i] * h;
  }
  // Stage i's input y0 + Σ_{j<i} (h a_ij) K_j, stages 0..i-1 in K: into y1 for the last stage of an FSAL method
  // (its input is y1), else into `scratch` (n values). Returns where it went.
  T* stage_input(const T* y0, double h, const T* K, T* y1, int i, T* scratch) {
    const int s = m_->s;
    T* in = (m_->fsal && i == s - 1) ? y1 : scratch;
    combine_row(y0, h, K, i, in);
    return in;
  }
  // out = base + Σ_j (h w_j) K_j over the non-zero weights w of the method's coefficient row `row` (plan: a_i, b,
  // b_err), each h w_j rounded to T: combine's arithmetic, the zero scan done once per solve.
  void combine_row(const T* base, double h, const T* K, int row, T* out) {
    const SparseRows& plan = *plan_;
    const int nz = plan.size(row);
    const double* weight = plan.weight(row);
    T wt[kMaxTerms];
    for (int q = 0; q < nz; ++q) wt[q] = static_cast<T>(h * weight[q]);
    combine_sparse(base, K, plan.index(row), wt, nz, n_, out);
  }

  // After the stages: y1 (unless FSAL) and the error ratio (0 for fixed-grid methods).
  double explicit_finish(const T* y0, double h, const T* K, T* y1) {
    const int s = m_->s;
    if (!m_->fsal) combine_row(y0, h, K, s, y1);
    if (!m_->adaptive()) return 0.0;
    // err = Σ_j (h b_err_j) K_j per element (from 0, increasing j, zero weights skipped as in combine).
    T* err = ws_.probe.data();
    combine_row(nullptr, h, K, s + 1, err);
    return error_ratio(err, y0, y1, n_, o_.atol, o_.rtol);
  }

  // The step's interpolant at θ into `dst` (the step: t0, y0, size h, stages in ws_.K, f1 in K[s]).
  void dense(double t0, const T* y0, double h, double theta, T* dst) {
    if (m_->restep) {  // a fresh step of size θh from the step's start (the method's own order)
      std::memcpy(ws_.K2.data(), ws_.K.data(), sizeof(T) * n_);
      T* y1 = m_->fsal ? dst : ws_.y1b.data();
      attempt(t0, y0, theta * h, ws_.K2.data(), y1);
      if (y1 != dst) std::memcpy(dst, y1, sizeof(T) * n_);
      return;
    }
    if constexpr (kStiff) {
      if (m_->kind == Kind::kRosenbrock) return dense_rosenbrock(y0, h, theta, dst);
      if (m_->kind == Kind::kAdams) {  // linear between the step's ends (fixed_grid.py, _LinearSteps)
        const double* y1 = ws_.y1.data();
        for (int i = 0; i < n_; ++i) dst[i] = (y0[i] + theta * y1[i]) + -theta * y0[i];
        return;
      }
    }
    dense_weights(*m_, theta, h, ws_.w.data());
    combine(y0, ws_.K.data(), ws_.w.data(), m_->num_terms, n_, dst);
  }

  // Rosenbrock's dense output: its own interpolant (weights on the increments U), or the cubic Hermite.
  void dense_rosenbrock(const double* y0, double h, double theta, double* dst) {
    if (m_->interp_degree > 0) {  // the method's own: weights on the increments
      dense_weights(*m_, theta, 1.0, ws_.w.data());
      combine(y0, ws_.U.data(), ws_.w.data(), m_->s, n_, dst);
      return;
    }
    // cubic Hermite through (y0, f0 = K_0) and (y1, f1 = K_s)
    const double th = theta, a = 3 * th * th - 2 * th * th * th;
    const double b = h * (th * th * th - 2 * th * th + th), c = h * (th * th * th - th * th);
    const double *y1 = ws_.y1.data(), *f0 = ws_.K.data(), *f1 = k(ws_.K.data(), m_->s);
    for (int i = 0; i < n_; ++i) dst[i] = ((y0[i] + a * (y1[i] - y0[i])) + b * f0[i]) + c * f1[i];
  }

  // Writes every output time in (t0, t1] the step owes; an output exactly at t1 is y1 itself.
  void write_outputs(double t0, const T* y0, double h, double t1, const T* y1, const double* t_out,
                     int64_t num_times, bool inclusive) {
    while (written_ < num_times && (inclusive ? t_out[written_] <= t1 : t_out[written_] < t1)) {
      T* dst = out_.ys + written_ * out_.stride;
      if (t_out[written_] == t1) std::memcpy(dst, y1, sizeof(T) * n_);
      else dense(t0, y0, h, (t_out[written_] - t0) / h, dst);
      ++written_;
    }
  }

  bool is_jump(double t) const { return std::binary_search(o_.jumps, o_.jumps + o_.num_jumps, t); }

  // h shortened to land on the next stop (step_t/jump_t) or the end time, exactly (adaptive.py, _clamp):
  // t + (target - t) can round one ulp short of the target, and the step after it would be one ulp long. A
  // step that would leave less than the resolution of t before the target stretches to it.
  double clamp(double t, double h, double t_end) const {
    double target = t_end;
    const double* next = std::upper_bound(o_.stops, o_.stops + o_.num_stops, t);
    if (next != o_.stops + o_.num_stops && *next < target) target = *next;
    if (h < target - t - step_resolution(target)) return h;
    h = target - t;
    while (t + h < target) h = std::nextafter(h, INFINITY);  // at most a couple of ulps
    return h;
  }

  bool fail(Status status, double t) {
    stats_.status = status;
    stats_.t_reached = t;
    return true;
  }

  // After each attempted step: too many steps, or a step size below the resolution of t.
  bool check_progress(double t, double h, double ratio) {
    stats_.t_reached = t;
    if (cancelled(o_)) return fail(Status::kCancelled, t);
    if (stats_.n_accepted + stats_.n_rejected >= o_.max_num_steps) return fail(Status::kMaxSteps, t);
    if (!(h > step_resolution(t)))  // written so that a NaN h stops here too
      return fail(std::isfinite(ratio) ? Status::kStepUnderflow : Status::kNonFinite, t);
    return false;
  }

  // min_step and max_step bound every step, the first included (a NaN h stays NaN). False (the row failed) when
  // the first step is not a positive finite number.
  bool bound_first_step(double t, double* h) {
    if (!std::isnan(*h)) *h = py_min(py_max(*h, o_.controller.min_step), o_.controller.max_step);
    if (std::isfinite(*h) && *h > 0.0) return true;
    fail(Status::kNonFinite, t);
    return false;
  }

  // An accepted step ending at t1 is counted; true when the row stops because its state stalls (stalled).
  bool accept_stalls(double t1) {
    ++stats_.n_accepted;
    return stalled(ws_.y.data(), ws_.y1.data()) && fail(Status::kNonFinite, t1);
  }

  // A rejected step of size h_step from t (error ratio `ratio`, next size h). True when the row stops: too many
  // steps, a step below the resolution of t, or a step the controller cannot shrink.
  bool reject(double t, double h, double h_step, double ratio) {
    ++stats_.n_rejected;
    if (!std::isfinite(ratio)) ++non_finite_;
    if (check_progress(t, h, ratio)) return true;
    if (h >= h_step) return fail(Status::kStepUnderflow, t);  // the controller cannot shrink it
    return false;
  }

  // An accepted step of size h_step from (t, ws_.y) to (t1, ws_.y1) (f1 in K[s] unless FSAL): its outputs, the next
  // step's K[0], then the row moves on to t1. True when the row stops (at the end, the next h is never taken).
  bool advance(double& t, double h_step, double t1, double h, double ratio, bool at_jump, const double* t_out,
               int64_t num_times, double t_end) {
    T *K = ws_.K.data(), *y1 = ws_.y1.data();
    write_outputs(t, ws_.y.data(), h_step, t1, y1, t_out, num_times, true);
    if (at_jump) eval(std::nextafter(t1, INFINITY), y1, K);  // the next step starts on the right piece
    else copy(k(K, m_->fsal ? m_->s - 1 : m_->s), K);
    copy(y1, ws_.y.data());
    t = t1;
    stats_.t_reached = t;
    return t < t_end && check_progress(t, h, ratio);
  }

  // pyode's StallWatch (adaptive.py): at the edge of T's range every step that changes the state overflows (a
  // NaN/inf error ratio, rejected) and the steps that stay finite no longer change it, so t would creep on for
  // ever. After a NaN/inf rejection, kStallLimit accepted steps that leave y bitwise unchanged (== per element,
  // as torch.equal) stop the row as non-finite. Costs nothing until an error ratio is NaN/inf.
  static constexpr int64_t kStallLimit = 4;
  bool stalled(const T* y, const T* y1) {
    if (non_finite_ == 0) return false;
    for (int i = 0; i < n_; ++i)
      if (!(y[i] == y1[i])) {
        non_finite_ = stalled_ = 0;
        return false;
      }
    return ++stalled_ >= kStallLimit;
  }

  template <class Event>
  bool event_value(Event& ev, double t, const T* y, double* v) {
    *v = ev.value(t, y);
    if (std::isnan(*v)) return !fail(Status::kNonFinite, t);  // a NaN has no sign: stop the row
    return true;
  }

  template <class Event>
  void run_adaptive(const T* y0_in, const double* t_out, int64_t num_times, Event& ev);
  template <class Event>
  bool locate_event(Event& ev, double t0, double h, const double* t_out, int64_t num_times);
  void run_fixed(const T* y0_in, const double* t_out, int64_t num_times);
  void run_alf(const T* y0_in, const double* t_out, int64_t num_times);
  // The BDF kind (bdf.h).
  void run_bdf(const T* y0_in, const double* t_out, int64_t num_times);
  bool bdf_step(double t_end);
  void bdf_accept(double t_new, double safety, double error);
  void bdf_rescale(double factor, bool keep_lu);
  int bdf_corrector(double t_new);
  int bdf_newton(double t_new, double c);
  void bdf_dense(double t, double* dst);
};

template <class Rhs, class T>
template <class Event>
void RowSolver<Rhs, T>::run_adaptive(const T* y0_in, const double* t_out, int64_t num_times, Event& ev) {
  T* K = ws_.K.data();
  T *y = ws_.y.data(), *y1 = ws_.y1.data();
  std::memcpy(y, y0_in, sizeof(T) * n_);
  double t = t_out[0];
  const double t_end = t_out[num_times - 1];
  eval(is_jump(t) ? std::nextafter(t, INFINITY) : t, y, K);  // a jump at t0: its right piece
  double h = o_.first_step;
  if (!(h > 0.0)) {
    auto f = [this](double tt, const T* yy, T* dy) { eval(tt, yy, dy); };
    h = initial_step(f, t, y, K, n_, m_->order, o_.rtol, o_.atol, ws_.probe.data(), k(K, m_->s));
  }
  if (!bound_first_step(t, &h)) return;
  if constexpr (Event::active) {
    double v;
    if (!event_value(ev, t, y, &v)) return;
    sign0_ = std::copysign(1.0, v);
  }
  while (t < t_end && written_ < num_times) {
    const double h_step = clamp(t, h, t_end);
    const double ratio = attempt(t, y, h_step, K, y1, is_jump(t + h_step));
    const bool accepted = ratio <= 1.0;
    h = ctrl_.next_step(h_step, ratio, accepted);
    if (!accepted) {
      if (reject(t, h, h_step, ratio)) return;
      if (auto_.active()) ++auto_.retries;
      continue;
    }
    // auto: the explicit step's stiffness estimate, from its stages before K[0] is overwritten below
    const double rho = auto_.active() && m_ == auto_.explicit_method ? explicit_stiffness(h_step) : 0.0;
    const double t_step = t;
    const double t1 = py_min(t_end, t + h_step);
    if (accept_stalls(t1)) return;
    const bool at_jump = is_jump(t1);
    if (!m_->fsal && !at_jump) eval(t + h_step, y1, k(K, m_->s));  // f1: the interpolant's term s, the next f0
    if (!m_->fsal && at_jump && m_->needs_f1()) eval(std::nextafter(t1, -INFINITY), y1, k(K, m_->s));  // left piece
    if constexpr (Event::active) {
      double v;
      if (!event_value(ev, t + h_step, y1, &v)) return;  // pyode evaluates it at t0 + h
      if (v == 0.0 || std::copysign(1.0, v) != sign0_) {
        locate_event(ev, t, h_step, t_out, num_times);
        return;
      }
    }
    if (advance(t, h_step, t1, h, ratio, at_jump, t_out, num_times, t_end)) return;
    // auto: the switch sees the step before the next one (not after the last, as implicit_auto.py)
    if (auto_.active() && t < t_end && written_ < num_times) auto_after_accept(t_step + h_step, y, h_step, rho);
  }
}

// Bisects the step's interpolant for the sign change (pyode/_solvers/events.py), writes the outputs
// before the event and the state at it.
template <class Rhs, class T>
template <class Event>
bool RowSolver<Rhs, T>::locate_event(Event& ev, double t0, double h, const double* t_out, int64_t num_times) {
  const T* y = ws_.y.data();
  T* tmp = ws_.event_y.data();
  double lo = 0.0, hi = 1.0;
  const double tol = o_.event_tol > 0.0 ? o_.event_tol : 0.0;
  const int64_t iters = tol <= 0.0 ? 0 : static_cast<int64_t>(std::ceil(std::log2(py_max(h / tol, 1.0))));
  for (int64_t it = 0; it < (iters > 1 ? iters : 1) + 1; ++it) {
    const double mid = 0.5 * (lo + hi);
    dense(t0, y, h, mid, tmp);
    double v;
    if (!event_value(ev, t0 + mid * h, tmp, &v)) return false;
    if (v != 0.0 && std::copysign(1.0, v) == sign0_) lo = mid;
    else hi = mid;
    if ((hi - lo) * h <= tol) break;
  }
  const double t_event = t0 + hi * h;
  write_outputs(t0, y, h, t_event, ws_.y1.data(), t_out, num_times, false);  // outputs strictly before the event
  if (out_.y_event != nullptr) dense(t0, y, h, hi, out_.y_event);
  stats_.status = Status::kEvent;
  stats_.t_reached = stats_.event_t = t_event;
  return true;
}

// torchdiffeq's grid (pyode/_solvers/fixed_grid.py, make_grid): t0 + k * step_size while below the end,
// then the end; one step per interval, outputs by the method's interpolant.
template <class Rhs, class T>
void RowSolver<Rhs, T>::run_fixed(const T* y0_in, const double* t_out, int64_t num_times) {
  T* K = ws_.K.data();
  T *y = ws_.y.data(), *y1 = ws_.y1.data();
  std::memcpy(y, y0_in, sizeof(T) * n_);
  const double t0 = t_out[0], t_end = t_out[num_times - 1];
  const double span = std::ceil((t_end - t0) / o_.step_size - 1e-9);
  const int64_t n_steps = span > 1.0 ? static_cast<int64_t>(span) : 1;
  const bool needs_f1 = m_->needs_f1();
  for (int64_t q = 0; q < n_steps; ++q) {
    const double g0 = t0 + q * o_.step_size;
    const double g1 = q + 1 < n_steps ? t0 + (q + 1) * o_.step_size : t_end;
    const double h = g1 - g0;
    if (cancelled(o_)) { fail(Status::kCancelled, g0); return; }
    adams_t1_ = g1;
    eval(g0, y, K);
    if (attempt(g0, y, h, K, y1) > 1.0) { fail(Status::kNonFinite, g0); return; }  // an implicit stage failed
    ++stats_.n_accepted;
    stats_.t_reached = g1;
    for (int i = 0; i < n_; ++i)
      if (!std::isfinite(y1[i])) { fail(Status::kNonFinite, g1); return; }
    if (needs_f1 && written_ < num_times && t_out[written_] < g1) eval(g0 + h, y1, k(K, m_->s));
    write_outputs(g0, y, h, g1, y1, t_out, num_times, true);
    std::memcpy(y, y1, sizeof(T) * n_);
  }
}

// ALF (pyode/_solvers/alf.py, AlfLoop.solve): v = f(t0, y0), then each output interval in ceil(Δt / step_size)
// equal steps (one without a step_size): k = y + h/2 v, u = f(t + h/2, k), v = 2u - v, y = k + h/2 v. Outputs
// are the interval ends; the final v goes to out_.y_event (the reversible gradient's reconstruction starts there).
template <class Rhs, class T>
void RowSolver<Rhs, T>::run_alf(const T* y0_in, const double* t_out, int64_t num_times) {
  T *y = ws_.y.data(), *v = ws_.dy.data(), *k = ws_.stage.data(), *u = ws_.probe.data();
  std::memcpy(y, y0_in, sizeof(T) * n_);
  eval(t_out[0], y, v);
  for (int64_t i = 1; i < num_times; ++i) {
    const double t0 = t_out[i - 1], span = t_out[i] - t0;
    const double count = o_.step_size > 0.0 ? std::ceil(span / o_.step_size - 1e-9) : 1.0;
    const int64_t steps = count > 1.0 ? static_cast<int64_t>(count) : 1;
    const double h = span / static_cast<double>(steps), half = 0.5 * h;
    for (int64_t q = 0; q < steps; ++q) {
      const double t = t0 + static_cast<double>(q) * h;
      if (cancelled(o_)) { fail(Status::kCancelled, t); return; }
      for (int e = 0; e < n_; ++e) k[e] = y[e] + half * v[e];
      eval(t + half, k, u);
      for (int e = 0; e < n_; ++e) {
        v[e] = 2.0 * u[e] + -1.0 * v[e];
        y[e] = k[e] + half * v[e];
      }
      ++stats_.n_accepted;
    }
    const double t1 = t0 + static_cast<double>(steps) * h;
    stats_.t_reached = t1;
    for (int e = 0; e < n_; ++e)
      if (!std::isfinite(y[e])) { fail(Status::kNonFinite, t1); return; }
    std::memcpy(out_.ys + i * out_.stride, y, sizeof(T) * n_);
    written_ = i + 1;
  }
  if (out_.y_event != nullptr) std::memcpy(out_.y_event, v, sizeof(T) * n_);
}

}  // namespace pyode::core

#include "pyode/core/implicit_steps.h"
#include "pyode/core/bdf.h"
