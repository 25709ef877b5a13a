// pybind11 bindings of pyode._C. Registration and argument checking only; the maths lives in cpu/.
//
// Buffers arrive as torch tensors (anything with data_ptr() and numel(); None for "no buffer"), whose address
// and capacity in elements the binding reads itself (Buffer), with keyword arguments. The Python layer has already
// validated dtype, device and contiguity. Here every size is checked again against what the kernel will touch,
// so a wrong call raises instead of reading out of bounds.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "pyode/arg_checks.h"
#include "pyode/dispatch.h"

#include "pyode/lincomb.h"
#include "pyode/rk_finish.h"
#include "pyode/py_buffer.h"
#include "pyode/py_gil.h"
#include "pyode/rk_workspace.h"
#include "pyode/scaled_norm.h"
#include "pyode/stream_terms.h"

namespace py = pybind11;
using pyode::Buffer;
using pyode::buffer_of;
using pyode::check;
using pyode::ReleaseGilIfLarge;

namespace {

using Ptrs = std::vector<uintptr_t>;
using Sizes = std::vector<int64_t>;


// The addresses and capacities of a list of tensors (a step's stage derivatives).
std::pair<Ptrs, Sizes> buffers_of(const std::vector<py::handle>& tensors) {
  Ptrs ptrs;
  Sizes sizes;
  for (py::handle t : tensors) {
    const Buffer b = buffer_of(t);
    ptrs.push_back(b.ptr);
    sizes.push_back(b.numel);
  }
  return {ptrs, sizes};
}

// out (rows x n, row-major) = base + w @ ks, w rows x len(ks) row-major; base None: from 0.
void lincomb(py::handle out_t, int64_t rows, int64_t n, py::handle base_t, const std::vector<py::handle>& ks_t,
             const std::vector<double>& w, int dtype) {
  const Buffer out = buffer_of(out_t), base = buffer_of(base_t);
  const auto [ks, k_sizes] = buffers_of(ks_t);
  pyode::check_lincomb_sizes(out.numel, n, base.ptr, base.numel, ks.size(), w.size(), rows, n);
  std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "lincomb");
  pyode::LincombArgs args{reinterpret_cast<void*>(out.ptr), n, reinterpret_cast<const void*>(base.ptr),
                          terms.data(), static_cast<int64_t>(terms.size()), w.data(), rows, n};
  const pyode::DType type = pyode::dtype_from_code(dtype, "lincomb");
  ReleaseGilIfLarge release(n * rows);
  pyode::dispatch_floating(type, [&](auto tag) { pyode::lincomb_cpu<typename decltype(tag)::type>(args); });
}

// y1 (None: not written), the error (err None: not written) and the scaled RMS error norm of a step from y0 with
// stage derivatives ks; seg_offsets (int64, nseg + 1 entries) and seg_norms (float64, nseg): per-segment norms.
double rk_finish(py::handle y1_t, py::handle err_t, py::handle y0_t, const std::vector<py::handle>& ks_t,
                 const std::vector<double>& b, const std::vector<double>& e, double atol, double rtol,
                 py::handle seg_offsets_t, py::handle seg_norms_t, int dtype) {
  const Buffer y1 = buffer_of(y1_t), err = buffer_of(err_t), y0 = buffer_of(y0_t);
  const Buffer seg_offsets = buffer_of(seg_offsets_t), seg_norms = buffer_of(seg_norms_t);
  const auto [ks, k_sizes] = buffers_of(ks_t);
  const int64_t n = y0.numel, nseg = seg_offsets.ptr == 0 ? 0 : seg_offsets.numel - 1;
  pyode::check_finish_sizes(y1.numel, err.ptr, err.numel, y0.numel, ks.size(), b.size(), e.size(), n, atol, rtol);
  check(y1.ptr != 0 || n == 0, "rk_finish: y1 is None");
  check(seg_offsets.ptr == 0 || nseg >= 1, "rk_finish: seg_offsets must hold nseg + 1 >= 2 offsets");
  check(seg_norms.ptr == 0 || seg_norms.numel >= std::max<int64_t>(nseg, 1),
        "rk_finish: seg_norms shorter than nseg");
  const auto* offsets = reinterpret_cast<const int64_t*>(seg_offsets.ptr);
  if (offsets != nullptr) {
    check(offsets[0] == 0 && offsets[nseg] == n, "rk_finish: seg_offsets must start at 0 and end at n");
    for (int64_t q = 0; q < nseg; ++q) check(offsets[q] <= offsets[q + 1], "rk_finish: seg_offsets must increase");
  }
  std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "rk_finish");
  pyode::FinishArgs args{reinterpret_cast<void*>(y1.ptr), reinterpret_cast<void*>(err.ptr),
                         reinterpret_cast<const void*>(y0.ptr), terms.data(), static_cast<int64_t>(terms.size()),
                         b.empty() ? nullptr : b.data(), e.empty() ? nullptr : e.data(), n, atol, rtol, offsets, nseg,
                         reinterpret_cast<double*>(seg_norms.ptr)};
  const pyode::DType type = pyode::dtype_from_code(dtype, "rk_finish");
  ReleaseGilIfLarge release(n);
  return pyode::dispatch_floating(type, [&](auto tag) {
    return pyode::rk_finish_cpu<typename decltype(tag)::type>(args);
  });
}

// RMS of (a - b) / (atol + rtol |y|) over y's n elements (b None: of a / scale).
double scaled_norm(py::handle a_t, py::handle b_t, py::handle y_t, double atol, double rtol, int dtype) {
  const Buffer a = buffer_of(a_t), b = buffer_of(b_t), y = buffer_of(y_t);
  const int64_t n = y.numel;
  check(a.numel >= n && (b.ptr == 0 || b.numel >= n), "scaled_norm: a buffer is shorter than n");
  check(n == 0 || (a.ptr != 0 && y.ptr != 0), "scaled_norm: null pointer");
  const pyode::DType type = pyode::dtype_from_code(dtype, "scaled_norm");
  ReleaseGilIfLarge release(n);
  return pyode::dispatch_floating(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return pyode::scaled_norm_cpu<T>(reinterpret_cast<const T*>(a.ptr), reinterpret_cast<const T*>(b.ptr),
                                     reinterpret_cast<const T*>(y.ptr), n, atol, rtol);
  });
}

// The workspaces as Python sees them: each registered address comes with the object that owns the memory, held
// in the slot of what it was registered as until that slot is registered again or the workspace dies, so a
// buffer cannot be freed while the workspace points into it. A slot is pinned before the call that registers
// it: a call that fails then holds one reference too many, never one too few.
class PinnedRKWorkspace : public pyode::RKWorkspace {
 public:
  PinnedRKWorkspace(int64_t s, std::vector<double> a, std::vector<double> b, std::vector<double> e, int64_t n,
                    int dtype)
      : RKWorkspace(s, std::move(a), std::move(b), std::move(e), n, pyode::dtype_from_code(dtype, "RKWorkspace")),
        pins_(static_cast<size_t>(std::max<int64_t>(s, 0)) + 3) {}

  void set_base(const Buffer& y0) {
    pins_[0] = y0.owner;
    RKWorkspace::set_base(y0.ptr, y0.numel);
  }
  void set_term(int64_t j, const Buffer& k) {
    pin_term(j, k);
    RKWorkspace::set_term(j, k.ptr, k.numel);
  }
  bool set_error_carry(const Buffer& carry) {
    pins_.back() = carry.owner;
    return RKWorkspace::set_error_carry(carry.ptr, carry.numel);
  }
  void stage(int64_t i, const Buffer& out, double h, const Buffer& prev) {
    if (prev.ptr != 0) pin_term(i - 1, prev);
    ReleaseGilIfLarge release(n());
    RKWorkspace::stage(i, out.ptr, out.numel, h, prev.ptr, prev.numel);
  }
  double finish(const Buffer& y1, double h, double atol, double rtol, bool y1_given, const Buffer& last) {
    if (last.ptr != 0) pin_term(num_stages() - 1, last);
    ReleaseGilIfLarge release(n());
    return RKWorkspace::finish(y1.ptr, y1.numel, h, atol, rtol, y1_given, last.ptr, last.numel);
  }
  void dense(const Buffer& out, const std::vector<double>& thetas, double h, const Buffer& f1) {
    if (f1.ptr != 0) pin_term(num_stages(), f1);
    ReleaseGilIfLarge release(n() * static_cast<int64_t>(thetas.size()));
    RKWorkspace::dense(out.ptr, out.numel, thetas, h, f1.ptr, f1.numel);
  }

 private:
  void pin_term(int64_t j, const Buffer& k) {  // slots: 0 base, 1 + j term j (j <= s), s + 2 error carry
    if (j >= 0 && j <= num_stages()) pins_[static_cast<size_t>(j) + 1] = k.owner;
  }
  std::vector<py::object> pins_;
};

// Buffers are passed as tensors (see Buffer): `py::arg("prev") = py::none()` means "no buffer".
void bind_rk_workspace(py::module_& m) {
  py::class_<PinnedRKWorkspace>(m, "RKWorkspace", "Per-solve fused RK step state (see rk_workspace.h)")
      .def(py::init<int64_t, std::vector<double>, std::vector<double>, std::vector<double>, int64_t, int>(),
           py::arg("num_stages"), py::arg("a"), py::arg("b"), py::arg("e"), py::arg("n"), py::arg("dtype"))
      .def("set_base", [](PinnedRKWorkspace& ws, py::handle y0) { ws.set_base(buffer_of(y0)); }, py::arg("y0"))
      .def("set_term", [](PinnedRKWorkspace& ws, int64_t j, py::handle k) { ws.set_term(j, buffer_of(k)); },
           py::arg("j"), py::arg("k"))
      .def("set_segments", &PinnedRKWorkspace::set_segments)
      .def("set_interpolant", &PinnedRKWorkspace::set_interpolant)
      .def("set_error_carry",
           [](PinnedRKWorkspace& ws, py::handle carry) { return ws.set_error_carry(buffer_of(carry)); },
           py::arg("carry"))
      .def("stage",
           [](PinnedRKWorkspace& ws, int64_t i, py::handle out, double h, py::handle prev) {
             ws.stage(i, buffer_of(out), h, buffer_of(prev));
           },
           py::arg("i"), py::arg("out"), py::arg("h"), py::arg("prev") = py::none())
      .def("finish",
           [](PinnedRKWorkspace& ws, py::handle y1, double h, double atol, double rtol, bool y1_given,
              py::handle last) { return ws.finish(buffer_of(y1), h, atol, rtol, y1_given, buffer_of(last)); },
           py::arg("y1"), py::arg("h"), py::arg("atol"), py::arg("rtol"), py::arg("y1_given"),
           py::arg("last") = py::none())
      .def("dense",
           [](PinnedRKWorkspace& ws, py::handle out, const std::vector<double>& thetas, double h, py::handle f1) {
             ws.dense(buffer_of(out), thetas, h, buffer_of(f1));
           },
           py::arg("out"), py::arg("thetas"), py::arg("h"), py::arg("f1") = py::none())
      .def("segment_norms", &PinnedRKWorkspace::segment_norms);
}

void bind_workspaces(py::module_& m) {
  bind_rk_workspace(m);
}

}  // namespace

#ifdef _OPENMP
#include <omp.h>
#endif

void bind_native_call(py::module_& m);  // native_call.cpp
void bind_torch_rhs(py::module_& m);    // torch_rhs.cpp
void bind_per_sample_rows(py::module_& m);  // per_sample_rows.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyode compiled CPU kernels (raw-buffer API; use pyode._kernels, not this module directly)";
  // The kernels take tensors (anything with data_ptr() and numel(); None for "no buffer") and keywords only.
  m.def("lincomb", &lincomb, "out[r] = base + sum_j w[r, j] * k_j", py::kw_only(), py::arg("out"), py::arg("rows"),
        py::arg("n"), py::arg("base"), py::arg("ks"), py::arg("weights"), py::arg("dtype"));
  m.def("rk_finish", &rk_finish, "y1, error and scaled RMS error norm of a Runge-Kutta step in one pass",
        py::kw_only(), py::arg("y1"), py::arg("err"), py::arg("y0"), py::arg("ks"), py::arg("b"), py::arg("e"),
        py::arg("atol"), py::arg("rtol"), py::arg("seg_offsets"), py::arg("seg_norms"), py::arg("dtype"));
  m.def("scaled_norm", &scaled_norm, "RMS of (a - b) / (atol + rtol |y|)", py::kw_only(), py::arg("a"),
        py::arg("b"), py::arg("y"), py::arg("atol"), py::arg("rtol"), py::arg("dtype"));
  bind_workspaces(m);
  bind_native_call(m);
  bind_torch_rhs(m);
  bind_per_sample_rows(m);
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
