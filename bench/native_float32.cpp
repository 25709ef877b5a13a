// float32 vs float64 arithmetic for the native loop's step, measured outside pyode (docs/native.md, "float32"):
// a dopri5-shaped step (7 stages, stage sums, an error norm with sqrt) on Lorenz (n = 3, the rhs called through
// a function pointer as the native loop calls it) and on a ring of n = 64 / 1024 coupled equations
// (y_i' = y_(i+1) - y_(i-1) - 0.01 y_i^3: states stay O(1), so no subnormals), fixed steps, best of 5.
//   g++ -std=c++17 -O3 -o /tmp/native_float32 bench/native_float32.cpp && /tmp/native_float32
// (-O3 without -march: the baseline x86-64 the wheels are built for.)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

template <class T> using Rhs = void (*)(T, const T*, T*, const T*, int);

template <class T> __attribute__((noinline)) void lorenz(T, const T* y, T* dy, const T* p, int) {
  dy[0] = T(10) * (y[1] - y[0]);
  dy[1] = y[0] * (p[0] - y[2]) - y[1];
  dy[2] = y[0] * y[1] - T(8.0 / 3.0) * y[2];
}
template <class T> __attribute__((noinline)) void chain(T, const T* y, T* dy, const T*, int n) {
  for (int i = 0; i < n; ++i) dy[i] = y[i + 1 < n ? i + 1 : 0] - y[i > 0 ? i - 1 : n - 1] - T(0.01) * y[i] * y[i] * y[i];
}

static const double A[7][7] = {{0}, {1.0 / 5}, {3.0 / 40, 9.0 / 40}, {44.0 / 45, -56.0 / 15, 32.0 / 9},
  {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
  {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
  {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}};
static const double E[7] = {71.0 / 57600, 0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

template <class T> double run(Rhs<T> f, int n, long steps, T h, double* checksum) {
  std::vector<T> y(n, T(1)), K(7 * n), s(n), e(n);
  T p[1] = {T(28)};
  T a[7][7], ee[7];
  for (int i = 0; i < 7; ++i) { ee[i] = T(E[i]); for (int j = 0; j < 7; ++j) a[i][j] = T(A[i][j]); }
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    for (int i = 0; i < n; ++i) y[i] = T(1) + T(0.01) * i;
    T norm_acc = 0;
    auto t0 = std::chrono::steady_clock::now();
    f(T(0), y.data(), K.data(), p, n);
    for (long q = 0; q < steps; ++q) {
      for (int st = 1; st < 7; ++st) {
        for (int i = 0; i < n; ++i) {
          T acc = y[i];
          for (int j = 0; j < st; ++j) acc += h * a[st][j] * K[j * n + i];
          s[i] = acc;
        }
        f(T(0), s.data(), K.data() + st * n, p, n);
      }
      T sq = 0;
      for (int i = 0; i < n; ++i) {
        T err = 0;
        for (int j = 0; j < 7; ++j) err += h * ee[j] * K[j * n + i];
        const T sc = T(1e-8) + T(1e-8) * std::fabs(s[i]);
        sq += (err / sc) * (err / sc);
        y[i] = s[i];
        K[i] = K[6 * n + i];
      }
      norm_acc += std::sqrt(sq / n);
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt < best) best = dt;
    *checksum = double(y[0]) + double(norm_acc) * 1e-30;
  }
  return best / steps * 1e9;
}

int main() {
  double c;
  for (int n : {3, 64, 1024}) {
    const long steps = n == 3 ? 2000000 : n == 64 ? 200000 : 10000;
    const double hd = n == 3 ? 1e-4 : 1e-3;
    double td = n == 3 ? run<double>(lorenz<double>, n, steps, hd, &c) : run<double>(chain<double>, n, steps, hd, &c);
    double tf = n == 3 ? run<float>(lorenz<float>, n, steps, float(hd), &c) : run<float>(chain<float>, n, steps, float(hd), &c);
    std::printf("n=%5d  double %8.1f ns/step  float %8.1f ns/step  float/double %.2f\n", n, td, tf, tf / td);
  }
}
