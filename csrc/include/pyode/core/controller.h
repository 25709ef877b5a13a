// The PID step-size controller of the solve loop: a row's state (the ratio history) around the one formula
// in pyode/controller.h (step_factor / push_history, the C++ twin of pyode/_solvers/controller.py), plus the
// min_step/max_step bounds. Gains in diffrax's convention: b1 = (p + i + d) / k, b2 = -(p + 2d) / k,
// b3 = d / k with k = order (pyode/_solvers/controller.py, pid_gains).
#pragma once

#include <cmath>

#include "pyode/controller.h"
#include "pyode/core/norms.h"

namespace pyode::core {

struct ControllerParams {
  int order = 1;
  double safety = 0.9, ifactor = 10.0, dfactor = 0.2;
  double pcoeff = 0.0, icoeff = 1.0, dcoeff = 0.0;
  double min_step = 0.0, max_step = INFINITY;
  bool predictive = false;  // Gustafsson's predictive bound on accepted steps (pyode/controller.h)
};

class PIDController {
 public:
  explicit PIDController(const ControllerParams& p) : p_(p), g_(gains(p)) {}

  // The next step size after a step of size h (> 0) with error ratio `ratio` (accept when <= 1).
  double next_step(double h, double ratio, bool accepted) {
    double factor = pyode::step_factor(g_, ratio, prev1_, prev2_, accepted);
    if (p_.predictive) factor = predict(factor, h, ratio, accepted);
    pyode::push_history(ratio, accepted, prev1_, prev2_);
    return py_min(py_max(h * factor, p_.min_step), p_.max_step);
  }

 private:
  static pyode::ControllerGains gains(const ControllerParams& p) {
    const double k = static_cast<double>(p.order);
    return {(p.pcoeff + p.icoeff + p.dcoeff) / k, -(p.pcoeff + 2.0 * p.dcoeff) / k, p.dcoeff / k,
            p.safety, p.ifactor, p.dfactor};
  }

  // The predictive controller's step factor from the PID one (controller.py, predictive_factor).
  double predict(double factor, double h, double ratio, bool accepted) {
    if (!accepted || !std::isfinite(ratio)) {
      after_reject_ = true;
      return factor;
    }
    const double log_ratio = std::log(py_max(ratio, pyode::kRatioFloor));
    if (h_acc_ > 0.0)
      factor = py_min(factor, pyode::predictive_bound(g_.g, g_.log_safety, p_.order, h, h_acc_, log_ratio,
                                                      log_ratio_acc_));
    if (after_reject_) factor = py_min(factor, 1.0);
    h_acc_ = h;
    // log(max(ratio, floor)) without a second log: log is monotonic
    log_ratio_acc_ = ratio >= pyode::kPredictiveRatioFloor ? log_ratio : kLogPredictiveFloor;
    after_reject_ = false;
    return factor;
  }

  ControllerParams p_;
  pyode::ControllerConstants g_;  // the gains and their logs, derived once
  double prev1_ = 1.0, prev2_ = 1.0;  // r_{n-1}, r_{n-2}
  // the last accepted step's size (0: none yet) and log of its ratio, kept >= kPredictiveRatioFloor (predictive)
  double h_acc_ = 0.0, log_ratio_acc_ = 0.0;
  inline static const double kLogPredictiveFloor = std::log(pyode::kPredictiveRatioFloor);
  bool after_reject_ = false;             // the last step was rejected (predictive)
};

}  // namespace pyode::core
