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

// Two single rows over the same terms in one pass over memory: out0 = base + sum_j w0_j k_j and
// out1 = sum_j w1_j k_j (the last stage input of an FSAL step and its partial error). Streams only when
// w0 and w1 have the same non-zero pattern (then both sums add exactly the terms, in exactly the order, of
// two separate lincomb calls: bitwise the same results), few enough terms, and outputs apart from the
// inputs; returns false otherwise and writes nothing.
template <typename T>
bool lincomb_pair_cpu(void* out0, void* out1, int64_t n, const void* base, const void* const* ks,
                      const double* w0, const double* w1, int64_t s);

}  // namespace pyode
