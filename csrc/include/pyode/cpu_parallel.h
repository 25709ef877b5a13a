// parallel_for: the CPU kernels' one way to spread blocks over OpenMP threads (CPU-only: the CUDA module
// shares common.h and is compiled without OpenMP).
#pragma once
#include <cstdint>

namespace pyode {

// body(b) for b in [0, count): across OpenMP threads when `parallel`, else a plain loop. The explicit
// branch matters: an `omp parallel for if(false)` still enters the OpenMP runtime, which costs more
// (~0.5 us) than a whole small-state kernel.
template <typename F>
void parallel_for(int64_t count, bool parallel, F&& body) {
  if (parallel) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < count; ++b) body(b);
  } else {
    for (int64_t b = 0; b < count; ++b) body(b);
  }
}

}  // namespace pyode
