// Buffer: the address and capacity of a tensor-like object as the _C bindings read them (pybind11; the _C
// sources only). Buffers arrive as torch tensors, or anything with data_ptr() and numel(), without torch in the
// build.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace pyode {

namespace py = pybind11;

// A tensor-like argument (anything with data_ptr() and numel(), e.g. a torch.Tensor; None for "no buffer"): its
// address, its capacity in elements, and the object itself, which a workspace keeping the address holds on to.
struct Buffer {
  uintptr_t ptr = 0;
  int64_t numel = 0;
  py::object owner = py::none();
};

inline py::object call_method(py::handle obj, PyObject* name) {
  PyObject* result = PyObject_CallMethodNoArgs(obj.ptr(), name);
  if (result == nullptr) {
    PyErr_Clear();
    throw py::type_error("pyode kernel: expected a tensor (an object with data_ptr() and numel()), got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  return py::reinterpret_steal<py::object>(result);
}

inline Buffer buffer_of(py::handle obj) {
  if (obj.is_none()) return {};
  static PyObject* const data_ptr = PyUnicode_InternFromString("data_ptr");
  static PyObject* const numel = PyUnicode_InternFromString("numel");
  return {call_method(obj, data_ptr).cast<uintptr_t>(), call_method(obj, numel).cast<int64_t>(),
          py::reinterpret_borrow<py::object>(obj)};
}

}  // namespace pyode
