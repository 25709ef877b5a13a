// scaled_norm: RMS of (a - b) / (atol + rtol * |y|) over n elements (b may be null: RMS of a / scale).
// Used by the initial step-size heuristic (Hairer, Nørsett & Wanner 1993, II.4): three norms per solve.
#pragma once
#include <cstdint>

namespace pyode {

template <typename T>
double scaled_norm_cpu(const T* a, const T* b, const T* y, int64_t n, double atol, double rtol);

}  // namespace pyode
