// CPU implementation of lincomb: blocked so that the m * s multiply-adds of one block stay in cache.
#include "pyode/lincomb.h"

#include <algorithm>

namespace pyode {
namespace {

template <typename T>
void lincomb_block(const LincombArgs& args, int64_t start, int64_t len) {
  const T* base = static_cast<const T*>(args.base);
  for (int64_t r = 0; r < args.m; ++r) {
    T* out = static_cast<T*>(args.out) + r * args.out_row_stride + start;
    if (base != nullptr) {
      const T* src = base + start;
      for (int64_t i = 0; i < len; ++i) out[i] = src[i];
    } else {
      for (int64_t i = 0; i < len; ++i) out[i] = T(0);
    }
    for (int64_t j = 0; j < args.s; ++j) {
      const double wj = args.w[r * args.s + j];
      if (wj == 0.0) continue;  // tableaux are sparse: skip the memory traffic of zero terms
      const T w = static_cast<T>(wj);
      const T* k = static_cast<const T*>(args.ks[j]) + start;
      for (int64_t i = 0; i < len; ++i) out[i] += w * k[i];
    }
  }
}

}  // namespace

template <typename T>
void lincomb_cpu(const LincombArgs& args) {
  const int64_t nblocks = (args.n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (args.n * (args.m > 0 ? args.m : 1) >= kParallelThreshold)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t start = blk * kBlock;
    lincomb_block<T>(args, start, std::min(kBlock, args.n - start));
  }
}

template void lincomb_cpu<float>(const LincombArgs&);
template void lincomb_cpu<double>(const LincombArgs&);

}  // namespace pyode
