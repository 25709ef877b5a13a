// Size checks shared by the CPU and CUDA bindings: every buffer a kernel will touch is checked against
// the capacity the Python layer reports, so a wrong call raises instead of reading out of bounds.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pyode/common.h"

namespace pyode {

// The terms' addresses as kernel pointers, after checking each one's capacity against n.
inline std::vector<const void*> checked_terms(const std::vector<uintptr_t>& ks, const std::vector<int64_t>& k_sizes,
                                              int64_t n, const std::string& what) {
  check(ks.size() == k_sizes.size(), what + ": one size per pointer expected");
  std::vector<const void*> out(ks.size());
  for (size_t j = 0; j < ks.size(); ++j) {
    check(k_sizes[j] >= n, what + " term " + std::to_string(j) + " is shorter than n");
    check(ks[j] != 0 || n == 0, what + " term " + std::to_string(j) + " is a null pointer");
    out[j] = reinterpret_cast<const void*>(ks[j]);
  }
  return out;
}

inline void check_lincomb_sizes(int64_t out_size, int64_t out_row_stride, uintptr_t base, int64_t base_size,
                                size_t num_terms, size_t num_weights, int64_t m, int64_t n) {
  check(n >= 0 && m >= 0, "lincomb: n and m must be non-negative");
  check(static_cast<int64_t>(num_weights) == m * static_cast<int64_t>(num_terms), "lincomb: w must hold m * s values");
  check(m == 0 || out_row_stride >= n, "lincomb: out_row_stride < n");
  check(m == 0 || out_size >= (m - 1) * out_row_stride + n, "lincomb: out is too small for m rows");
  check(base == 0 || base_size >= n, "lincomb: base is shorter than n");
}

inline void check_finish_sizes(int64_t y1_size, uintptr_t err_out, int64_t err_size, int64_t y0_size,
                               size_t num_terms, size_t num_b, size_t num_e, int64_t n, double atol, double rtol) {
  check(n >= 0, "rk_finish: n must be non-negative");
  check(y1_size >= n && y0_size >= n, "rk_finish: y0/y1 shorter than n");
  check(err_out == 0 || err_size >= n, "rk_finish: err_out shorter than n");
  check(num_b == 0 || num_b == num_terms, "rk_finish: b must be empty (y1 given) or have one weight per term");
  check(num_e == 0 || num_e == num_terms, "rk_finish: e must be empty or have one weight per term");
  check(atol >= 0.0 && rtol >= 0.0, "rk_finish: tolerances must be non-negative");
}

}  // namespace pyode
