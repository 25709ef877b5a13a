// PerSampleWorkspace: adaptive Runge-Kutta with a step size per batch row (torchode's model), fused.
//
// The state is (rows, width): each row has its own time t_r, step size h_r, accept/reject decision and
// step counts. All rows advance in lock-step rounds: each round calls func once per stage on the whole
// batch (rows that have finished take steps of size 0). Per round the driver (the binding's run_rounds, which
// calls func back) makes one call per stage (stage input of every row, plus the rows' stage times) and one
// finish call, which for every row
// measures the error, accepts or rejects, writes the dense outputs the row passed, moves the row on, and
// picks its next step size (the joint loop's PID controller, controller.h, with a ratio history per row). The
// joint loop's rules hold per row: a rejected step that cannot shrink, a step below the resolution of t, and a
// state stuck at the edge of its dtype's range (StallWatch in adaptive.py) end the solve. FSAL tableaux only (y1
// is the last stage input).
#pragma once
#include <cstdint>
#include <vector>

#include "pyode/common.h"
#include "pyode/controller.h"

namespace pyode {

// The explicit method: an FSAL tableau and its interpolant.
struct PerSampleMethod {
  int64_t num_stages;
  std::vector<double> a;     // (s, s) row-major
  std::vector<double> c, e;  // (s,) nodes and embedded-error weights
  std::vector<double> p;     // (powers, s) interpolant
};

struct PerSampleConfig {
  ControllerGains gains;  // h_new = clip(h * step_factor(gains, ...), min_step, max_step)
  double min_step, max_step;
  double atol, rtol;
  int64_t max_num_steps;
  int64_t stall_limit;    // accepted steps that leave a row unchanged after a NaN/inf rejection (StallWatch.LIMIT)
};

// What a round ended with. kind: 0 running or done, 1 a row exceeded max_num_steps, 2 a row's step size
// underflowed, 3 a row's error was NaN/inf and its step could not shrink any more, 4 a row's rejected step
// could not shrink (min_step), 5 a row's state stands still at the edge of its dtype's range (every step that
// would change it overflows). The codes of PerSampleLoop._raise_row_failure.
struct RoundStatus {
  int64_t active;      // rows still short of the end time
  int kind;
  int64_t row;         // the failing row (kind != 0)
  double t_row;        // its time
  double t_min;        // the smallest row time
};

class PerSampleWorkspace {
 public:
  // t_out: increasing output times (solver direction), t_out[0] the start. The class keeps the addresses of
  // the buffers it is given; its Python binding (bindings.cpp) holds their owners alongside.
  PerSampleWorkspace(PerSampleMethod method, std::vector<double> t_out, int64_t rows, int64_t width, DType dtype,
                     PerSampleConfig config);

  // y, f0: (rows, width) state and derivative, updated in place; out: (T, rows, width) dense outputs.
  void set_state(uintptr_t y, int64_t y_numel, uintptr_t f0, int64_t f0_numel, uintptr_t out, int64_t out_numel);
  void set_first_step(double h0);
  // Sets each active row's step (clamped to the end); returns the number of active rows.
  int64_t begin_round();
  // Writes sign * (t_r + c_i h_r) for every row into a (rows,) buffer of dtype t_dtype (0: float32, 1: float64).
  void stage_times(int64_t i, uintptr_t out, int64_t out_numel, int t_dtype, double sign) const;
  // Registers k_{i-1} = prev, then out_r = y_r + h_r sum_{j < i} a[i][j] k_j,r.
  void stage(int64_t i, uintptr_t out, int64_t out_numel, uintptr_t prev, int64_t prev_numel);
  // Registers k_{s-1} = last (f at y1), then finishes every row (see the file comment).
  RoundStatus finish(uintptr_t y1, int64_t y1_numel, uintptr_t last, int64_t last_numel);
  const std::vector<int64_t>& accepted() const { return accepted_; }
  const std::vector<int64_t>& rejected() const { return rejected_; }
  int64_t num_stages() const { return s_; }

 private:
  template <typename T>
  void stage_rows(int64_t i, T* out) const;
  template <typename T>
  double row_ratio(int64_t r, const T* y1);
  // term j's elements as T (for core::combine_terms)
  template <typename T>
  auto term_at() const {
    return [this](int j) { return static_cast<const T*>(terms_[j]); };
  }
  template <typename T>
  void write_outputs(int64_t r, double t_new);
  template <typename T>
  void commit_row(int64_t r, const T* y1, const T* last);
  template <typename T>
  void watch_stall(int64_t r, const T* y1);
  template <typename T>
  RoundStatus finish_rows(const T* y1, const T* last);
  double next_step(int64_t r, double h, double ratio, bool accept);
  void set_term(int64_t j, uintptr_t ptr, int64_t numel);

  static constexpr int64_t kMaxStages = 64;
  int64_t s_, rows_, width_, n_;
  DType dtype_;
  std::vector<double> a_, c_, e_, p_, t_out_;
  int64_t powers_;
  PerSampleConfig cfg_;
  void* y_ = nullptr;
  void* f0_ = nullptr;
  void* out_ = nullptr;
  std::vector<const void*> terms_;
  std::vector<double> t_, h_, h_step_, prev1_, prev2_;  // prev: each row's last two accepted error ratios
  std::vector<int64_t> next_out_, accepted_, rejected_, non_finite_, stalled_;
  std::vector<char> active_;
  std::vector<char> err_;  // one row's error terms (width values of the state's type)
};

}  // namespace pyode
