// dispatch_floating: the one place where a runtime dtype becomes the kernels' element type.
//
//   dispatch_floating(dtype, [&](auto tag) { using T = typename decltype(tag)::type; kernel<T>(args); });
//
// The Python layer passes dtypes as codes (DType's values); dtype_from_code checks one at the boundary.
#pragma once
#include <string>

#include "pyode/common.h"

namespace pyode {

template <typename T>
struct TypeTag {
  using type = T;
};

// The DType named by a code from Python (0 float32, 1 float64); anything else raises, naming `what`.
inline DType dtype_from_code(int code, const char* what) {
  if (code != static_cast<int>(DType::kFloat32) && code != static_cast<int>(DType::kFloat64))
    check(false, std::string(what) + ": unsupported dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

// f(TypeTag<float>{}) or f(TypeTag<double>{}) for dtype; returns what f returns (the same type for both).
template <typename F>
decltype(auto) dispatch_floating(DType dtype, F&& f) {
  if (dtype == DType::kFloat32) return f(TypeTag<float>{});
  return f(TypeTag<double>{});
}

}  // namespace pyode
