// The PID step-size controller's formula: the C++ twin of step_factor / next_history in
// pyode/_solvers/controller.py (the specification; tests check both take the same steps). The gains come from
// that module's pid_gains, so the coefficients have one definition.
#pragma once
#include <algorithm>
#include <cmath>

namespace pyode {

struct ControllerGains {
  double b1, b2, b3;                // exponents on r_n, r_{n-1}, r_{n-2}
  double safety, ifactor, dfactor;  // the factor is clipped to [1 (accepted) or dfactor (rejected), ifactor]
};

constexpr double kRatioFloor = 1e-300;   // an error ratio of 0 reads as this (log(0) = -inf)
constexpr double kHistoryFloor = 1e-10;  // past ratios are kept at least this large
constexpr double kLogCap = 700.0;        // exp() of more overflows a double
constexpr double kRejectFactorMax = 0.9; // a rejected step shrinks at least this much (unless dfactor forbids it)

// h_next / h after a step with error ratio `ratio`; prev1, prev2: the ratios of the last two accepted steps.
// Clipped to [1, ifactor] after an accepted step, to [dfactor, min(safety, 0.9)] after a rejected one (dfactor
// wins where they cross). Evaluated in log space, so no gain and no ratio can overflow; a NaN/inf ratio shrinks
// by dfactor.
inline double step_factor(const ControllerGains& g, double ratio, double prev1, double prev2, bool accepted) {
  if (!std::isfinite(ratio)) return g.dfactor;
  const double r = std::max(ratio, kRatioFloor);
  const double log_factor = std::log(g.safety) - g.b1 * std::log(r) - g.b2 * std::log(prev1) - g.b3 * std::log(prev2);
  const double cap = std::min(std::log(g.ifactor) + 1.0, kLogCap);
  const double factor = std::exp(std::min(std::max(log_factor, -kLogCap), cap));
  const double upper = accepted ? g.ifactor : std::min(g.safety, kRejectFactorMax);
  const double lower = accepted ? 1.0 : g.dfactor;
  return std::max(std::min(std::max(factor, 0.0), upper), lower);
}

// The ratio history after a step: an accepted step with a finite ratio pushes max(ratio, kHistoryFloor).
inline void push_history(double ratio, bool accepted, double& prev1, double& prev2) {
  if (!accepted || !std::isfinite(ratio)) return;
  prev2 = prev1;
  prev1 = std::max(ratio, kHistoryFloor);
}

}  // namespace pyode
