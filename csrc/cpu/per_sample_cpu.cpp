// PerSampleWorkspace (see per_sample.h): every row is a small independent solve, finished in one pass.
#include "pyode/per_sample.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "pyode/core/dense_output.h"
#include "pyode/core/norms.h"
#include "pyode/dispatch.h"
#include "pyode/rk_math.h"

namespace pyode {

PerSampleWorkspace::PerSampleWorkspace(PerSampleMethod method, std::vector<double> t_out, int64_t rows,
                                       int64_t width, DType dtype, PerSampleConfig config)
    : s_(method.num_stages), rows_(rows), width_(width), n_(rows * width), dtype_(dtype), a_(std::move(method.a)),
      c_(std::move(method.c)), e_(std::move(method.e)), p_(std::move(method.p)), t_out_(std::move(t_out)),
      powers_(0), cfg_(config), terms_(std::max<int64_t>(method.num_stages, 0), nullptr), t_(rows, 0.0), h_(rows, 0.0), h_step_(rows, 0.0), prev1_(rows, 1.0),
      prev2_(rows, 1.0), next_out_(rows, 1), accepted_(rows, 0), rejected_(rows, 0), non_finite_(rows, 0),
      stalled_(rows, 0), active_(rows, 0), err_(static_cast<size_t>(std::max<int64_t>(width, 0)) * 8) {
  check(s_ >= 2 && s_ <= kMaxStages, "PerSampleWorkspace: need 2 to 64 stages");
  check(rows_ >= 1 && width_ >= 0, "PerSampleWorkspace: need rows >= 1 and width >= 0");
  check(static_cast<int64_t>(a_.size()) == s_ * s_, "PerSampleWorkspace: a must be s*s");
  check(static_cast<int64_t>(c_.size()) == s_ && static_cast<int64_t>(e_.size()) == s_,
        "PerSampleWorkspace: c and e must have s entries");
  check(!p_.empty() && static_cast<int64_t>(p_.size()) % s_ == 0, "PerSampleWorkspace: P must be (powers, s)");
  check(t_out_.size() >= 2, "PerSampleWorkspace: need at least two output times");
  for (size_t k = 1; k < t_out_.size(); ++k) check(t_out_[k] > t_out_[k - 1], "PerSampleWorkspace: t_out must increase");
  const ControllerGains& g = cfg_.gains;
  check(std::isfinite(g.b1) && std::isfinite(g.b2) && std::isfinite(g.b3) && g.safety > 0.0 && g.dfactor > 0.0 &&
            g.ifactor >= 1.0 && std::isfinite(g.ifactor),
        "PerSampleWorkspace: controller gains must be finite, safety and dfactor > 0, ifactor >= 1");
  check(cfg_.max_num_steps >= 1 && cfg_.stall_limit >= 1, "PerSampleWorkspace: max_num_steps and stall_limit >= 1");
  powers_ = static_cast<int64_t>(p_.size()) / s_;
  std::fill(t_.begin(), t_.end(), t_out_.front());
}

void PerSampleWorkspace::set_state(uintptr_t y, int64_t y_numel, uintptr_t f0, int64_t f0_numel, uintptr_t out,
                                   int64_t out_numel) {
  const int64_t out_needed = static_cast<int64_t>(t_out_.size()) * n_;
  check(y_numel >= n_ && f0_numel >= n_ && out_numel >= out_needed, "PerSampleWorkspace.set_state: buffer too short");
  check(n_ == 0 || (y != 0 && f0 != 0 && out != 0), "PerSampleWorkspace.set_state: null buffer");
  y_ = reinterpret_cast<void*>(y);
  f0_ = reinterpret_cast<void*>(f0);
  out_ = reinterpret_cast<void*>(out);
  terms_[0] = f0_;
}

void PerSampleWorkspace::set_first_step(double h0) {
  check(std::isfinite(h0) && h0 > 0.0, "PerSampleWorkspace.set_first_step: h0 must be positive and finite");
  std::fill(h_.begin(), h_.end(), h0);
}

void PerSampleWorkspace::set_term(int64_t j, uintptr_t ptr, int64_t numel) {
  check(j >= 0 && j < s_, "PerSampleWorkspace: term index out of range");
  check(numel >= n_ && (ptr != 0 || n_ == 0), "PerSampleWorkspace: term buffer shorter than rows * width");
  terms_[j] = reinterpret_cast<const void*>(ptr);
}

int64_t PerSampleWorkspace::begin_round() {
  const double t_end = t_out_.back();
  const double end_resolution = core::step_resolution(t_end);
  int64_t active = 0;
  for (int64_t r = 0; r < rows_; ++r) {
    active_[r] = t_[r] < t_end;
    // A step that would leave less than the resolution of t before t_end stretches to it (per_sample.py).
    const double remaining = t_end - t_[r];
    h_step_[r] = active_[r] ? (h_[r] < remaining - end_resolution ? h_[r] : remaining) : 0.0;
    active += active_[r];
  }
  return active;
}

void PerSampleWorkspace::stage_times(int64_t i, uintptr_t out, int64_t out_numel, int t_dtype, double sign) const {
  check(i >= 0 && i < s_, "PerSampleWorkspace.stage_times: stage index out of range");
  check(out_numel >= rows_ && out != 0, "PerSampleWorkspace.stage_times: out shorter than rows");
  dispatch_floating(dtype_from_code(t_dtype, "PerSampleWorkspace.stage_times (t dtype)"), [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t r = 0; r < rows_; ++r) reinterpret_cast<T*>(out)[r] = static_cast<T>(sign * (t_[r] + c_[i] * h_step_[r]));
  });
}

// Stage i's input of every row: y_r + Σ_{j<i} (h_r a_ij) k_j,r, combined as the joint loop combines
// (core::combine_nonzero, the zero a_ij skipped); a row that stays put (h_r = 0) keeps y_r.
template <typename T>
void PerSampleWorkspace::stage_rows(int64_t i, T* out) const {
  const T* y = static_cast<const T*>(y_);
  int idx[kMaxStages];
  int nz = 0;
  for (int64_t j = 0; j < i; ++j)
    if (a_[i * s_ + j] != 0.0) idx[nz++] = static_cast<int>(j);
  T wt[kMaxStages];
  for (int64_t r = 0; r < rows_; ++r) {
    for (int q = 0; q < nz; ++q) wt[q] = static_cast<T>(h_step_[r] * a_[i * s_ + idx[q]]);
    core::combine_nonzero(y, term_at<T>(), idx, wt, h_step_[r] != 0.0 ? nz : 0, r * width_, (r + 1) * width_, out);
  }
}

void PerSampleWorkspace::stage(int64_t i, uintptr_t out, int64_t out_numel, uintptr_t prev, int64_t prev_numel) {
  check(i >= 1 && i < s_, "PerSampleWorkspace.stage: stage index out of range");
  check(out_numel >= n_ && (out != 0 || n_ == 0), "PerSampleWorkspace.stage: out shorter than rows * width");
  check(y_ != nullptr || n_ == 0, "PerSampleWorkspace.stage: set_state first");
  set_term(i - 1, prev, prev_numel);
  dispatch_floating(dtype_, [&](auto tag) {
    using T = typename decltype(tag)::type;
    stage_rows<T>(i, reinterpret_cast<T*>(out));
  });
}

// RMS over the row of err / (atol + rtol max(|y|, |y1|)), err = Σ_j (h e_j) k_j (core::combine_terms from 0).
template <typename T>
double PerSampleWorkspace::row_ratio(int64_t r, const T* y1) {
  const T* y = static_cast<const T*>(y_);
  const T atol = static_cast<T>(cfg_.atol), rtol = static_cast<T>(cfg_.rtol);
  double w[kMaxStages];
  for (int64_t j = 0; j < s_; ++j) w[j] = h_step_[r] * e_[j];
  const int64_t off = r * width_;
  T* err = reinterpret_cast<T*>(err_.data());  // the row's error terms, err[q] for element off + q
  core::combine_terms<T>(nullptr, [this, off](int j) { return static_cast<const T*>(terms_[j]) + off; }, w,
                         static_cast<int>(s_), 0, width_, err);
  double sum = 0.0;
  for (int64_t q = 0; q < width_; ++q) {
    const double ratio = static_cast<double>(scaled_error(err[q], y[off + q], y1[off + q], atol, rtol));
    sum += ratio * ratio;
  }
  return width_ > 0 ? std::sqrt(sum / static_cast<double>(width_)) : 0.0;
}

// Dense output of an accepted step of row r: every output time in (t_r, t_new], from the interpolant.
template <typename T>
void PerSampleWorkspace::write_outputs(int64_t r, double t_new) {
  const T* y = static_cast<const T*>(y_);
  T* out = static_cast<T*>(out_);
  const double h = h_step_[r];
  int64_t& k = next_out_[r];
  core::Method interpolant;  // the view core::dense_weights reads: P (powers x s), its degree and terms
  interpolant.P = p_.data();
  interpolant.interp_degree = static_cast<int>(powers_);
  interpolant.num_terms = static_cast<int>(s_);
  for (; k < static_cast<int64_t>(t_out_.size()) && t_out_[k] <= t_new; ++k) {
    const double theta = (t_out_[k] - t_[r]) / h;
    double wd[kMaxStages];  // h * W_j(theta): the joint loop's interpolant weights (core/dense_output.h)
    core::dense_weights(interpolant, theta, h, wd);
    core::combine_terms(y, term_at<T>(), wd, static_cast<int>(s_), r * width_, (r + 1) * width_, out + k * n_);
  }
}

// StallWatch (adaptive.py) for row r, accepted with y1: after a NaN/inf rejection, counts accepted steps that
// leave the row bitwise unchanged; a step that changes it resets the count.
template <typename T>
void PerSampleWorkspace::watch_stall(int64_t r, const T* y1) {
  if (non_finite_[r] == 0) return;
  const T* y = static_cast<const T*>(y_);
  bool changed = false;
  for (int64_t q = r * width_; q < (r + 1) * width_; ++q) changed |= !(y[q] == y1[q]);
  if (changed) non_finite_[r] = stalled_[r] = 0;
  else ++stalled_[r];
}

// An accepted row moves on: y_r <- y1_r and f0_r <- f(t_new, y1)_r (FSAL).
template <typename T>
void PerSampleWorkspace::commit_row(int64_t r, const T* y1, const T* last) {
  T* y = static_cast<T*>(y_);
  T* f0 = static_cast<T*>(f0_);
  for (int64_t q = r * width_; q < (r + 1) * width_; ++q) {
    y[q] = y1[q];
    f0[q] = last[q];
  }
}

// The joint loop's PID controller on row r's own ratio history (controller.h).
double PerSampleWorkspace::next_step(int64_t r, double h, double ratio, bool accept) {
  const double factor = step_factor(cfg_.gains, ratio, prev1_[r], prev2_[r], accept);
  push_history(ratio, accept, prev1_[r], prev2_[r]);
  return std::min(std::max(h * factor, cfg_.min_step), cfg_.max_step);
}

template <typename T>
RoundStatus PerSampleWorkspace::finish_rows(const T* y1, const T* last) {
  const double t_end = t_out_.back();
  RoundStatus status{0, 0, -1, 0.0, std::numeric_limits<double>::infinity()};
  for (int64_t r = 0; r < rows_; ++r) {
    if (active_[r]) {
      const double ratio = row_ratio<T>(r, y1);
      const bool accept = ratio <= 1.0;
      if (accept) {
        const double t_new = h_step_[r] >= t_end - t_[r] ? t_end : t_[r] + h_step_[r];
        write_outputs<T>(r, t_new);
        watch_stall<T>(r, y1);
        commit_row<T>(r, y1, last);
        t_[r] = t_new;
        ++accepted_[r];
      } else {
        ++rejected_[r];
        non_finite_[r] += !std::isfinite(ratio);
      }
      h_[r] = next_step(r, h_step_[r], ratio, accept);
      const double tiny = 4.0 * std::numeric_limits<double>::epsilon() * std::max(std::abs(t_[r]), 1.0);
      // The first failing row, by precedence: PerSampleLoop._check does the same on tensors. A row that reached
      // t_end is done: its step count and next h no longer matter.
      const bool running = t_[r] < t_end;
      if (status.kind == 0 && running && accepted_[r] + rejected_[r] >= cfg_.max_num_steps)
        status = {0, 1, r, t_[r], 0.0};
      if (status.kind == 0 && running && !(h_[r] > tiny)) status = {0, std::isfinite(ratio) ? 2 : 3, r, t_[r], 0.0};
      if (status.kind == 0 && !accept && h_[r] >= h_step_[r]) status = {0, 4, r, t_[r], 0.0};
      if (status.kind == 0 && stalled_[r] >= cfg_.stall_limit) status = {0, 5, r, t_[r], 0.0};
    }
    status.active += t_[r] < t_end;
  }
  for (int64_t r = 0; r < rows_; ++r) status.t_min = std::min(status.t_min, t_[r]);
  return status;
}

RoundStatus PerSampleWorkspace::finish(uintptr_t y1, int64_t y1_numel, uintptr_t last, int64_t last_numel) {
  check(y1_numel >= n_ && (y1 != 0 || n_ == 0), "PerSampleWorkspace.finish: y1 shorter than rows * width");
  check(y_ != nullptr || n_ == 0, "PerSampleWorkspace.finish: set_state first");
  set_term(s_ - 1, last, last_numel);
  for (int64_t j = 0; j < s_; ++j) check(terms_[j] != nullptr || n_ == 0, "PerSampleWorkspace.finish: missing stage");
  return dispatch_floating(dtype_, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return finish_rows<T>(reinterpret_cast<const T*>(y1), reinterpret_cast<const T*>(last));
  });
}

}  // namespace pyode
