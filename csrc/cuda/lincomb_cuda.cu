// CUDA implementation of lincomb: out[r, i] = base[i] + sum_j w[r, j] * k_j[i] (see pyode/lincomb.h).
//
// Memory-bound: each element of every input is read once and each output written once. Loads are 16-byte
// vectors (float4 / double2) whenever every row and term is 16-byte aligned, else scalar. Pointers and
// weights travel as launch parameters (__grid_constant__), so a call costs one launch and no copies.
#include <algorithm>
#include <vector>

#include "cuda_common.cuh"

namespace pyode {
namespace cuda {
namespace {

struct LincombParams {
  const void* ks[kMaxTerms];
  double w[kMaxRows][kMaxTerms];
  void* out;
  int64_t out_row_stride;
  const void* base;         // nullptr: zero
  int64_t base_row_stride;  // 0: one base for every row; out_row_stride: accumulate into out (base == out)
  int nterms, nrows;
  int64_t n;                // elements handled by this launch
};

// V consecutive elements moved as one aligned load/store.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) lincomb_kernel(const __grid_constant__ LincombParams p) {
  using P = Pack<T, V>;
  const int64_t npacks = p.n / V;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < npacks; i += stride) {
    for (int r = 0; r < p.nrows; ++r) {
      P acc;
      if (p.base != nullptr) {
        acc = reinterpret_cast<const P*>(static_cast<const T*>(p.base) + r * p.base_row_stride)[i];
      } else {
#pragma unroll
        for (int v = 0; v < V; ++v) acc.v[v] = T(0);
      }
      for (int j = 0; j < p.nterms; ++j) {
        const double wj = p.w[r][j];
        if (wj == 0.0) continue;  // like the CPU kernel: a zero weight never touches its term (inf * 0)
        const T w = static_cast<T>(wj);
        const P k = reinterpret_cast<const P*>(p.ks[j])[i];
#pragma unroll
        for (int v = 0; v < V; ++v) acc.v[v] += w * k.v[v];
      }
      reinterpret_cast<P*>(static_cast<T*>(p.out) + r * p.out_row_stride)[i] = acc;
    }
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// Every row of out and base starts 16-byte aligned (row strides only matter when there are other rows).
template <typename T>
bool can_vectorise(const LincombParams& p) {
  const bool strides_ok = p.nrows == 1 || ((p.out_row_stride * int64_t(sizeof(T))) % 16 == 0 &&
                                           (p.base_row_stride * int64_t(sizeof(T))) % 16 == 0);
  bool ok = strides_ok && aligned16(p.out) && (p.base == nullptr || aligned16(p.base));
  for (int j = 0; j < p.nterms; ++j) ok = ok && aligned16(p.ks[j]);
  return ok;
}

// Runs one parameter block over its n elements: the 16-byte body, then the scalar tail.
template <typename T>
void launch_params(LincombParams p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  int64_t done = 0;
  if (can_vectorise<T>(p) && p.n >= V) {
    LincombParams body = p;
    body.n = p.n - p.n % V;
    lincomb_kernel<T, V><<<grid_for(body.n / V), kThreads, 0, stream>>>(body);
    check_launch("lincomb (vectorised)");
    done = body.n;
  }
  if (done == p.n) return;
  LincombParams tail = p;  // the same rows and terms, shifted to the first element not yet written
  tail.n = p.n - done;
  tail.out = static_cast<T*>(p.out) + done;
  if (p.base != nullptr) tail.base = static_cast<const T*>(p.base) + done;
  for (int j = 0; j < p.nterms; ++j) tail.ks[j] = static_cast<const T*>(p.ks[j]) + done;
  lincomb_kernel<T, 1><<<grid_for(tail.n), kThreads, 0, stream>>>(tail);
  check_launch("lincomb");
}

// Indices of the terms with a non-zero weight in some row of [r0, r0 + rows): the others are never read.
std::vector<int64_t> live_terms(const LincombArgs& args, int64_t r0, int64_t rows) {
  std::vector<int64_t> live;
  for (int64_t j = 0; j < args.s; ++j) {
    bool used = false;
    for (int64_t r = r0; r < r0 + rows; ++r) used = used || args.w[r * args.s + j] != 0.0;
    if (used) live.push_back(j);
  }
  return live;
}

// Rows [r0, r0 + rows): the first launch starts from base, later ones (more than kMaxTerms live terms)
// add the next group of terms onto out.
template <typename T>
void lincomb_rows(const LincombArgs& args, int64_t r0, int64_t rows, cudaStream_t stream) {
  const std::vector<int64_t> live = live_terms(args, r0, rows);
  size_t t0 = 0;
  do {
    LincombParams p{};
    p.out = static_cast<T*>(args.out) + r0 * args.out_row_stride;
    p.out_row_stride = args.out_row_stride;
    p.base = t0 == 0 ? args.base : p.out;
    p.base_row_stride = t0 == 0 ? 0 : args.out_row_stride;
    p.nterms = static_cast<int>(std::min<size_t>(kMaxTerms, live.size() - t0));
    p.nrows = static_cast<int>(rows);
    p.n = args.n;
    for (int j = 0; j < p.nterms; ++j) {
      const int64_t term = live[t0 + j];
      p.ks[j] = args.ks[term];
      for (int r = 0; r < p.nrows; ++r) p.w[r][j] = args.w[(r0 + r) * args.s + term];
    }
    launch_params<T>(p, stream);
    t0 += p.nterms;
  } while (t0 < live.size());
}

}  // namespace

template <typename T>
void lincomb_cuda(const LincombArgs& args, const Launch& launch) {
  if (args.n == 0 || args.m == 0) return;
  DeviceGuard guard(launch.device);
  for (int64_t r0 = 0; r0 < args.m; r0 += kMaxRows) {
    lincomb_rows<T>(args, r0, std::min<int64_t>(kMaxRows, args.m - r0), stream_of(launch));
  }
}

template void lincomb_cuda<float>(const LincombArgs&, const Launch&);
template void lincomb_cuda<double>(const LincombArgs&, const Launch&);

}  // namespace cuda
}  // namespace pyode
