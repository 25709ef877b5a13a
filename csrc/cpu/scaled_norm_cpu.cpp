// CPU implementation of scaled_norm, blocked like rk_finish so the sum is deterministic.
#include "pyode/scaled_norm.h"

#include <algorithm>
#include <cmath>

#include "pyode/common.h"
#include "pyode/rk_math.h"
#include "pyode/stream_terms.h"

namespace pyode {

template <typename T>
double scaled_norm_cpu(const T* a, const T* b, const T* y, int64_t n, double atol, double rtol) {
  if (n <= 0) return 0.0;
  const T at = static_cast<T>(atol), rt = static_cast<T>(rtol);
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    const double sum = b ? sum_of_squares<T>(start, start + len, [&](int64_t i) {
      return (a[i] - b[i]) / (at + rt * abs_value(y[i]));
    }) : sum_of_squares<T>(start, start + len, [&](int64_t i) { return a[i] / (at + rt * abs_value(y[i])); });
    total += static_cast<double>(sum);
  }
  return std::sqrt(total / static_cast<double>(n));
}

template double scaled_norm_cpu<float>(const float*, const float*, const float*, int64_t, double, double);
template double scaled_norm_cpu<double>(const double*, const double*, const double*, int64_t, double, double);

}  // namespace pyode
