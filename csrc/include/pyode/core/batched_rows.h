// R rows of RowSolver whose right-hand side is evaluated for all rows at once: per-sample mode, where func takes
// the whole batch (rows, width) with a time per row. Each row is a RowSolver with its own t, h, controller state,
// statistics and workspace, driven through its resumable steps (RowSolver::start/pending/resume), so every row
// takes exactly the steps the one loop takes for it; only the calls of f are gathered across rows.
//
// The caller's loop: while gather(...) finds rows waiting, evaluate f on the gathered (rows, n) inputs at the
// gathered times, then scatter(f). A row that finished (or failed) keeps its last input in the gathered buffers,
// so f always sees valid states; its value there is ignored. For an FSAL method every attempted step costs every
// row s - 1 evaluations, so the rows stay in step: one gather serves the same stage of every running row. Without
// FSAL an accepted step costs one more (f1) than a rejected one, and a gather serves rows at different stages.
#pragma once

#include <cstdint>
#include <cstring>
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
  // m: an adaptive explicit method with an interpolant (not restep); o: the loop's options (o.first_step > 0, no stops or jumps); y0, f0:
  // (rows, n) states and f(t_out[0], y0); t_out: num_times >= 2 increasing solver times; out: (num_times, rows,
  // n). All buffers stay the caller's and must outlive the object.
  BatchedRows(const Method& m, const LoopOptions& o, int64_t rows, int n, const T* y0, const T* f0,
              const double* t_out, int64_t num_times, T* out)
      : rows_(rows), n_(n), m_(m), o_(o), ws_(static_cast<size_t>(rows)) {
    solvers_.reserve(static_cast<size_t>(rows));
    waiting_.assign(static_cast<size_t>(rows), 0);
    for (int64_t r = 0; r < rows; ++r) {
      ws_[r].resize(m, n);
      solvers_.emplace_back(m_, o_, rhs_, ws_[r], n);
      const int64_t off = r * static_cast<int64_t>(n);
      solvers_.back().start(y0 + off, f0 + off, t_out, num_times, RowOutputOf<T>{out + off, rows * n, nullptr});
      note_failure(r);
    }
  }

  // Writes every waiting row's point into t_stage[r] = sign * t (Time: float or double) and y_stage (rows, n);
  // returns the number of waiting rows (0: every row is done).
  template <class Time>
  int64_t gather(Time* t_stage, double sign, T* y_stage) {
    int64_t waiting = 0;
    for (int64_t r = 0; r < rows_; ++r) {
      double t;
      const T* y;
      waiting_[r] = solvers_[r].pending(&t, &y);
      if (!waiting_[r]) continue;
      ++waiting;
      t_stage[r] = static_cast<Time>(sign * t);
      std::memcpy(y_stage + r * n_, y, sizeof(T) * n_);
    }
    return waiting;
  }

  // f at the gathered points, (rows, n): every waiting row moves on.
  void scatter(const T* f) {
    for (int64_t r = 0; r < rows_; ++r) {
      if (!waiting_[r]) continue;
      solvers_[r].resume(f + r * n_);
      note_failure(r);
    }
  }
  // The first row (in row order) that failed so far, or -1 while none has.
  int64_t first_failed() const { return first_failed_; }

  // Row r's statistics (its outputs the row never reached become NaN); call once, after the last scatter.
  RowStats result(int64_t r) { return solvers_[r].result(); }
  int64_t rows() const { return rows_; }

 private:
  void note_failure(int64_t r) {
    if (solvers_[r].failed() && (first_failed_ < 0 || r < first_failed_)) first_failed_ = r;
  }

  int64_t rows_;
  int n_;
  Method m_;       // the rows keep its address
  LoopOptions o_;  // likewise
  int64_t first_failed_ = -1;
  GatheredRhs rhs_;
  std::vector<WorkspaceOf<T>> ws_;
  std::vector<Row> solvers_;
  std::vector<char> waiting_;
};

}  // namespace pyode::core
