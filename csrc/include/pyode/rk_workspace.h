// RKWorkspace: the per-solve state of the fused Runge-Kutta step, so that each stage costs one call with
// a pointer and a step size instead of re-sending the tableau and every term's address.
//
// The tableau (a, b, e) and the state size n are fixed at construction. Terms k_j (stage derivatives)
// and the step's base y0 are registered by address once each (their sizes are checked then); stage()
// and finish() then run lincomb_cpu / rk_finish_cpu on them.
#pragma once
#include <cstdint>
#include <vector>

#include "pyode/common.h"

namespace pyode {

class RKWorkspace {
 public:
  RKWorkspace(int64_t num_stages, std::vector<double> a, std::vector<double> b, std::vector<double> e, int64_t n,
              int dtype);

  void set_base(uintptr_t ptr, int64_t numel);
  void set_term(int64_t j, uintptr_t ptr, int64_t numel);
  void set_segments(std::vector<int64_t> offsets);

  // out = base + h * sum_{j < i} a[i][j] k_j
  void stage(int64_t i, uintptr_t out, int64_t out_numel, double h) const;
  // y1 = base + h * sum_j b_j k_j (unless y1_given), err = h * sum_j e_j k_j; returns the RMS error ratio
  // and fills the per-segment norms (see segment_norms()).
  double finish(uintptr_t y1, int64_t y1_numel, double h, double atol, double rtol, bool y1_given);
  const std::vector<double>& segment_norms() const { return seg_norms_; }
  int64_t n() const { return n_; }

 private:
  void require_terms(int64_t count, const char* what) const;

  int64_t s_, n_;
  int dtype_;
  std::vector<double> a_, b_, e_;
  const void* base_ = nullptr;
  std::vector<const void*> terms_;
  std::vector<int64_t> offsets_;
  std::vector<double> seg_norms_;
  mutable std::vector<double> scratch_;
};

}  // namespace pyode
