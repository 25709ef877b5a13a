// rk_finish: complete a Runge-Kutta step in one pass over memory.
//   y1[i]  = y0[i] + sum_j b[j] k_j[i]                     (b already multiplied by h)
//   err[i] = sum_j e[j] k_j[i]                             (e = h * (b - b_hat); optional)
//   ratio  = err / (atol + rtol * max(|y0|, |y1|))
// Returns the RMS of ratio over all n elements, and writes the RMS over each segment
// [seg_offsets[q], seg_offsets[q + 1]) into seg_norms[q] (per batch row, or per tuple component).
#pragma once
#include <cstdint>
#include "pyode/common.h"

namespace pyode {

struct FinishArgs {
  void* y1;                    // (n,) output, or input when b == nullptr
  void* err_out;               // (n,) or nullptr: the error vector is only materialised on request
  const void* y0;              // (n,)
  const void* const* ks;       // s pointers to (n,)
  int64_t s;
  const double* b;             // (s,), or nullptr: y1 is an input (already computed, e.g. FSAL's last stage)
  const double* e;             // (s,) or nullptr: no error estimate (fixed step)
  int64_t n;
  double atol, rtol;
  const int64_t* seg_offsets;  // (nseg + 1,) increasing, seg_offsets[0] = 0, seg_offsets[nseg] = n; or nullptr
  int64_t nseg;
  double* seg_norms;           // (nseg,) or nullptr
};

template <typename T>
double rk_finish_cpu(const FinishArgs& args);

}  // namespace pyode
