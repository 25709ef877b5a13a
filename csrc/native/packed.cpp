// pyode_solve_packed: the method and options unpacked from a flat array of doubles (the layout of
// pyode/native/nopython.py, pack()), for callers that cannot build C structs (numba's nopython mode).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "native_error.h"
#include "pyode/pyode_native.h"

namespace {

// Header fields of the packed array, then c (s), a (s*s), b (s), b_err (s), interp_P (degree * terms).
enum Field {
  kVersion, kStages, kOrder, kFsal, kDegree, kTerms, kRestep, kHasErr,
  kRtol, kAtol, kFirstStep, kSafety, kIfactor, kDfactor, kPcoeff, kIcoeff, kDcoeff, kMinStep, kMaxStep,
  kMaxNumSteps, kStepSize, kEventTol, kNumThreads, kController
};
static_assert(kController + 1 == PYODE_PACKED_HEADER, "packed header size");

bool is_count(double x, double lo, double hi) { return std::isfinite(x) && x == std::floor(x) && x >= lo && x <= hi; }

int32_t fail(const char* what) {
  pyode::native::set_last_error(std::string("pyode_solve_packed: ") + what);
  return PYODE_EINVAL;
}

}  // namespace

extern "C" int32_t pyode_solve_packed(const double* packed, int64_t packed_len, uint64_t rhs, uint64_t event,
                                      int64_t num_traj, int64_t n, int64_t num_params, int64_t params_stride,
                                      const double* y0, int64_t y0_len, const double* params,
                                      int64_t params_len, const double* t, int64_t t_len, double* ys,
                                      int64_t ys_len, double* stats_out, int64_t stats_len) {
  if (packed == nullptr || packed_len < PYODE_PACKED_HEADER) return fail("packed header too short");
  const double* h = packed;
  if (h[kVersion] != PYODE_PACKED_VERSION || !is_count(h[kStages], 1, 64) || !is_count(h[kDegree], 0, 16) ||
      !is_count(h[kTerms], 1, 65) || !is_count(h[kMaxNumSteps], 1, 1.0e300) || !is_count(h[kNumThreads], 0, 65536) ||
      !is_count(h[kController], 0, 2))
    return fail("packed header is invalid");
  const int64_t s = static_cast<int64_t>(h[kStages]);
  const int64_t degree = static_cast<int64_t>(h[kDegree]), terms = static_cast<int64_t>(h[kTerms]);
  if (packed_len < PYODE_PACKED_HEADER + 3 * s + s * s + degree * terms) return fail("packed array too short");
  if (stats_out == nullptr || num_traj < 1 || stats_len < 6 * num_traj) return fail("stats_out too short");
  const double* body = packed + PYODE_PACKED_HEADER;
  pyode_method m{};
  m.num_stages = static_cast<int32_t>(s);
  m.order = static_cast<int32_t>(h[kOrder]);
  m.fsal = h[kFsal] != 0.0;
  m.interp_degree = static_cast<int32_t>(degree);
  m.interp_terms = static_cast<int32_t>(terms);
  m.interp_restep = h[kRestep] != 0.0;
  m.c = body;
  m.a = body + s;
  m.b = body + s + s * s;
  m.b_err = h[kHasErr] != 0.0 ? body + 2 * s + s * s : nullptr;
  m.interp_P = body + 3 * s + s * s;
  pyode_options o{};
  o.struct_size = sizeof(pyode_options);
  o.rtol = h[kRtol];
  o.atol = h[kAtol];
  o.first_step = h[kFirstStep];
  o.safety = h[kSafety];
  o.ifactor = h[kIfactor];
  o.dfactor = h[kDfactor];
  o.pcoeff = h[kPcoeff];
  o.icoeff = h[kIcoeff];
  o.dcoeff = h[kDcoeff];
  o.min_step = h[kMinStep];
  o.max_step = h[kMaxStep];
  // 2**63 - 1 rounds up to 2**63 as a double, which int64_t cannot hold: clamp (any such count is "no limit").
  o.max_num_steps = h[kMaxNumSteps] >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(h[kMaxNumSteps]);
  o.step_size = h[kStepSize];
  o.event_tol = h[kEventTol];
  o.num_threads = static_cast<int32_t>(h[kNumThreads]);
  o.controller = static_cast<int32_t>(h[kController]);
  pyode_problem p{};
  p.num_traj = num_traj;
  p.n = n;
  p.num_params = num_params;
  p.params_stride = params_stride;
  p.num_times = t_len;
  p.y0 = y0;
  p.y0_len = y0_len;
  p.params = params;
  p.params_len = params_len;
  p.t = t;
  p.t_len = t_len;
  p.ys = ys;
  p.ys_len = ys_len;
  std::vector<pyode_traj_stats> stats(static_cast<size_t>(num_traj));
  const int32_t rc = pyode_solve(&m, &o, reinterpret_cast<pyode_rhs_fn>(rhs),
                                 reinterpret_cast<pyode_event_fn>(event), &p, stats.data(), num_traj);
  if (rc != PYODE_OK) return rc;
  for (int64_t r = 0; r < num_traj; ++r) {
    double* row = stats_out + 6 * r;
    row[0] = stats[r].status;
    row[1] = stats[r].t_reached;
    row[2] = stats[r].event_t;
    row[3] = static_cast<double>(stats[r].n_accepted);
    row[4] = static_cast<double>(stats[r].n_rejected);
    row[5] = static_cast<double>(stats[r].n_feval);
  }
  return PYODE_OK;
}
