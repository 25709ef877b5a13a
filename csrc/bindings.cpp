// pybind11 bindings of pyode._C. Registration and argument checking only; the maths lives in cpu/.
//
// Buffers arrive as (address, capacity-in-elements) pairs taken from torch tensors by the Python
// layer, which has already validated dtype, device and contiguity. Here every size is checked again
// against what the kernel will touch, so a wrong call raises instead of reading out of bounds.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "pyode/arg_checks.h"

#include "pyode/lincomb.h"
#include "pyode/rk_finish.h"
#include "pyode/per_sample.h"
#include "pyode/rk_workspace.h"
#include "pyode/scaled_norm.h"
#include "pyode/stream_terms.h"

namespace py = pybind11;
using pyode::check;

namespace {

using Ptrs = std::vector<uintptr_t>;
using Sizes = std::vector<int64_t>;

// Releases the GIL for the duration of a kernel on a large state only: releasing and re-taking it costs
// about as much as the whole kernel on a small state, where other threads gain nothing from it.
class ReleaseGilIfLarge {
 public:
  explicit ReleaseGilIfLarge(int64_t elements) {
    if (elements >= kGilReleaseElements) state_ = PyEval_SaveThread();
  }
  ~ReleaseGilIfLarge() {
    if (state_ != nullptr) PyEval_RestoreThread(state_);
  }
  ReleaseGilIfLarge(const ReleaseGilIfLarge&) = delete;
  ReleaseGilIfLarge& operator=(const ReleaseGilIfLarge&) = delete;

 private:
  static constexpr int64_t kGilReleaseElements = 1 << 14;
  PyThreadState* state_ = nullptr;
};

void lincomb(uintptr_t out, int64_t out_size, int64_t out_row_stride, uintptr_t base, int64_t base_size,
             const Ptrs& ks, const Sizes& k_sizes, const std::vector<double>& w, int64_t m, int64_t n, int dtype) {
  pyode::check_lincomb_sizes(out_size, out_row_stride, base, base_size, ks.size(), w.size(), m, n);
  std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "lincomb");
  pyode::LincombArgs args{reinterpret_cast<void*>(out), out_row_stride, reinterpret_cast<const void*>(base),
                          terms.data(), static_cast<int64_t>(terms.size()), w.data(), m, n};
  ReleaseGilIfLarge release(n * m);
  if (dtype == static_cast<int>(pyode::DType::kFloat32)) pyode::lincomb_cpu<float>(args);
  else if (dtype == static_cast<int>(pyode::DType::kFloat64)) pyode::lincomb_cpu<double>(args);
  else check(false, "lincomb: unsupported dtype code " + std::to_string(dtype));
}

double rk_finish(uintptr_t y1, int64_t y1_size, uintptr_t err_out, int64_t err_size, uintptr_t y0, int64_t y0_size,
                 const Ptrs& ks, const Sizes& k_sizes, const std::vector<double>& b, const std::vector<double>& e,
                 int64_t n, double atol, double rtol, uintptr_t seg_offsets, int64_t nseg, uintptr_t seg_norms,
                 int dtype) {
  pyode::check_finish_sizes(y1_size, err_out, err_size, y0_size, ks.size(), b.size(), e.size(), n, atol, rtol);
  check(seg_offsets == 0 || nseg >= 1, "rk_finish: nseg must be >= 1 with seg_offsets");
  const auto* offsets = reinterpret_cast<const int64_t*>(seg_offsets);
  if (offsets != nullptr) {
    check(offsets[0] == 0 && offsets[nseg] == n, "rk_finish: seg_offsets must start at 0 and end at n");
    for (int64_t q = 0; q < nseg; ++q) check(offsets[q] <= offsets[q + 1], "rk_finish: seg_offsets must increase");
  }
  std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "rk_finish");
  pyode::FinishArgs args{reinterpret_cast<void*>(y1), reinterpret_cast<void*>(err_out),
                         reinterpret_cast<const void*>(y0), terms.data(), static_cast<int64_t>(terms.size()),
                         b.empty() ? nullptr : b.data(), e.empty() ? nullptr : e.data(), n, atol, rtol, offsets, nseg,
                         reinterpret_cast<double*>(seg_norms)};
  ReleaseGilIfLarge release(n);
  if (dtype == static_cast<int>(pyode::DType::kFloat32)) return pyode::rk_finish_cpu<float>(args);
  if (dtype == static_cast<int>(pyode::DType::kFloat64)) return pyode::rk_finish_cpu<double>(args);
  check(false, "rk_finish: unsupported dtype code " + std::to_string(dtype));
  return 0.0;
}


double scaled_norm(uintptr_t a, int64_t a_size, uintptr_t b, int64_t b_size, uintptr_t y, int64_t y_size, int64_t n,
                   double atol, double rtol, int dtype) {
  check(n >= 0 && a_size >= n && y_size >= n && (b == 0 || b_size >= n), "scaled_norm: a buffer is shorter than n");
  check(n == 0 || (a != 0 && y != 0), "scaled_norm: null pointer");
  ReleaseGilIfLarge release(n);
  if (dtype == static_cast<int>(pyode::DType::kFloat32))
    return pyode::scaled_norm_cpu<float>(reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(b),
                                         reinterpret_cast<const float*>(y), n, atol, rtol);
  check(dtype == static_cast<int>(pyode::DType::kFloat64), "scaled_norm: unsupported dtype");
  return pyode::scaled_norm_cpu<double>(reinterpret_cast<const double*>(a), reinterpret_cast<const double*>(b),
                                        reinterpret_cast<const double*>(y), n, atol, rtol);
}


}  // namespace

#ifdef _OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyode compiled CPU kernels (raw-buffer API; use pyode._kernels, not this module directly)";
  m.def("lincomb", &lincomb, "out[r] = base + sum_j w[r, j] * k_j");
  m.def("rk_finish", &rk_finish, "y1, error and scaled RMS error norm of a Runge-Kutta step in one pass");
  m.def("scaled_norm", &scaled_norm, "RMS of (a - b) / (atol + rtol |y|)");
  py::class_<pyode::RKWorkspace>(m, "RKWorkspace", "Per-solve fused RK step state (see rk_workspace.h)")
      .def(py::init<int64_t, std::vector<double>, std::vector<double>, std::vector<double>, int64_t, int>())
      .def("set_base", &pyode::RKWorkspace::set_base)
      .def("set_term", &pyode::RKWorkspace::set_term)
      .def("set_segments", &pyode::RKWorkspace::set_segments)
      .def("set_interpolant", &pyode::RKWorkspace::set_interpolant)
      .def("set_error_carry", &pyode::RKWorkspace::set_error_carry)
      .def("stage",
           [](pyode::RKWorkspace& ws, int64_t i, uintptr_t out, int64_t out_numel, double h, uintptr_t prev,
              int64_t prev_numel) {
             ReleaseGilIfLarge release(ws.n());
             ws.stage(i, out, out_numel, h, prev, prev_numel);
           },
           py::arg("i"), py::arg("out"), py::arg("out_numel"), py::arg("h"), py::arg("prev") = 0,
           py::arg("prev_numel") = 0)
      .def("finish",
           [](pyode::RKWorkspace& ws, uintptr_t y1, int64_t y1_numel, double h, double atol, double rtol,
              bool y1_given, uintptr_t last, int64_t last_numel) {
             ReleaseGilIfLarge release(ws.n());
             return ws.finish(y1, y1_numel, h, atol, rtol, y1_given, last, last_numel);
           },
           py::arg("y1"), py::arg("y1_numel"), py::arg("h"), py::arg("atol"), py::arg("rtol"), py::arg("y1_given"),
           py::arg("last") = 0, py::arg("last_numel") = 0)
      .def("dense",
           [](pyode::RKWorkspace& ws, uintptr_t out, int64_t out_numel, const std::vector<double>& thetas, double h,
              uintptr_t f1, int64_t f1_numel) {
             ReleaseGilIfLarge release(ws.n() * static_cast<int64_t>(thetas.size()));
             ws.dense(out, out_numel, thetas, h, f1, f1_numel);
           })
      .def("segment_norms", &pyode::RKWorkspace::segment_norms);
  py::class_<pyode::PerSampleWorkspace>(m, "PerSampleWorkspace", "Fused per-sample step sizes (see per_sample.h)")
      .def(py::init([](int64_t s, std::vector<double> a, std::vector<double> c, std::vector<double> e,
                       std::vector<double> p, std::vector<double> t_out, int64_t rows, int64_t width, int dtype,
                       double safety, double ifactor, double dfactor, double b1, double b2, double b3,
                       double min_step, double max_step, double atol, double rtol, int64_t max_num_steps,
                       int64_t stall_limit) {
        const pyode::PerSampleConfig cfg{{b1, b2, b3, safety, ifactor, dfactor}, min_step, max_step, atol, rtol,
                                         max_num_steps, stall_limit};
        return new pyode::PerSampleWorkspace(s, std::move(a), std::move(c), std::move(e), std::move(p),
                                             std::move(t_out), rows, width, dtype, cfg);
      }))
      .def("set_state", &pyode::PerSampleWorkspace::set_state)
      .def("set_first_step", &pyode::PerSampleWorkspace::set_first_step)
      .def("begin_round", &pyode::PerSampleWorkspace::begin_round)
      .def("stage_times", &pyode::PerSampleWorkspace::stage_times)
      .def("stage", &pyode::PerSampleWorkspace::stage)
      .def("finish",
           [](pyode::PerSampleWorkspace& ws, uintptr_t y1, int64_t y1_numel, uintptr_t last, int64_t last_numel) {
             const pyode::RoundStatus st = ws.finish(y1, y1_numel, last, last_numel);
             return py::make_tuple(st.active, st.kind, st.row, st.t_row, st.t_min);
           })
      .def("accepted", &pyode::PerSampleWorkspace::accepted)
      .def("rejected", &pyode::PerSampleWorkspace::rejected);
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.def(
      "set_non_temporal",
      [](int64_t min_bytes) {
        pyode::check(min_bytes >= 0, "set_non_temporal: min_bytes must be >= 0");
        pyode::non_temporal_min_bytes.store(min_bytes);
      },
      "Stage inputs (single-row lincomb outputs) of >= min_bytes are written around the cache.");
  m.def("non_temporal", []() { return pyode::non_temporal_min_bytes.load(); });
  m.def("max_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
}
