// method="auto" in the solve loop: an explicit pair while the problem is not stiff, its stiff partner (an implicit
// kind of the same order) while it is, switching both ways. The C++ twin of pyode/_solvers/implicit_auto.py: the
// same constants, estimates and counters, so both loops switch at the same steps.
//
// Detection (Hairer & Wanner, Solving ODEs I, II.10; the DOPRI5 code): after an accepted explicit step,
// rho = |k_s - k_{s-1}| / |Y_s - Y_{s-1}| from the last two stages (both at c = 1) estimates the dominant
// eigenvalue's modulus; h rho beyond the stability boundary on kStiffSteps steps (without kNonstiffReset calm
// ones in a row in between) switches to the stiff method. A window of explicit steps with many rejected attempts
// also asks the Jacobian itself. Back: once h rho(J) of the held Jacobian stays below kNonstiffLimit for
// kNonstiffSteps consecutive stiff steps.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pyode/core/method.h"

namespace pyode::core {

// implicit_auto.py's constants (the reasons are there).
constexpr double kStabilityBoundary = 2.5;
constexpr int kStiffSteps = 15;
constexpr int kNonstiffReset = 6;
constexpr double kNonstiffLimit = 1.5;
constexpr int kNonstiffSteps = 15;
constexpr int kPowerIterations = 8;
constexpr int kCheckWindow = 25;
constexpr int kCheckRetries = 5;

inline double norm2(const double* x, int n) {
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return std::sqrt(s);
}

// The spectral radius of the n x n row-major J by power iteration from the ones vector (an estimate: enough to
// tell h rho of order 1 from one of order 100); inf when it is not finite. v, w: n scratch values each.
inline double spectral_radius(const double* J, int n, double* v, double* w) {
  for (int i = 0; i < n; ++i) v[i] = 1.0;
  double rho = 0.0;
  for (int it = 0; it < kPowerIterations; ++it) {
    for (int i = 0; i < n; ++i) {
      double acc = 0.0;
      for (int j = 0; j < n; ++j) acc += J[static_cast<long>(i) * n + j] * v[j];
      w[i] = acc;
    }
    rho = norm2(w, n);
    const double scale = std::fmax(rho, std::numeric_limits<double>::min());
    for (int i = 0; i < n; ++i) v[i] = w[i] / scale;
  }
  return std::isfinite(rho) ? rho : INFINITY;
}

// The switching counters of one row (AutoSwitchStepper's count, calm, window, retries).
struct AutoSwitch {
  const Method* explicit_method = nullptr;
  const Method* stiff_method = nullptr;  // nullptr: no switching (a plain solve)
  int count = 0, calm = 0, window = 0, retries = 0;

  bool active() const { return stiff_method != nullptr; }

  // After an accepted explicit step with h rho = `stiffness`: whether the window's Jacobian check is due (the
  // caller then computes h rho(J) at the step's end and calls window_result).
  bool explicit_accepted(double stiffness) {
    if (stiffness > kStabilityBoundary) {
      ++count;
      calm = 0;
    } else if (++calm >= kNonstiffReset) {
      count = 0;
    }
    return ++window >= kCheckWindow && retries >= kCheckRetries;
  }
  // Closes the explicit step's bookkeeping (after the Jacobian check, if any); true: switch to the stiff method.
  bool explicit_done(bool window_stiff) {
    if (window >= kCheckWindow) {
      if (window_stiff) count = kStiffSteps;
      window = retries = 0;
    }
    return count >= kStiffSteps;
  }
  // After an accepted stiff step with h rho(J) = `stiffness`; true: switch back to the explicit method.
  bool stiff_accepted(double stiffness) {
    count = stiffness < kNonstiffLimit ? count + 1 : 0;
    return count >= kNonstiffSteps;
  }
  void switched() { count = calm = 0; }
};

}  // namespace pyode::core
