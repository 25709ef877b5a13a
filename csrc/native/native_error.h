// The per-thread error message behind pyode_last_error(), shared by the entry points.
#pragma once

#include <string>

namespace pyode::native {

void set_last_error(const std::string& message);

}  // namespace pyode::native
