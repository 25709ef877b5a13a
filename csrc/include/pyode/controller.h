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
// by dfactor. A history term whose gain is 0 (the default I controller) is skipped, as in Python: prev1, prev2
// are finite and >= kHistoryFloor, so it would subtract exactly ±0. log_safety = log(safety), log_cap =
// min(log(ifactor) + 1, kLogCap), reject_upper = min(safety, kRejectFactorMax): controller.py's Gains fields.
inline double step_factor_formula(const ControllerGains& g, double log_safety, double log_cap, double reject_upper,
                                  double ratio, double prev1, double prev2, bool accepted) {
  if (!std::isfinite(ratio)) return g.dfactor;
  const double r = std::max(ratio, kRatioFloor);
  double log_factor = log_safety - g.b1 * std::log(r);
  if (g.b2 != 0.0) log_factor -= g.b2 * std::log(prev1);
  if (g.b3 != 0.0) log_factor -= g.b3 * std::log(prev2);
  const double factor = std::exp(std::min(std::max(log_factor, -kLogCap), log_cap));
  const double upper = accepted ? g.ifactor : reject_upper;
  const double lower = accepted ? 1.0 : g.dfactor;
  return std::max(std::min(std::max(factor, 0.0), upper), lower);
}

inline double step_factor(const ControllerGains& g, double ratio, double prev1, double prev2, bool accepted) {
  return step_factor_formula(g, std::log(g.safety), std::min(std::log(g.ifactor) + 1.0, kLogCap),
                             std::min(g.safety, kRejectFactorMax), ratio, prev1, prev2, accepted);
}

// The gains with what step_factor derives from them, computed once for a solve (the formula runs every step).
struct ControllerConstants {
  ControllerGains g;
  double log_safety, log_cap, reject_upper;
  explicit ControllerConstants(const ControllerGains& gains)
      : g(gains), log_safety(std::log(gains.safety)), log_cap(std::min(std::log(gains.ifactor) + 1.0, kLogCap)),
        reject_upper(std::min(gains.safety, kRejectFactorMax)) {}
};

inline double step_factor(const ControllerConstants& c, double ratio, double prev1, double prev2, bool accepted) {
  return step_factor_formula(c.g, c.log_safety, c.log_cap, c.reject_upper, ratio, prev1, prev2, accepted);
}

// Gustafsson's predictive bound (Hairer & Wanner II, IV.8, (8.25); RADAU5's and RODAS's default) on h_next / h
// after an accepted step of size h with ratio r, the previous accepted step having had size h_acc and ratio r_acc
// (kept >= kPredictiveRatioFloor): safety * (h / h_acc) * (r_acc / r^2)^(1/order), clipped to [dfactor, ifactor].
// The caller takes the smaller of this and step_factor's; after a rejected step the next accepted one does not
// grow. Twin of the bound in predictive_factor, pyode/_solvers/controller.py.
constexpr double kPredictiveRatioFloor = 1e-2;

// log_safety = log(safety), log_ratio = log(max(ratio, kRatioFloor)), log_ratio_acc = log(ratio_acc): the caller's
// (computed once a step for the PID factor too).
inline double predictive_bound(const ControllerGains& g, double log_safety, double order, double h, double h_acc,
                               double log_ratio, double log_ratio_acc) {
  double log_factor = log_safety + std::log(h / h_acc) + (log_ratio_acc - 2.0 * log_ratio) / order;
  log_factor = std::min(std::max(log_factor, -kLogCap), kLogCap);
  return std::max(std::min(std::exp(log_factor), g.ifactor), g.dfactor);
}

// The ratio history after a step: an accepted step with a finite ratio pushes max(ratio, kHistoryFloor).
inline void push_history(double ratio, bool accepted, double& prev1, double& prev2) {
  if (!accepted || !std::isfinite(ratio)) return;
  prev2 = prev1;
  prev1 = std::max(ratio, kHistoryFloor);
}

}  // namespace pyode
