// Per-element maths of the Runge-Kutta kernels, shared by the CPU and CUDA backends.
#pragma once
#include "pyode/common.h"

namespace pyode {

// |a| without fabs/fmax calls: a plain comparison keeps GCC's loops vectorisable.
template <typename T>
PYODE_HD T abs_value(T a) { return a < T(0) ? -a : a; }

template <typename T>
PYODE_HD T max_value(T a, T b) { return a > b ? a : b; }

// err / (atol + rtol * max(|y0|, |y1|)): the scaled error whose RMS decides step acceptance.
template <typename T>
PYODE_HD T scaled_error(T err, T y0, T y1, T atol, T rtol) {
  return err / (atol + rtol * max_value(abs_value(y0), abs_value(y1)));
}

}  // namespace pyode
