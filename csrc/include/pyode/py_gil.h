// ReleaseGilIfLarge: the _C bindings release the GIL around their own work on a large state only.
#pragma once
#include <Python.h>

#include <cstdint>

namespace pyode {

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

}  // namespace pyode
