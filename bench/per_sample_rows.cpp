// The C++ cost of per-sample rows (core/batched_rows.h: a RowSolver per batch row), per row and evaluation of
// func, outside pyode: P4's shape (256 Van der Pol rows, dopri5, rtol = atol = 1e-5, 200 outputs), float32 and
// float64, mu = 2 (6.66 time units: dense output dominates) and mu = 25 (10 time units), func in C++ and its time
// excluded, the rows' setup included; best of 30 solves. Also checks that every row's outputs are, bit for bit, the
// joint loop's solve of that row alone. See bench/results/per_sample_rows_ab.md.
//   g++ -std=c++17 -O3 -ffp-contract=off -Icsrc/include -o /tmp/per_sample_rows bench/per_sample_rows.cpp
//   /tmp/per_sample_rows [solves per case]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "pyode/core/batched_rows.h"

using pyode::core::BatchedRows;
using pyode::core::LoopOptions;
using pyode::core::Method;

namespace {

// dopri5 and its interpolant on the stages (pyode's RKStepper P for dopri5, 4 x 7).
const double kC[7] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1};
const double kA[7][7] = {{0}, {1.0 / 5}, {3.0 / 40, 9.0 / 40}, {44.0 / 45, -56.0 / 15, 32.0 / 9},
                         {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
                         {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
                         {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}};
const double kB[7] = {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0};
const double kBErr[7] = {71.0 / 57600, 0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40};
const double kP[4 * 7] = {1, 0, 0, 0, 0, 0, 0,
                          -2.853580065386284, 0, 4.023133379230304, -3.732401961588504, 2.5548038301849423,
                          -1.3744241142186024, 1.3824689317781436,
                          3.0717434641058996, 0, -6.249321565289, 10.068970589843673, -6.399112377351017,
                          3.272657752246729, -3.764937863556287,
                          -1.1270175653862833, 0, 2.675424484351598, -5.685526961588503, 3.5219323679207912,
                          -1.7672812570757455, 2.382468931778144};

template <class T>
void van_der_pol(double mu, int rows, const T* y, T* dy) {
  for (int r = 0; r < rows; ++r) {
    const T x = y[2 * r], v = y[2 * r + 1];
    dy[2 * r] = v;
    dy[2 * r + 1] = static_cast<T>(mu) * (1 - x * x) * v - x;
  }
}

Method dopri5() {
  static double a[49];
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 7; ++j) a[i * 7 + j] = kA[i][j];
  Method m;
  m.s = 7, m.order = 5, m.fsal = true, m.c = kC, m.a = a, m.b = kB, m.b_err = kBErr;
  m.interp_degree = 4, m.num_terms = 7, m.P = kP;
  return m;
}

LoopOptions options() {
  LoopOptions o;
  o.rtol = o.atol = 1e-5;
  o.controller.order = 5;
  o.first_step = 1e-3;
  return o;
}

// Whether every row's outputs equal, bit for bit, the joint loop's solve of that row alone (RowSolver::run).
template <class T>
bool rows_match_joint(double mu, const std::vector<T>& y0, const std::vector<double>& t_out, const std::vector<T>& out) {
  struct OneRow {
    double mu;
    void operator()(double, const T* y, T* dy) const { van_der_pol(mu, 1, y, dy); }
  };
  const Method m = dopri5();
  const LoopOptions o = options();
  const int rows = static_cast<int>(y0.size() / 2), times = static_cast<int>(t_out.size());
  OneRow rhs{mu};
  pyode::core::WorkspaceOf<T> ws;
  ws.resize(m, 2);
  std::vector<T> ys(times * 2);
  pyode::core::NoEvent no_event;
  for (int r = 0; r < rows; ++r) {
    pyode::core::RowSolver<OneRow, T> joint(m, o, rhs, ws, 2);
    joint.run(y0.data() + 2 * r, t_out.data(), times, pyode::core::RowOutputOf<T>{ys.data(), 2, nullptr}, no_event);
    for (int k = 0; k < times; ++k)
      for (int i = 0; i < 2; ++i)
        if (!(ys[k * 2 + i] == out[(k * rows + r) * 2 + i])) return false;
  }
  return true;
}

// Nanoseconds of row work per row and evaluation, the number of evaluations, and the rows' check.
template <class T>
double time_rows(double mu, double t_end, int reps, long* calls_out, bool* match) {
  const Method m = dopri5();
  const LoopOptions o = options();
  const int rows = 256, n = 2, times = 200;
  std::mt19937 gen(4);
  std::uniform_real_distribution<double> uniform(-2.0, 2.0);
  std::vector<T> y0(rows * n), f0(rows * n), f(rows * n), y_stage(rows * n), out(times * rows * n);
  for (T& v : y0) v = static_cast<T>(uniform(gen));
  van_der_pol(mu, rows, y0.data(), f0.data());
  std::vector<double> t_out(times), t_stage(rows);
  for (int k = 0; k < times; ++k) t_out[k] = t_end * k / (times - 1);
  double best = 1e30;
  long calls = 0;
  for (int rep = 0; rep < reps; ++rep) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    double in_func = 0.0;
    calls = 0;
    BatchedRows<T> batch(m, o, rows, n, y0.data(), f0.data(), t_out.data(), times, out.data(), y_stage.data());
    for (long waiting = batch.gather(t_stage.data(), 1.0); waiting > 0;
         waiting = batch.exchange(f.data(), t_stage.data(), 1.0)) {
      const auto f_start = Clock::now();
      van_der_pol(mu, rows, y_stage.data(), f.data());
      in_func += std::chrono::duration<double>(Clock::now() - f_start).count();
      ++calls;
    }
    const double loop = std::chrono::duration<double>(Clock::now() - start).count() - in_func;
    if (loop < best) best = loop;
  }
  *calls_out = calls;
  *match = rows_match_joint(mu, y0, t_out, out);
  return best * 1e9 / static_cast<double>(calls) / rows;
}

}  // namespace

// argv[1]: solves timed per case (default 30). Exits 1 if some row's outputs differ from the joint loop's.
int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 30;
  bool all_match = true;
  for (double mu : {2.0, 25.0}) {
    const double t_end = mu == 2.0 ? 6.66 : 10.0;
    long calls32 = 0, calls64 = 0;
    bool match32 = false, match64 = false;
    const double ns32 = time_rows<float>(mu, t_end, reps, &calls32, &match32);
    const double ns64 = time_rows<double>(mu, t_end, reps, &calls64, &match64);
    std::printf("mu = %4.1f: float32 %5.1f ns (%ld evaluations), float64 %5.1f ns (%ld evaluations) a row and "
                "evaluation; rows equal to the joint loop: %s\n",
                mu, ns32, calls32, ns64, calls64, match32 && match64 ? "yes" : "NO");
    all_match = all_match && match32 && match64;
  }
  return all_match ? 0 : 1;
}
