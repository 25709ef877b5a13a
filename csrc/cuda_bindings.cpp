// pybind11 bindings of pyode._C_cuda: the CUDA kernels, in a module of their own linked to the static CUDA
// runtime, so that it imports (and reports "no device") on machines without a GPU or driver, and the CPU
// module pyode._C never depends on CUDA. Registration and argument checking only; kernels live in cuda/.
//
// Buffers arrive as (device address, capacity-in-elements) pairs taken from torch tensors by
// pyode._kernels.cuda, which has checked dtype, device and contiguity; sizes are rechecked here. Device
// memory is never read on the host: segment tables are trusted to match the sizes they are passed with.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pyode/arg_checks.h"
#include "pyode/dispatch.h"

#include "cuda_kernels.h"

namespace py = pybind11;
using pyode::check;

namespace {

using Ptrs = std::vector<uintptr_t>;
using Sizes = std::vector<int64_t>;

// Where to run: the device ordinal and a cudaStream_t handle (torch.cuda.current_stream().cuda_stream).
pyode::cuda::Launch make_launch(int device, uintptr_t stream) {
  check(device >= 0, "device must be a CUDA device ordinal >= 0, got " + std::to_string(device));
  return {device, reinterpret_cast<void*>(stream)};
}

void lincomb(uintptr_t out, int64_t out_size, int64_t out_row_stride, uintptr_t base, int64_t base_size,
             const Ptrs& ks, const Sizes& k_sizes, const std::vector<double>& w, int64_t m, int64_t n, int dtype,
             int device, uintptr_t stream) {
  pyode::check_lincomb_sizes(out_size, out_row_stride, base, base_size, ks.size(), w.size(), m, n);
  const std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "lincomb");
  const pyode::LincombArgs args{reinterpret_cast<void*>(out), out_row_stride, reinterpret_cast<const void*>(base),
                                terms.data(), static_cast<int64_t>(terms.size()), w.data(), m, n};
  const pyode::cuda::Launch launch = make_launch(device, stream);
  const pyode::DType type = pyode::dtype_from_code(dtype, "lincomb");
  py::gil_scoped_release no_gil;
  pyode::dispatch_floating(type, [&](auto tag) {
    pyode::cuda::lincomb_cuda<typename decltype(tag)::type>(args, launch);
  });
}

// The buffers of one rk_finish call besides the state: segment tables, partial sums and norms.
struct FinishBuffers {
  uintptr_t seg_offsets, chunk_starts;  // device (nseg + 1,) int64 each, or both 0
  int64_t nseg, nchunks;
  uintptr_t partials;                   // device float64 (>= nchunks)
  int64_t partials_size;
  uintptr_t norms;                      // device float64 (1 + nseg): [global, per segment...]
  int64_t norms_size;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_buffers(const FinishBuffers& buf, int64_t n, bool has_e) {
  const bool segmented = buf.seg_offsets != 0;
  check(segmented == (buf.chunk_starts != 0), "rk_finish: seg_offsets and chunk_starts come together");
  check(!segmented || buf.nseg >= 1, "rk_finish: nseg must be >= 1 with seg_offsets");
  check(buf.nchunks >= 0 && buf.nchunks < (int64_t(1) << 31), "rk_finish: nchunks out of range");
  check(segmented || buf.nchunks == ceil_div(n, pyode::cuda::kFinishChunk),
        "rk_finish: nchunks must be ceil(n / chunk_elements) without segments");
  check(segmented || n == 0 || buf.nchunks >= 1, "rk_finish: nchunks must be >= 1");
  if (!has_e) return;
  check(buf.partials != 0 || buf.nchunks == 0, "rk_finish: partials is a null pointer");
  check(buf.partials_size >= buf.nchunks, "rk_finish: partials shorter than nchunks");
  check(buf.norms != 0 && buf.norms_size >= 1 + (segmented ? buf.nseg : 0),
        "rk_finish: norms must hold 1 + nseg values");
}

void rk_finish_async(uintptr_t y1, int64_t y1_size, uintptr_t err_out, int64_t err_size, uintptr_t y0,
                     int64_t y0_size, const Ptrs& ks, const Sizes& k_sizes, const std::vector<double>& b,
                     const std::vector<double>& e, int64_t n, double atol, double rtol, const FinishBuffers& buf,
                     int dtype, int device, uintptr_t stream) {
  pyode::check_finish_sizes(y1_size, err_out, err_size, y0_size, ks.size(), b.size(), e.size(), n, atol, rtol);
  check_buffers(buf, n, !e.empty());
  const std::vector<const void*> terms = pyode::checked_terms(ks, k_sizes, n, "rk_finish");
  auto* norms = reinterpret_cast<double*>(buf.norms);
  const pyode::FinishArgs args{reinterpret_cast<void*>(y1), reinterpret_cast<void*>(err_out),
                               reinterpret_cast<const void*>(y0), terms.data(), static_cast<int64_t>(terms.size()),
                               b.empty() ? nullptr : b.data(), e.empty() ? nullptr : e.data(), n, atol, rtol,
                               reinterpret_cast<const int64_t*>(buf.seg_offsets), buf.nseg,
                               norms == nullptr ? nullptr : norms + 1};
  const pyode::cuda::FinishWork work{reinterpret_cast<const int64_t*>(buf.chunk_starts), buf.nchunks,
                                     reinterpret_cast<double*>(buf.partials), norms};
  const pyode::cuda::Launch launch = make_launch(device, stream);
  const pyode::DType type = pyode::dtype_from_code(dtype, "rk_finish");
  py::gil_scoped_release no_gil;
  pyode::dispatch_floating(type, [&](auto tag) {
    pyode::cuda::rk_finish_cuda<typename decltype(tag)::type>(args, work, launch);
  });
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "pyode CUDA kernels (raw device-buffer API; use pyode._kernels, not this module directly)";
  py::class_<FinishBuffers>(m, "FinishBuffers", "segment tables, partial sums and norms of one rk_finish call")
      .def(py::init<uintptr_t, uintptr_t, int64_t, int64_t, uintptr_t, int64_t, uintptr_t, int64_t>(),
           py::arg("seg_offsets"), py::arg("chunk_starts"), py::arg("nseg"), py::arg("nchunks"), py::arg("partials"),
           py::arg("partials_size"), py::arg("norms"), py::arg("norms_size"));
  m.def("lincomb", &lincomb, "out[r] = base + sum_j w[r, j] * k_j on the device, on the given stream");
  m.def("rk_finish_async", &rk_finish_async,
        "y1, error and RMS norms of a Runge-Kutta step; norms written to a device buffer, no synchronisation");
  m.def("device_count", &pyode::cuda::device_count, "visible CUDA devices (0 without a driver or GPU)");
  m.def("runtime_version", &pyode::cuda::runtime_version, "CUDA runtime version this module was linked with");
  m.def("driver_version", &pyode::cuda::driver_version, "CUDA driver version (0 without a driver)");
  m.attr("chunk_elements") = pyode::cuda::kFinishChunk;
  m.attr("max_terms") = pyode::cuda::kMaxTerms;
}
