// A method's coefficient rows with their zeros dropped (index and weight of each non-zero entry, in increasing
// index), derived once per solve, so a step combines only the terms that count instead of copying and
// scanning an s x s tableau at every stage (combine's zero skip, done once).
#pragma once

#include <vector>

namespace pyode::core {

class SparseRows {
 public:
  void clear() {
    start_.assign(1, 0);
    index_.clear();
    weight_.clear();
  }
  // Appends row w[0..terms) as the next row.
  void add(const double* w, int terms) {
    for (int j = 0; j < terms; ++j)
      if (w[j] != 0.0) {
        index_.push_back(j);
        weight_.push_back(w[j]);
      }
    start_.push_back(static_cast<int>(index_.size()));
  }
  int size(int row) const { return start_[row + 1] - start_[row]; }
  const int* index(int row) const { return index_.data() + start_[row]; }
  const double* weight(int row) const { return weight_.data() + start_[row]; }

 private:
  std::vector<int> start_{0}, index_;
  std::vector<double> weight_;
};

// out = base + Σ_q weight[q] K_index[q] per element (base NULL: 0), terms in the given (increasing) order:
// combine's arithmetic for the same non-zero weights. K: contiguous arrays of n. N > 0: n = N known at compile
// time, the terms outer and the N sums in registers (each element still sums its terms in increasing q, so the
// result is the same bit for bit).
template <int N>
inline void combine_terms(const double* base, const double* K, const int* index, const double* weight, int terms,
                          int n, double* out) {
  if constexpr (N > 0) {
    double acc[N];
    for (int e = 0; e < N; ++e) acc[e] = base != nullptr ? base[e] : 0.0;
    for (int q = 0; q < terms; ++q) {
      const double w = weight[q];
      const double* kq = K + static_cast<long>(index[q]) * N;
      for (int e = 0; e < N; ++e) acc[e] += w * kq[e];
    }
    for (int e = 0; e < N; ++e) out[e] = acc[e];
  } else {
    for (int e = 0; e < n; ++e) {
      double acc = base != nullptr ? base[e] : 0.0;
      for (int q = 0; q < terms; ++q) acc += weight[q] * K[static_cast<long>(index[q]) * n + e];
      out[e] = acc;
    }
  }
}

}  // namespace pyode::core
