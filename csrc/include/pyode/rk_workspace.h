// RKWorkspace: the per-solve state of the fused Runge-Kutta step, so that each stage costs one call with
// a pointer and a step size instead of re-sending the tableau and every term's address.
//
// The tableau (a, b, e) and the state size n are fixed at construction. Terms k_j (stage derivatives)
// and the step's base y0 are registered by address once each (their sizes are checked then); stage()
// and finish() then run lincomb_cpu / rk_finish_cpu on them. The class keeps addresses only: its Python
// binding (bindings.cpp, PinnedRKWorkspace) holds the owner of each registered buffer alongside.
#pragma once
#include <cstdint>
#include <vector>

#include "pyode/common.h"

namespace pyode {

class RKWorkspace {
 public:
  RKWorkspace(int64_t num_stages, std::vector<double> a, std::vector<double> b, std::vector<double> e, int64_t n,
              DType dtype);

  void set_base(uintptr_t ptr, int64_t numel);
  void set_term(int64_t j, uintptr_t ptr, int64_t numel);
  void set_segments(std::vector<int64_t> offsets);

  // Registers k_{i-1} (when prev != 0), then out = base + h * sum_{j < i} a[i][j] k_j. Taking the previous
  // stage's derivative here saves a call per stage.
  void stage(int64_t i, uintptr_t out, int64_t out_numel, double h, uintptr_t prev, int64_t prev_numel);
  // Registers k_{s-1} (when last != 0), then y1 = base + h * sum_j b_j k_j (unless y1_given),
  // err = h * sum_j e_j k_j; returns the RMS error ratio and fills the per-segment norms.
  double finish(uintptr_t y1, int64_t y1_numel, double h, double atol, double rtol, bool y1_given, uintptr_t last,
                int64_t last_numel);
  // Registers n elements at ptr for the error carried by the last stage (FSAL tableaux, large states).
  // Stage s-1 then also writes h * sum_{j < s-1} e_j k_j there, from the k_j it reads anyway, and the
  // next finish() with y1_given reads only that and k_{s-1} for the error: 3 arrays fewer per step, the
  // same values bitwise. Returns false, registering nothing, when a[s-1] and e[:s-1] have different zero
  // patterns (the carried sum would then add other terms than the plain one).
  bool set_error_carry(uintptr_t ptr, int64_t numel);
  // The interpolant y(t0 + theta h) = base + h * sum_j W_j(theta) k_j with W_j(theta) = sum_p theta^(p+1) P[p][j]
  // over num_terms terms (the s stages, plus f1 = f(t1, y1) as term s for non-FSAL tableaux).
  void set_interpolant(std::vector<double> p, int64_t num_terms);
  // Writes the interpolant at each theta into row r of out (rows of n elements), from the registered base
  // and terms of the last step; f1 (when != 0) is registered as term s first.
  void dense(uintptr_t out, int64_t out_numel, const std::vector<double>& thetas, double h, uintptr_t f1,
             int64_t f1_numel);
  const std::vector<double>& segment_norms() const { return seg_norms_; }
  int64_t n() const { return n_; }
  int64_t num_stages() const { return s_; }

 private:
  void require_terms(int64_t count, const char* what) const;

  int64_t s_, n_;
  DType dtype_;
  std::vector<double> a_, b_, e_, p_;
  int64_t p_terms_ = 0;
  const void* base_ = nullptr;
  std::vector<const void*> terms_;
  std::vector<int64_t> offsets_;
  std::vector<double> seg_norms_;
  mutable std::vector<double> scratch_;
  std::vector<double> hb_, he_;  // h * b and h * e of the current finish
  void* carry_ = nullptr;        // see set_error_carry
  bool carry_ready_ = false;     // the last stage of the current step wrote it, with step size carry_h_
  double carry_h_ = 0.0;
};

}  // namespace pyode
