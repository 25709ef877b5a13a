// RKWorkspace: size-checked registration of buffers, then stage / finish calls on the CPU kernels.
#include "pyode/rk_workspace.h"

#include <string>

#include "pyode/dispatch.h"
#include "pyode/lincomb.h"
#include "pyode/rk_finish.h"

namespace pyode {

RKWorkspace::RKWorkspace(int64_t num_stages, std::vector<double> a, std::vector<double> b, std::vector<double> e,
                         int64_t n, DType dtype)
    : s_(num_stages), n_(n), dtype_(dtype), a_(std::move(a)), b_(std::move(b)), e_(std::move(e)),
      terms_(num_stages + 1, nullptr), scratch_(num_stages + 1, 0.0), hb_(b_.size()), he_(e_.size()) {
  check(s_ >= 1, "RKWorkspace: need at least one stage");
  check(n_ >= 0, "RKWorkspace: n must be non-negative");
  check(static_cast<int64_t>(a_.size()) == s_ * s_, "RKWorkspace: a must be s*s (row-major)");
  check(static_cast<int64_t>(b_.size()) == s_, "RKWorkspace: b must have s entries");
  check(e_.empty() || static_cast<int64_t>(e_.size()) == s_, "RKWorkspace: e must be empty or have s entries");
}

void RKWorkspace::set_base(uintptr_t ptr, int64_t numel) {
  check(numel >= n_ && (ptr != 0 || n_ == 0), "RKWorkspace.set_base: buffer shorter than n or null");
  base_ = reinterpret_cast<const void*>(ptr);
  carry_ready_ = false;  // a new step: its last stage carries the error again
}

void RKWorkspace::set_term(int64_t j, uintptr_t ptr, int64_t numel) {
  check(j >= 0 && j <= s_, "RKWorkspace.set_term: term index out of range");
  check(numel >= n_ && (ptr != 0 || n_ == 0), "RKWorkspace.set_term: buffer shorter than n or null");
  terms_[j] = reinterpret_cast<const void*>(ptr);
  if (j < s_ - 1) carry_ready_ = false;  // the carried error was summed from the old k_j
}

void RKWorkspace::set_segments(std::vector<int64_t> offsets) {
  check(offsets.size() >= 2 && offsets.front() == 0 && offsets.back() == n_,
        "RKWorkspace.set_segments: offsets must run from 0 to n");
  for (size_t q = 0; q + 1 < offsets.size(); ++q) check(offsets[q] <= offsets[q + 1], "offsets must increase");
  offsets_ = std::move(offsets);
  seg_norms_.assign(offsets_.size() - 1, 0.0);
}

void RKWorkspace::require_terms(int64_t count, const char* what) const {
  if (n_ == 0) return;
  if (base_ == nullptr) check(false, std::string(what) + ": no base registered");
  for (int64_t j = 0; j < count; ++j)
    if (terms_[j] == nullptr) check(false, std::string(what) + ": term " + std::to_string(j) + " not registered");
}

void RKWorkspace::stage(int64_t i, uintptr_t out, int64_t out_numel, double h, uintptr_t prev, int64_t prev_numel) {
  check(i >= 1 && i < s_, "RKWorkspace.stage: stage index out of range");
  if (prev != 0) set_term(i - 1, prev, prev_numel);
  check(out_numel >= n_ && (out != 0 || n_ == 0), "RKWorkspace.stage: out shorter than n or null");
  require_terms(i, "RKWorkspace.stage");
  for (int64_t j = 0; j < i; ++j) scratch_[j] = h * a_[i * s_ + j];
  carry_ready_ = false;
  if (i == s_ - 1 && carry_ != nullptr) {
    for (int64_t j = 0; j < i; ++j) he_[j] = h * e_[j];
    void* y = reinterpret_cast<void*>(out);
    carry_ready_ = dispatch_floating(dtype_, [&](auto tag) {
      return lincomb_pair_cpu<typename decltype(tag)::type>(y, carry_, n_, base_, terms_.data(), scratch_.data(),
                                                            he_.data(), i);
    });
    carry_h_ = h;
    if (carry_ready_) return;
  }
  LincombArgs args{reinterpret_cast<void*>(out), n_, base_, terms_.data(), i, scratch_.data(), 1, n_};
  dispatch_floating(dtype_, [&](auto tag) { lincomb_cpu<typename decltype(tag)::type>(args); });
}

bool RKWorkspace::set_error_carry(uintptr_t ptr, int64_t numel) {
  check(numel >= n_ && (ptr != 0 || n_ == 0), "RKWorkspace.set_error_carry: buffer shorter than n or null");
  carry_ready_ = false;
  if (e_.empty() || s_ < 2) return false;
  for (int64_t j = 0; j < s_ - 1; ++j)
    if ((a_[(s_ - 1) * s_ + j] != 0.0) != (e_[j] != 0.0)) return false;
  carry_ = reinterpret_cast<void*>(ptr);
  return true;
}

double RKWorkspace::finish(uintptr_t y1, int64_t y1_numel, double h, double atol, double rtol, bool y1_given,
                           uintptr_t last, int64_t last_numel) {
  if (last != 0) set_term(s_ - 1, last, last_numel);
  check(y1_numel >= n_ && (y1 != 0 || n_ == 0), "RKWorkspace.finish: y1 shorter than n or null");
  check(atol >= 0.0 && rtol >= 0.0, "RKWorkspace.finish: tolerances must be non-negative");
  require_terms(s_, "RKWorkspace.finish");
  std::vector<double>& hb = hb_;  // members: no allocation per step
  std::vector<double>& he = he_;
  for (int64_t j = 0; j < s_; ++j) hb[j] = h * b_[j];
  for (size_t j = 0; j < e_.size(); ++j) he[j] = h * e_[j];
  const bool segmented = !offsets_.empty();
  // With the error carried by the last stage of this very step: err = carry + h e_{s-1} k_{s-1}, which adds
  // the same terms in the same order as the full sum (1 * carry is exact).
  const bool carried = carry_ready_ && y1_given && h == carry_h_;
  carry_ready_ = false;
  const void* carried_terms[2] = {carry_, terms_[s_ - 1]};
  double carried_e[2] = {1.0, carried ? h * e_[s_ - 1] : 0.0};
  FinishArgs args{reinterpret_cast<void*>(y1), nullptr, base_, carried ? carried_terms : terms_.data(),
                  carried ? 2 : s_, y1_given ? nullptr : hb.data(),
                  e_.empty() ? nullptr : (carried ? carried_e : he.data()), n_, atol, rtol,
                  segmented ? offsets_.data() : nullptr,
                  segmented ? static_cast<int64_t>(offsets_.size()) - 1 : 0,
                  segmented ? seg_norms_.data() : nullptr};
  return dispatch_floating(dtype_, [&](auto tag) { return rk_finish_cpu<typename decltype(tag)::type>(args); });
}

void RKWorkspace::set_interpolant(std::vector<double> p, int64_t num_terms) {
  check(num_terms == s_ || num_terms == s_ + 1, "RKWorkspace.set_interpolant: num_terms must be s or s + 1");
  check(!p.empty() && static_cast<int64_t>(p.size()) % num_terms == 0,
        "RKWorkspace.set_interpolant: P must have a whole number of rows of num_terms entries");
  p_ = std::move(p);
  p_terms_ = num_terms;
}

void RKWorkspace::dense(uintptr_t out, int64_t out_numel, const std::vector<double>& thetas, double h, uintptr_t f1,
                        int64_t f1_numel) {
  check(p_terms_ > 0, "RKWorkspace.dense: no interpolant set");
  const int64_t m = static_cast<int64_t>(thetas.size());
  check(out_numel >= m * n_ && (out != 0 || m * n_ == 0), "RKWorkspace.dense: out shorter than len(thetas) * n");
  if (f1 != 0) set_term(s_, f1, f1_numel);
  require_terms(p_terms_, "RKWorkspace.dense");
  const int64_t rows = static_cast<int64_t>(p_.size()) / p_terms_;
  std::vector<double> w(m * p_terms_, 0.0);
  for (int64_t r = 0; r < m; ++r) {
    double power = h;
    for (int64_t q = 0; q < rows; ++q) {
      power *= thetas[r];
      for (int64_t j = 0; j < p_terms_; ++j) w[r * p_terms_ + j] += power * p_[q * p_terms_ + j];
    }
  }
  LincombArgs args{reinterpret_cast<void*>(out), n_, base_, terms_.data(), p_terms_, w.data(), m, n_};
  dispatch_floating(dtype_, [&](auto tag) { lincomb_cpu<typename decltype(tag)::type>(args); });
}

}  // namespace pyode
