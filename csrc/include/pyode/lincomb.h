// lincomb: out[r, i] = base[i] + sum_j w[r, j] * k_j[i]   (r < m rows, j < s terms, i < n elements)
//
// One op serves three uses: a Runge-Kutta stage input y0 + h*sum_j a_ij k_j (m = 1), dense output at
// many times in one pass (m = number of output times, w = h * interpolant weights), and the backward
// of both (base = nullptr means zero). Coefficients are double; the state is float32 or float64.
#pragma once
#include <cstdint>
#include "pyode/common.h"

namespace pyode {

struct LincombArgs {
  void* out;                 // (m, out_row_stride) elements; row r starts at out + r * out_row_stride
  int64_t out_row_stride;
  const void* base;          // (n,) or nullptr
  const void* const* ks;     // s pointers to (n,)
  int64_t s;
  const double* w;           // (m, s) row-major
  int64_t m;
  int64_t n;
};

template <typename T>
void lincomb_cpu(const LincombArgs& args);

}  // namespace pyode
