// pyode._C.NativeCall: pyode.native.solve's call into the native solver (libpyode_native's pyode_solve_jac,
// reached by its address, so _C links nothing of it) on NumPy arrays.
//
// A small stiff solve takes tens of microseconds in C; building the problem struct and five buffers through
// cffi cost about as much again. Here the fixed parts (method, options, functions) are bound once per plan and
// each call passes only the arrays; every size is checked against what the solver will touch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "pyode/arg_checks.h"
#include "pyode/pyode_native.h"

namespace py = pybind11;
using pyode::check;

namespace {

using SolveJacFn = decltype(&pyode_solve_jac);

// The float64 C-contiguous data of `a` (name in errors), at least `need` elements.
const double* doubles(const py::array& a, const char* name, int64_t need) {
  // By type number and byte order: an unpickled array's dtype is equal to float64's but not the same object.
  const py::dtype dt = a.dtype();
  check(dt.num() == py::dtype::of<double>().num() && dt.byteorder() != '>', std::string(name) + " must be float64");
  check((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
  check(a.size() >= need, std::string(name) + " is shorter than the problem needs");
  return static_cast<const double*>(a.data());
}

double* writable_doubles(py::array& a, const char* name, int64_t need) {
  check(a.writeable(), std::string(name) + " must be writable");
  doubles(a, name, need);
  return static_cast<double*>(a.mutable_data());
}

// The fixed half of a native solve: the solver, method, options and compiled functions (addresses), and
// `keep`, the Python objects that own them (cffi structs, their arrays, the compiled functions).
class NativeCall {
 public:
  NativeCall(uintptr_t solve, uintptr_t method, uintptr_t options, uintptr_t rhs, uintptr_t jac, uintptr_t event,
             py::object keep)
      : solve_(reinterpret_cast<SolveJacFn>(solve)),
        method_(reinterpret_cast<const pyode_method*>(method)),
        options_(reinterpret_cast<const pyode_options*>(options)),
        rhs_(reinterpret_cast<pyode_rhs_fn>(rhs)),
        jac_(reinterpret_cast<pyode_jac_fn>(jac)),
        event_(reinterpret_cast<pyode_event_fn>(event)),
        keep_(std::move(keep)) {
    check(solve_ != nullptr && method_ != nullptr && options_ != nullptr && rhs_ != nullptr,
          "NativeCall: solve, method, options and rhs must not be NULL");
  }

  // Solves M trajectories of size n with k parameters (params_stride 0: shared, k: a row each) at the T = t.size
  // times into ys (T, M, n), y_event (M, n) or None, stats (M,) pyode_traj_stats records; returns the solver's
  // return code (PYODE_OK, or PYODE_EINVAL with pyode_last_error() set). The GIL is released for the solve.
  int32_t run(const py::array& y0, int64_t M, int64_t n, const py::array& params, int64_t k, int64_t params_stride,
              const py::array& t, py::array& ys, py::object y_event, py::array& stats, bool stop_on_sigint) const {
    check(M >= 1 && n >= 1 && k >= 0 && (params_stride == 0 || params_stride == k), "NativeCall.run: bad sizes");
    pyode_problem p{};
    p.num_traj = M, p.n = n, p.num_params = k, p.params_stride = params_stride, p.num_times = t.size();
    p.y0 = doubles(y0, "y0", M * n), p.y0_len = y0.size();
    p.params = doubles(params, "params", params_stride == 0 ? k : M * k), p.params_len = params.size();
    p.t = doubles(t, "t", 1), p.t_len = t.size();
    p.ys = writable_doubles(ys, "ys", p.num_times * M * n), p.ys_len = ys.size();
    if (!y_event.is_none()) {
      auto ye = y_event.cast<py::array>();
      p.y_event = writable_doubles(ye, "y_event", M * n), p.y_event_len = ye.size();
    }
    check(stats.writeable() && (stats.flags() & py::array::c_style) != 0 &&
              stats.itemsize() == static_cast<py::ssize_t>(sizeof(pyode_traj_stats)) && stats.size() >= M,
          "stats must be a writable (M,) array of pyode_traj_stats records");
    auto* st = static_cast<pyode_traj_stats*>(stats.mutable_data());
    pyode_options o = *options_;  // this call's copy: stop_on_sigint is per call
    o.stop_on_sigint = stop_on_sigint ? 1 : 0;
    py::gil_scoped_release released;
    return solve_(method_, &o, rhs_, jac_, event_, &p, st, M);
  }

 private:
  SolveJacFn solve_;
  const pyode_method* method_;
  const pyode_options* options_;
  pyode_rhs_fn rhs_;
  pyode_jac_fn jac_;
  pyode_event_fn event_;
  py::object keep_;
};

}  // namespace

void bind_native_call(py::module_& m) {
  py::class_<NativeCall>(m, "NativeCall", "One native solve's fixed parts; run(...) solves on NumPy arrays")
      .def(py::init<uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, py::object>(),
           py::arg("solve"), py::arg("method"), py::arg("options"), py::arg("rhs"), py::arg("jac"),
           py::arg("event"), py::arg("keep"))
      .def("run", &NativeCall::run, py::arg("y0").noconvert(), py::arg("M"), py::arg("n"),
           py::arg("params").noconvert(), py::arg("k"), py::arg("params_stride"), py::arg("t").noconvert(),
           py::arg("ys").noconvert(), py::arg("y_event"), py::arg("stats").noconvert(), py::arg("stop_on_sigint"));
}
