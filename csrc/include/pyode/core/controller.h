// Söderlind's PID step-size controller, the formula of pyode/_solvers/controller.py (step_factor,
// next_history): h_next = h * clip(safety * r_n^(-b1) * r_{n-1}^(-b2) * r_{n-2}^(-b3), lower, ifactor)
// with b1 = (p + i + d) / k, b2 = -(p + 2d) / k, b3 = d / k, k = order; lower = 1 after an accepted step
// (never shrink after accepting), dfactor after a rejected one; a NaN/inf ratio shrinks by dfactor; past
// ratios come from accepted steps only. Evaluated in log space like the Python path, with the same
// operations in the same order, so both take the same steps.
#pragma once

#include <cmath>

#include "pyode/core/norms.h"

namespace pyode::core {

struct ControllerParams {
  int order = 1;
  double safety = 0.9, ifactor = 10.0, dfactor = 0.2;
  double pcoeff = 0.0, icoeff = 1.0, dcoeff = 0.0;
  double min_step = 0.0, max_step = INFINITY;
};

constexpr double kRatioFloor = 1e-300;   // a ratio of 0 reads as this (log(0) = -inf): factor = ifactor
constexpr double kHistoryFloor = 1e-10;  // past ratios at least this (a zero would weigh forever)
constexpr double kLogCap = 700.0;        // exp() of more overflows a double

inline double py_clip(double x, double lo, double hi) { return py_min(py_max(x, lo), hi); }

class PIDController {
 public:
  explicit PIDController(const ControllerParams& p)
      : p_(p),
        b1_((p.pcoeff + p.icoeff + p.dcoeff) / double(p.order)),
        b2_(-(p.pcoeff + 2.0 * p.dcoeff) / double(p.order)),
        b3_(p.dcoeff / double(p.order)),
        log_safety_(std::log(p.safety)),
        log_cap_(py_min(std::log(p.ifactor) + 1.0, kLogCap)) {}

  // h_next / h after a step with error ratio `ratio` (accept when <= 1).
  double factor(double ratio, bool accepted) const {
    const bool finite = std::isfinite(ratio);
    if (!finite) return p_.dfactor;
    const double r = py_clip(ratio, kRatioFloor, INFINITY);
    const double log_factor = log_safety_ - b1_ * std::log(r) - b2_ * std::log(prev1_) - b3_ * std::log(prev2_);
    const double f = std::exp(py_clip(log_factor, -kLogCap, log_cap_));
    return py_clip(f, accepted ? 1.0 : p_.dfactor, p_.ifactor);
  }

  // The next step size after a step of size h (> 0); updates the ratio history.
  double next_step(double h, double ratio, bool accepted) {
    const double f = factor(ratio, accepted);
    if (accepted && std::isfinite(ratio)) {
      prev2_ = prev1_;
      prev1_ = py_clip(ratio, kHistoryFloor, INFINITY);
    }
    return py_min(py_max(h * f, p_.min_step), p_.max_step);
  }

 private:
  ControllerParams p_;
  double b1_, b2_, b3_, log_safety_, log_cap_;
  double prev1_ = 1.0, prev2_ = 1.0;  // r_{n-1}, r_{n-2}
};

}  // namespace pyode::core
