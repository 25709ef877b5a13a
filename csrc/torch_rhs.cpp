// pyode._C.TorchRhs: the C++ loop's right-hand side for a torch `func`, a plain C function that calls Python
// through the C API, and run_native_solve, which calls the native solver (libpyode_native's pyode_solve_jac or
// pyode_solve_f32, by address) with the GIL released.
//
// The torch path's solves run the same C++ loop as pyode.native's compiled right-hand sides (core/solve_loop.h).
// Its right-hand side calls back into Python once per evaluation; around a small func a cffi callback cost about
// as much as func itself (arguments boxed as cdata, the output's address cast and copied by Python code). Here
// the trampoline takes the GIL, copies the loop's state into one tensor the solve owns, calls `call(s)` (a Python
// closure running func on that tensor, see pyode/_solvers/core_loop.py), copies the returned tensor's n values
// into the loop's buffer and releases the GIL: the loop's own work runs without it.
//
// The context reaches the trampoline as the C ABI's user data (the problem's params pointer: the solver passes it
// to rhs untouched). An exception from `call` (KeyboardInterrupt included) is kept, the solve's cancel flag is
// set (every row stops at its next step) and take_error() hands the same exception object back.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "pyode/arg_checks.h"
#include "pyode/py_buffer.h"
#include "pyode/pyode_native.h"

namespace py = pybind11;
using pyode::Buffer;
using pyode::buffer_of;
using pyode::check;

namespace {

class TorchRhs {
 public:
  // call(s) -> tensor of the state's n values (contiguous, the state's dtype, on the CPU: FlatFunc's checks);
  // y_in: the tensor call runs func on ((n,) values of the state's dtype, item_size bytes each); cancel: the
  // address of the solve's int32 cancel flag (pyode_options.cancel).
  TorchRhs(py::function call, py::object y_in, int64_t n, int item_size, uintptr_t cancel)
      : call_(std::move(call)), y_in_(std::move(y_in)), n_(n), item_size_(item_size),
        cancel_(reinterpret_cast<int32_t*>(cancel)) {
    check(n >= 0 && (item_size == 4 || item_size == 8), "TorchRhs: n must be >= 0 and item_size 4 or 8");
    check(cancel_ != nullptr, "TorchRhs: cancel must be the address of the solve's cancel flag");
    const Buffer v = buffer_of(y_in_);
    check(v.numel >= n && (v.ptr != 0 || n == 0), "TorchRhs: y_in holds fewer than n values");
    y_in_ptr_ = reinterpret_cast<char*>(v.ptr);
  }

  uintptr_t context() const { return reinterpret_cast<uintptr_t>(this); }
  // The C function for the state's type: pyode_rhs_fn (item_size 8) or pyode_rhs_f32_fn (4).
  uintptr_t function() const {
    return item_size_ == 8 ? reinterpret_cast<uintptr_t>(&rhs<double>) : reinterpret_cast<uintptr_t>(&rhs<float>);
  }
  // The exception call raised (None if none), cleared.
  py::object take_error() {
    py::object error = std::move(error_);
    error_ = py::none();
    return error;
  }

 private:
  template <class T>
  static void rhs(double t, const T* y, T* dy, const T* p) {
    auto* self = reinterpret_cast<TorchRhs*>(reinterpret_cast<uintptr_t>(p));
    const PyGILState_STATE gil = PyGILState_Ensure();
    // cancelled (an exception here or in another callback): the loop stops at its next step, discarding values
    if (__atomic_load_n(self->cancel_, __ATOMIC_RELAXED) == 0) self->evaluate(t, y, dy);
    PyGILState_Release(gil);
  }

  void evaluate(double t, const void* y, void* dy) {
    const size_t bytes = static_cast<size_t>(n_) * item_size_;
    if (bytes != 0) std::memcpy(y_in_ptr_, y, bytes);
    PyObject* s = PyFloat_FromDouble(t);
    PyObject* out = s == nullptr ? nullptr : PyObject_CallOneArg(call_.ptr(), s);
    Py_XDECREF(s);
    if (out != nullptr) {
      copy_out(out, dy, bytes);
      Py_DECREF(out);
    }
    if (PyErr_Occurred()) keep_error();
  }

  // func's output (n values) into dy; a Python error set instead if it is not a tensor or holds fewer values.
  // Nothing may be thrown from here: the caller is the native solver's C code.
  void copy_out(PyObject* out, void* dy, size_t bytes) const {
    try {
      const Buffer v = buffer_of(out);
      check(v.numel >= n_ && (v.ptr != 0 || n_ == 0), "func's output holds fewer values than the state");
      if (bytes != 0) std::memcpy(dy, reinterpret_cast<const void*>(v.ptr), bytes);
    } catch (py::error_already_set& e) {
      e.restore();
    } catch (const py::builtin_exception& e) {  // buffer_of's TypeError for an object that is not a tensor
      e.set_error();
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  }

  void keep_error() {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != nullptr && value != nullptr) PyException_SetTraceback(value, tb);
    error_ = value != nullptr ? py::reinterpret_steal<py::object>(value) : py::reinterpret_steal<py::object>(type);
    if (value != nullptr) Py_XDECREF(type);
    Py_XDECREF(tb);
    __atomic_store_n(cancel_, 1, __ATOMIC_RELAXED);  // every row stops at its next step
  }

  py::function call_;
  py::object y_in_;
  char* y_in_ptr_ = nullptr;
  int64_t n_;
  int item_size_;
  int32_t* cancel_;
  py::object error_ = py::none();
};

using SolveJacFn = decltype(&pyode_solve_jac);
using SolveF32Fn = decltype(&pyode_solve_f32);

// Calls the native solver at `solve` (pyode_solve_jac, or with f32 pyode_solve_f32) on the cffi structs at the
// given addresses, with the GIL released (the callbacks take it for each call into Python: ~0.06 us a call more
// than holding it throughout, measured around a trivial func). Returns the solver's return code.
int32_t run_native_solve(uintptr_t solve, bool f32, uintptr_t method, uintptr_t options, uintptr_t rhs,
                         uintptr_t jac, uintptr_t event, uintptr_t problem, uintptr_t stats, int64_t stats_len) {
  check(solve != 0 && method != 0 && options != 0 && rhs != 0 && problem != 0 && stats != 0,
        "run_native_solve: solve, method, options, rhs, problem and stats must not be NULL");
  const auto* m = reinterpret_cast<const pyode_method*>(method);
  const auto* o = reinterpret_cast<const pyode_options*>(options);
  auto* st = reinterpret_cast<pyode_traj_stats*>(stats);
  py::gil_scoped_release released;
  if (f32) {
    check(jac == 0, "run_native_solve: float32 solves take no Jacobian");
    return reinterpret_cast<SolveF32Fn>(solve)(m, o, reinterpret_cast<pyode_rhs_f32_fn>(rhs),
                                               reinterpret_cast<pyode_event_f32_fn>(event),
                                               reinterpret_cast<const pyode_problem_f32*>(problem), st, stats_len);
  }
  return reinterpret_cast<SolveJacFn>(solve)(m, o, reinterpret_cast<pyode_rhs_fn>(rhs),
                                             reinterpret_cast<pyode_jac_fn>(jac),
                                             reinterpret_cast<pyode_event_fn>(event),
                                             reinterpret_cast<const pyode_problem*>(problem), st, stats_len);
}

}  // namespace

void bind_torch_rhs(py::module_& m) {
  py::class_<TorchRhs>(m, "TorchRhs", "The C++ loop's right-hand side for a torch func (see torch_rhs.cpp)")
      .def(py::init<py::function, py::object, int64_t, int, uintptr_t>(), py::kw_only(), py::arg("call"),
           py::arg("y_in"), py::arg("n"), py::arg("item_size"), py::arg("cancel"))
      .def_property_readonly("context", &TorchRhs::context)
      .def_property_readonly("function", &TorchRhs::function)
      .def("take_error", &TorchRhs::take_error);
  m.def("run_native_solve", &run_native_solve, "Calls the native solver by address with the GIL released",
        py::kw_only(), py::arg("solve"), py::arg("f32"), py::arg("method"), py::arg("options"), py::arg("rhs"),
        py::arg("jac"), py::arg("event"), py::arg("problem"), py::arg("stats"), py::arg("stats_len"));
}
