// pyode._C.solve_per_sample: per-sample mode (every batch row its own t, h and controller) as R rows of the one
// solve loop (core/batched_rows.h: a RowSolver per row), with func called once per stage on the whole batch.
//
// Python hands in the method as data (RowMethod), the controller's parameters (ControllerParams), the (rows,
// width) state and f0, the (num_times, rows, width) output and `call(t_stage, y_stage)`, which runs func on the
// stage buffers y_stage (rows, width) at t_stage (rows,) and returns its output (rows, width). An output that
// records autograd stops the solve (the caller starts over on tensor ops). The rows' own work (stage sums, error
// norms, controller, dense output) runs with the GIL released on a large batch; `call` runs with it. An exception
// from call propagates as it is.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "pyode/arg_checks.h"
#include "pyode/core/batched_rows.h"
#include "pyode/dispatch.h"
#include "pyode/py_buffer.h"
#include "pyode/py_gil.h"

namespace py = pybind11;
using pyode::Buffer;
using pyode::buffer_of;
using pyode::check;

namespace {

// An adaptive explicit Runge-Kutta method as data (the arrays a core::Method points to): c, b, b_err (s each), a
// (s * s, row-major), the interpolant P (degree * num_terms, row-major; terms: the stages, and f1 without FSAL),
// FSAL flag and order.
struct RowMethod {
  int s = 0, order = 1, num_terms = 0;
  bool fsal = false;
  std::vector<double> c, a, b, b_err, P;

  pyode::core::Method view() const {
    check(s >= 2 && s <= pyode::core::kMaxStages, "RowMethod: num_stages must be 2..64");
    check(order >= 1, "RowMethod: order must be >= 1");
    check(c.size() == static_cast<size_t>(s) && b.size() == c.size() && b_err.size() == c.size() &&
              a.size() == static_cast<size_t>(s) * s,
          "RowMethod: c, b and b_err need num_stages entries and a num_stages**2");
    check(num_terms == (fsal ? s : s + 1), "RowMethod: num_terms must be num_stages (FSAL) or num_stages + 1");
    check(!P.empty() && P.size() % static_cast<size_t>(num_terms) == 0 && P.size() / num_terms <= 16,
          "RowMethod: P must be (degree <= 16, num_terms), row-major");
    pyode::core::Method m;
    m.s = s;
    m.order = order;
    m.fsal = fsal;
    m.c = c.data();
    m.a = a.data();
    m.b = b.data();
    m.b_err = b_err.data();
    m.interp_degree = static_cast<int>(P.size() / num_terms);
    m.num_terms = num_terms;
    m.P = P.data();
    return m;
  }
};

struct Buffers {
  Buffer y0, f0, out, y_stage, t_stage;
};

// call(t_stage, y_stage): func's output, or None when it records autograd (no solve can use it). Vectorcall:
// the rows call it once per stage.
py::object evaluate(const py::function& call, const Buffers& b) {
  PyObject* args[2] = {b.t_stage.owner.ptr(), b.y_stage.owner.ptr()};
  py::object f = py::reinterpret_steal<py::object>(PyObject_Vectorcall(call.ptr(), args, 2, nullptr));
  if (!f) throw py::error_already_set();
  static PyObject* const requires_grad = PyUnicode_InternFromString("requires_grad");
  const py::object recorded = py::reinterpret_steal<py::object>(PyObject_GetAttr(f.ptr(), requires_grad));
  if (!recorded) throw py::error_already_set();
  return PyObject_IsTrue(recorded.ptr()) == 1 ? py::none() : f;
}

// The rows' loop: gather every waiting row's point, call func on the batch, exchange its value for the rows' next
// points; until every row is done or one failed. Returns (calls, first failed row or -1, per-row stats), or None
// when func's output records autograd.
template <class T, class Time>
py::object run_rows(const pyode::core::Method& m, const pyode::core::LoopOptions& o, int64_t rows, int width,
                    const std::vector<double>& t_out, const Buffers& b, double sign, const py::function& call) {
  const int64_t n = rows * width;
  auto* y_stage = reinterpret_cast<T*>(b.y_stage.ptr);
  auto* t_stage = reinterpret_cast<Time*>(b.t_stage.ptr);
  std::unique_ptr<pyode::core::BatchedRows<T>> solve;
  {
    pyode::ReleaseGilIfLarge released(n);
    solve = std::make_unique<pyode::core::BatchedRows<T>>(
        m, o, rows, width, reinterpret_cast<const T*>(b.y0.ptr), reinterpret_cast<const T*>(b.f0.ptr), t_out.data(),
        static_cast<int64_t>(t_out.size()), reinterpret_cast<T*>(b.out.ptr), y_stage);
  }
  int64_t calls = 0, waiting = 0;
  {
    pyode::ReleaseGilIfLarge released(n);
    waiting = solve->gather(t_stage, sign);
  }
  while (waiting > 0 && solve->first_failed() < 0) {
    py::object f = evaluate(call, b);
    ++calls;
    if (f.is_none()) return py::none();
    const Buffer v = buffer_of(f);
    check(v.numel >= n && (v.ptr != 0 || n == 0), "func's output holds fewer values than the batch");
    pyode::ReleaseGilIfLarge released(n);
    waiting = solve->exchange(reinterpret_cast<const T*>(v.ptr), t_stage, sign);
  }
  py::list stats;
  for (int64_t r = 0; r < rows; ++r) {
    const pyode::core::RowStats st = solve->result(r);
    stats.append(py::make_tuple(static_cast<int>(st.status), st.t_reached, st.n_accepted, st.n_rejected));
  }
  return py::make_tuple(calls, solve->first_failed(), stats);
}

py::object solve_per_sample(const RowMethod& method, const pyode::core::ControllerParams& controller, double rtol,
                            double atol, int64_t max_num_steps, double first_step, const std::vector<double>& t_out,
                            py::handle y0, py::handle f0, py::handle out, py::handle y_stage, py::handle t_stage,
                            int dtype, int t_dtype, double sign, const py::function& call) {
  const pyode::core::Method m = method.view();
  check(t_out.size() >= 2, "solve_per_sample: t_out needs at least two times");
  for (size_t k = 1; k < t_out.size(); ++k) check(t_out[k] > t_out[k - 1], "solve_per_sample: t_out must increase");
  check(std::isfinite(first_step) && first_step > 0.0, "solve_per_sample: first_step must be positive and finite");
  check(max_num_steps >= 1, "solve_per_sample: max_num_steps must be >= 1");
  const Buffers b{buffer_of(y0), buffer_of(f0), buffer_of(out), buffer_of(y_stage), buffer_of(t_stage)};
  const int64_t rows = b.t_stage.numel, n = b.y0.numel;
  check(rows >= 1 && n % rows == 0 && n / rows >= 1 && n / rows <= INT32_MAX,
        "solve_per_sample: y0 must be (rows, width) with rows = t_stage's length and width >= 1");
  check(b.f0.numel >= n && b.y_stage.numel >= n && b.out.numel >= static_cast<int64_t>(t_out.size()) * n,
        "solve_per_sample: f0 and y_stage need rows * width values, out num_times * rows * width");
  pyode::core::LoopOptions o;
  o.rtol = rtol;
  o.atol = atol;
  o.controller = controller;
  o.controller.order = m.order;
  o.first_step = first_step;
  o.max_num_steps = max_num_steps;
  const int width = static_cast<int>(n / rows);
  return pyode::dispatch_floating(pyode::dtype_from_code(dtype, "solve_per_sample (state)"), [&](auto tag) {
    using T = typename decltype(tag)::type;
    return pyode::dispatch_floating(pyode::dtype_from_code(t_dtype, "solve_per_sample (times)"), [&](auto time) {
      return run_rows<T, typename decltype(time)::type>(m, o, rows, width, t_out, b, sign, call);
    });
  });
}

}  // namespace

void bind_per_sample_rows(py::module_& m) {
  py::class_<RowMethod>(m, "RowMethod", "An adaptive explicit Runge-Kutta method as data (per_sample_rows.cpp)")
      .def(py::init([](int num_stages, int order, bool fsal, std::vector<double> c, std::vector<double> a,
                       std::vector<double> b, std::vector<double> b_err, std::vector<double> P, int num_terms) {
             return RowMethod{num_stages, order, num_terms, fsal, std::move(c), std::move(a), std::move(b),
                              std::move(b_err), std::move(P)};
           }),
           py::kw_only(), py::arg("num_stages"), py::arg("order"), py::arg("fsal"), py::arg("c"), py::arg("a"),
           py::arg("b"), py::arg("b_err"), py::arg("P"), py::arg("num_terms"));
  py::class_<pyode::core::ControllerParams>(m, "ControllerParams",
                                            "The PID controller's parameters (core/controller.h)")
      .def(py::init([](double safety, double ifactor, double dfactor, double pcoeff, double icoeff, double dcoeff,
                       double min_step, double max_step, bool predictive) {
             pyode::core::ControllerParams p;
             p.safety = safety, p.ifactor = ifactor, p.dfactor = dfactor;
             p.pcoeff = pcoeff, p.icoeff = icoeff, p.dcoeff = dcoeff;
             p.min_step = min_step, p.max_step = max_step, p.predictive = predictive;
             return p;
           }),
           py::kw_only(), py::arg("safety"), py::arg("ifactor"), py::arg("dfactor"), py::arg("pcoeff"),
           py::arg("icoeff"), py::arg("dcoeff"), py::arg("min_step"), py::arg("max_step"), py::arg("predictive"));
  m.def("solve_per_sample", &solve_per_sample, "Per-sample rows of the one solve loop (see per_sample_rows.cpp)",
        py::kw_only(), py::arg("method"), py::arg("controller"), py::arg("rtol"), py::arg("atol"),
        py::arg("max_num_steps"), py::arg("first_step"), py::arg("t_out"), py::arg("y0"), py::arg("f0"),
        py::arg("out"), py::arg("y_stage"), py::arg("t_stage"), py::arg("dtype"), py::arg("t_dtype"),
        py::arg("sign"), py::arg("call"));
}
