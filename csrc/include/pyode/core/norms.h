// Scaled RMS norms of the error and of the initial-step probes (pyode/_kernels/reference.py).
// float64 states: one running sum in double. float32 states: the compiled kernels' own arithmetic
// (scaled_norm_cpu<float>, rk_finish_cpu<float>), so a float32 solve accepts exactly the steps the Python
// loop's kernels accept.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "pyode/common.h"
#include "pyode/rk_math.h"
#include "pyode/stream_terms.h"

namespace pyode::core {

// RMS of (a - b) / (atol + rtol * |y|); b may be nullptr (then of a / scale). n == 0 gives 0.
inline double scaled_norm(const double* a, const double* b, const double* y, int n, double atol, double rtol) {
  if (n == 0) return 0.0;
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    const double d = (b == nullptr ? a[i] : a[i] - b[i]) / (atol + rtol * std::fabs(y[i]));
    sum += d * d;
  }
  return std::sqrt(sum / n);
}

// RMS of err / (atol + rtol * max(|y0|, |y1|)): the error ratio of a step (accept when <= 1).
inline double error_ratio(const double* err, const double* y0, const double* y1, int n, double atol, double rtol) {
  if (n == 0) return 0.0;
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    const double a0 = std::fabs(y0[i]), a1 = std::fabs(y1[i]);
    const double big = (a1 > a0 || std::isnan(a1)) ? a1 : a0;  // NaN-propagating, as torch.maximum
    const double d = err[i] / (atol + rtol * big);
    sum += d * d;
  }
  return std::sqrt(sum / n);
}

// sqrt(Σ value(i)² / n) as the float32 kernels sum it: squares in float in pyode::sum_of_squares' 16
// interleaved lanes per block of pyode::kBlock elements (a block whose float sum overflows is summed again
// in double), the block sums added in double in block order. n == 0 gives 0.
template <class Value>
double kernel_rms_f32(int n, Value&& value) {
  if (n <= 0) return 0.0;
  if (n <= pyode::kSumLanes) {  // one element per lane: the lanes' in-order sum is the elements' (same bits)
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float r = static_cast<float>(value(i));
      sum += r * r;
    }
    if (std::isfinite(sum)) return std::sqrt(static_cast<double>(sum) / static_cast<double>(n));
  }
  double total = 0.0;
  for (int64_t start = 0; start < n; start += pyode::kBlock) {
    const int64_t end = std::min<int64_t>(n, start + pyode::kBlock);
    total += pyode::sum_of_squares<float>(start, end, value);
  }
  return std::sqrt(total / static_cast<double>(n));
}

// scaled_norm for float32 states: scaled_norm_cpu<float> (tolerances rounded to float, quotients in float).
inline double scaled_norm(const float* a, const float* b, const float* y, int n, double atol, double rtol) {
  const float at = static_cast<float>(atol), rt = static_cast<float>(rtol);
  if (b == nullptr) return kernel_rms_f32(n, [&](int64_t i) { return a[i] / (at + rt * pyode::abs_value(y[i])); });
  return kernel_rms_f32(n, [&](int64_t i) { return (a[i] - b[i]) / (at + rt * pyode::abs_value(y[i])); });
}

// error_ratio for float32 states: rk_finish_cpu<float>'s norm (pyode::scaled_error in float).
inline double error_ratio(const float* err, const float* y0, const float* y1, int n, double atol, double rtol) {
  const float at = static_cast<float>(atol), rt = static_cast<float>(rtol);
  return kernel_rms_f32(n, [&](int64_t i) { return pyode::scaled_error(err[i], y0[i], y1[i], at, rt); });
}

// Python's max(a, b) / min(a, b): the first argument unless the second compares greater / smaller
// (so NaN propagates exactly as in the Python path).
inline double py_max(double a, double b) { return b > a ? b : a; }
inline double py_min(double a, double b) { return b < a ? b : a; }

// Python's math.ulp for a finite x >= 0: the next double up minus x (the last step down at the largest double).
// By the bits (the loop asks every step; nextafter is a library call): for x >= 0 the next double up is the
// next integer of its bit pattern, 0 included (its successor is the smallest subnormal).
inline double py_ulp(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  double up;
  const uint64_t next = bits + 1;
  std::memcpy(&up, &next, sizeof up);
  if (std::isinf(up)) {
    double down;
    const uint64_t prev = bits - 1;
    std::memcpy(&down, &prev, sizeof down);
    return x - down;
  }
  return up - x;
}

// The smallest step the loops take at time t (adaptive.py's step_resolution): 4 ulps of max(|t|, 1).
inline double step_resolution(double t) { return 4.0 * py_ulp(std::fabs(t) > 1.0 ? std::fabs(t) : 1.0); }

}  // namespace pyode::core
