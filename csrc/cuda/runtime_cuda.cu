// Runtime queries and the one synchronising copy of pyode's CUDA module (the norms of rk_finish).
#include "cuda_common.cuh"

namespace pyode {
namespace cuda {

void copy_to_host_sync(void* host, const void* device, int64_t bytes, const Launch& launch) {
  DeviceGuard guard(launch.device);
  throw_on_error(cudaMemcpyAsync(host, device, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost,
                                 stream_of(launch)), "cudaMemcpyAsync");
  throw_on_error(cudaStreamSynchronize(stream_of(launch)), "cudaStreamSynchronize");
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: report zero and clear the error
    return 0;
  }
  return count;
}

int runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) return 0;
  return version;
}

}  // namespace cuda
}  // namespace pyode
