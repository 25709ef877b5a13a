// R rows of RowSolver whose right-hand side is evaluated for all rows at once: per-sample mode, where func takes
// the whole batch (rows, width) with a time per row. Each row is a RowSolver with its own t, h, controller state,
// statistics and workspace, driven through its resumable steps (RowSolver::start/pending/resume), so every row
// takes exactly the steps the one loop takes for it; only the calls of f are gathered across rows.
//
// The caller's loop: gather(...) the rows' first points into the stage buffers; while rows wait, evaluate f on
// the (rows, n) stage inputs at the stage times and exchange(f, ...) it for their next points. Each row writes
// its stage inputs straight into its slot of the caller's buffer. A row that finished (or failed) keeps its last
// input there, so f always sees valid states; its value there is ignored. For an FSAL method every attempted step
// costs every row s - 1 evaluations, so the rows stay in step: one call serves the same stage of every running
// row. Without FSAL an accepted step costs one more (f1) than a rejected one, and a call serves rows at
// different stages.
#pragma once

#include <cstdint>
#include <vector>

#include "pyode/core/solve_loop.h"

namespace pyode::core {

template <class T>
class BatchedRows {
  // The rows never call their right-hand side themselves: it is gathered (resume() brings f in).
  struct GatheredRhs {
    void operator()(double, const T*, T*) const {}
  };
  using Row = RowSolver<GatheredRhs, T>;

 public:
  // m: an adaptive explicit method with an interpolant (not restep); o: the loop's options (o.first_step > 0, no
  // stops or jumps); y0, f0: (rows, n) states and f(t_out[0], y0); t_out: num_times >= 2 increasing solver times;
  // out: (num_times, rows, n); y_stage: (rows, n), the stage inputs f is evaluated at. All buffers stay the
  // caller's and must outlive the object.
  BatchedRows(const Method& m, const LoopOptions& o, int64_t rows, int n, const T* y0, const T* f0,
              const double* t_out, int64_t num_times, T* out, T* y_stage)
      : rows_(rows), n_(n), m_(m), o_(o), y_stage_(y_stage) {
    ws_.reserve(static_cast<size_t>(rows));  // no reallocation: the rows keep their workspace's address
    solvers_.reserve(static_cast<size_t>(rows));
    waiting_.assign(static_cast<size_t>(rows), 0);
    for (int64_t r = 0; r < rows; ++r) {
      ws_.emplace_back(&arena_);
      ws_[r].resize(m, n, nullptr, r == 0);  // one copy of the method's coefficient rows for the batch
      solvers_.emplace_back(m_, o_, rhs_, ws_[r], n);
      solvers_.back().share_plan(&ws_[0].plan);
      const int64_t off = r * static_cast<int64_t>(n);
      solvers_.back().start(y0 + off, f0 + off, t_out, num_times, RowOutputOf<T>{out + off, rows * n, nullptr},
                            y_stage + off);
      note_failure(r);
    }
  }

  // Every waiting row's point: its time into t_stage[r] = sign * t (Time: float or double), its input into
  // y_stage. Returns the number of waiting rows (0: every row is done). The first call; the next ones are
  // exchange().
  template <class Time>
  int64_t gather(Time* t_stage, double sign) {
    int64_t waiting = 0;
    for (int64_t r = 0; r < rows_; ++r) waiting += put(r, t_stage, sign);
    return waiting;
  }

  // f at the gathered points, (rows, n): every waiting row moves on and puts its next point as gather() does (one
  // pass over the rows: a row's state is touched once per evaluation). Returns the number of waiting rows. f may
  // be y_stage itself: each row reads its f before it writes its slot.
  template <class Time>
  int64_t exchange(const T* f, Time* t_stage, double sign) {
    int64_t waiting = 0;
    for (int64_t r = 0; r < rows_; ++r) {
      if (!waiting_[r]) continue;
      solvers_[r].resume(f + r * n_);
      if (put(r, t_stage, sign)) ++waiting;
      else note_failure(r);  // a row stops (done or failed) only here
    }
    return waiting;
  }

  // The first row (in row order) that failed so far, or -1 while none has.
  int64_t first_failed() const { return first_failed_; }
  // Row r's statistics (its outputs the row never reached become NaN); call once, after the last exchange.
  RowStats result(int64_t r) { return solvers_[r].result(); }

 private:
  // Row r's next point into slot r of the stage buffers (its input is usually there already); whether it waits.
  template <class Time>
  bool put(int64_t r, Time* t_stage, double sign) {
    double t = 0.0;
    const T* y = nullptr;
    waiting_[r] = solvers_[r].pending(&t, &y);
    if (!waiting_[r]) return false;
    t_stage[r] = static_cast<Time>(sign * t);
    T* slot = y_stage_ + r * n_;
    if (y != slot)
      for (int i = 0, n = n_; i < n; ++i) slot[i] = y[i];
    return true;
  }

  void note_failure(int64_t r) {
    if (solvers_[r].failed() && (first_failed_ < 0 || r < first_failed_)) first_failed_ = r;
  }

  int64_t rows_;
  int n_;
  Method m_;       // the rows keep its address
  LoopOptions o_;  // likewise
  T* y_stage_;
  int64_t first_failed_ = -1;
  GatheredRhs rhs_;
  Arena arena_;  // the rows' buffers, packed (declared before ws_: it outlives them)
  std::vector<WorkspaceOf<T>> ws_;
  std::vector<Row> solvers_;
  std::vector<char> waiting_;
};

}  // namespace pyode::core
