// GPU speed of the 1-bit-activation matvec (kernels/cuda/sign_matvec.cuh) against baselines measured in
// the same run on the same card: cuBLAS fp32 SGEMV on the same fp32 matrix with a dense x (the baseline:
// both read 4 bytes per weight), and the card's device-to-device copy bandwidth as the memory roofline.
// The table prints each kernel's time, its bandwidth over the bytes it must read (W, plus rowsum and the
// packed signs for the sign kernels), that as a fraction of the copy's, and its speedup over cuBLAS fp32.
//
// Timing: CUDA events around a batch of back-to-back launches that rotate over enough copies of the
// matrix to exceed 3x the L2 cache (every launch reads from HBM), median of several batches. cuBLAS is
// loaded with dlopen (libcublas.so.13/12), so the benchmark still runs, without the baseline, where
// only the CUDA runtime is present. Values are random: speed does not depend on them.
//
// Usage: bench_cuda_sign [--quick] [--csv FILE]
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <lowbit/kernels/cpu/sign_matvec.hpp>
#include <lowbit/kernels/cuda/sign_matvec.cuh>

using namespace lowbit;
namespace kc = lowbit::kernels::cuda;
namespace cpu = lowbit::kernels::cpu;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda_sign: %s failed: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

std::uint64_t mix(std::uint64_t& s) {  // splitmix64: a deterministic, fast fill
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
float uniform(std::uint64_t& s) { return static_cast<float>(mix(s) >> 40) * (1.0f / 16777216.0f) - 0.5f; }

template <class T>
T* upload(const std::vector<T>& host) {
  void* p = nullptr;
  check(cudaMalloc(&p, host.size() * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return static_cast<T*>(p);
}

// cuBLAS's SGEMV entry points through dlopen (the enum values are cuBLAS's stable ABI).
struct Blas {
  using Handle = void*;
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*sgemv)(Handle, int, int, int, const float*, const float*, int, const float*, int, const float*, float*,
               int) = nullptr;
  Handle handle = nullptr;
  const char* library = nullptr;
  static constexpr int kTranspose = 1;

  bool open() {
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
      destroy = reinterpret_cast<decltype(destroy)>(dlsym(lib, "cublasDestroy_v2"));
      set_stream = reinterpret_cast<decltype(set_stream)>(dlsym(lib, "cublasSetStream_v2"));
      sgemv = reinterpret_cast<decltype(sgemv)>(dlsym(lib, "cublasSgemv_v2"));
      if (create && destroy && set_stream && sgemv && create(&handle) == 0) {
        library = name;
        return true;
      }
    }
    return false;
  }
  ~Blas() {
    if (handle) destroy(handle);
  }
};

struct Events {
  cudaStream_t stream;
  cudaEvent_t start, stop;
  Events() {
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
  }
  // Median over `reps` batches of the time per call (us) of `calls` back-to-back calls, after a warm-up batch.
  double median_us(const std::function<void(int)>& call, int calls, int reps) {
    for (int i = 0; i < calls; ++i) call(i);
    check(cudaStreamSynchronize(stream), "warm-up");
    std::vector<double> us;
    for (int r = 0; r < reps; ++r) {
      check(cudaEventRecord(start, stream), "cudaEventRecord");
      for (int i = 0; i < calls; ++i) call(i);
      check(cudaEventRecord(stop, stream), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      us.push_back(1e3 * ms / calls);
    }
    check(cudaGetLastError(), "kernel launches");
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }
};

struct Row {
  std::string shape, kernel;
  double us, gbps, of_copy, vs_cublas;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  const char* csv_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) {
      csv_path = argv[++i];
    } else {
      std::printf("usage: %s [--quick] [--csv FILE]\n  --quick     two shapes, fewer repetitions\n"
                  "  --csv FILE  write every row as CSV\n", argv[0]);
      return std::strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("[skipped] no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const std::size_t l2 = static_cast<std::size_t>(prop.l2CacheSize);
  std::printf("device: %s, %d SMs, L2 %.0f MiB\n", prop.name, prop.multiProcessorCount, l2 / 1048576.0);
  const int reps = quick ? 5 : 15;
  Events t;

  double copy_gbps = 0.0;
  {
    const std::size_t bytes = std::size_t{1} << 30;
    void *a = nullptr, *b = nullptr;
    check(cudaMalloc(&a, bytes), "cudaMalloc copy");
    check(cudaMalloc(&b, bytes), "cudaMalloc copy");
    check(cudaMemset(a, 1, bytes), "cudaMemset");
    const double us = t.median_us(
        [&](int) { check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, t.stream), "copy"); }, 3, reps);
    copy_gbps = 2.0 * bytes / (us * 1e3);
    cudaFree(a);
    cudaFree(b);
  }
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbps);
  Blas blas;
  const bool have_blas = blas.open();
  if (have_blas) {
    check(blas.set_stream(blas.handle, t.stream) == 0 ? cudaSuccess : cudaErrorUnknown, "cublasSetStream");
    std::printf("baseline: cuBLAS (%s) fp32 cublasSgemv, dense x\n", blas.library);
  } else {
    std::printf("baseline: cuBLAS not found (dlopen libcublas.so.13/12 failed); the vs-cuBLAS column is empty\n");
  }

  struct Shape {
    index_t rows, cols;
  };
  std::vector<Shape> shapes = {{576, 576}, {1536, 576}, {576, 1536}, {4096, 4096}, {11008, 4096}, {4096, 11008}};
  if (quick) shapes = {{1536, 576}, {4096, 4096}};
  std::vector<Row> rows_out;
  for (const Shape& sh : shapes) {
    const index_t R = sh.rows, C = sh.cols;
    const std::string shape = std::to_string(R) + "x" + std::to_string(C);
    std::uint64_t seed = static_cast<std::uint64_t>(R * 131 + C);
    std::vector<float> w(static_cast<std::size_t>(R * C)), x(static_cast<std::size_t>(C));
    for (auto& v : w) v = uniform(seed);
    for (auto& v : x) v = uniform(seed);
    std::vector<std::uint64_t> bits(static_cast<std::size_t>(cpu::signs_words(C)));
    cpu::pack_signs(x.data(), C, bits.data());
    std::vector<float> rowsum(static_cast<std::size_t>(R));
    cpu::sign_rowsums(w.data(), R, C, rowsum.data());
    const std::size_t w_bytes = w.size() * sizeof(float);
    const int copies = static_cast<int>(std::clamp<std::size_t>((3 * l2 + w_bytes - 1) / w_bytes, 1, 64));
    std::vector<float*> mats;
    for (int i = 0; i < copies; ++i) mats.push_back(upload(w));
    float* x_dev = upload(x);
    float* rowsum_dev = upload(rowsum);
    std::uint64_t* bits_dev = upload(bits);
    float* y_dev = upload(std::vector<float>(static_cast<std::size_t>(R), 0.0f));

    double blas_us = 0.0;
    if (have_blas) {
      const float one = 1.0f, zero = 0.0f;
      // y = W x with W row-major [R, C] = column-major [C, R]: op T
      blas_us = t.median_us(
          [&](int i) {
            if (blas.sgemv(blas.handle, Blas::kTranspose, static_cast<int>(C), static_cast<int>(R), &one,
                           mats[static_cast<std::size_t>(i % copies)], static_cast<int>(C), x_dev, 1, &zero, y_dev, 1) != 0) {
              std::fprintf(stderr, "cublasSgemv failed\n");
              std::exit(1);
            }
          },
          4 * copies, reps);
      const double gbps = static_cast<double>(w_bytes) / (blas_us * 1e3);
      rows_out.push_back({shape, "cuBLAS fp32 SGEMV (baseline)", blas_us, gbps, gbps / copy_gbps, 1.0});
    }
    const std::size_t sign_bytes = w_bytes + rowsum.size() * sizeof(float) + bits.size() * sizeof(std::uint64_t);
    auto time_sign = [&](const std::string& name, const std::function<void(const float*)>& launch) {
      const double us = t.median_us([&](int i) { launch(mats[static_cast<std::size_t>(i % copies)]); }, 4 * copies, reps);
      const double gbps = static_cast<double>(sign_bytes) / (us * 1e3);
      rows_out.push_back({shape, name, us, gbps, gbps / copy_gbps, blas_us > 0 ? blas_us / us : 0.0});
    };
    time_sign("sign (dispatch: vec4)", [&](const float* W) {
      kc::launch_sign_matvec(W, rowsum_dev, bits_dev, R, C, y_dev, t.stream);
    });
    time_sign("sign vec4, 8 warps/block", [&](const float* W) {
      kc::launch_sign_matvec_vec4<8>(W, rowsum_dev, bits_dev, R, C, y_dev, t.stream);
    });
    time_sign("sign general", [&](const float* W) {
      kc::launch_sign_matvec_general(W, rowsum_dev, bits_dev, R, C, y_dev, t.stream);
    });
    // the whole encoded-layer step on the GPU: pack the activation's signs, then the matvec
    time_sign("pack_signs + sign", [&](const float* W) {
      kc::launch_pack_signs(x_dev, C, bits_dev, t.stream);
      kc::launch_sign_matvec(W, rowsum_dev, bits_dev, R, C, y_dev, t.stream);
    });
    for (float* m : mats) cudaFree(m);
    cudaFree(x_dev);
    cudaFree(rowsum_dev);
    cudaFree(bits_dev);
    cudaFree(y_dev);
    check(cudaDeviceSynchronize(), "shape done");
    std::printf("  %s done\n", shape.c_str());
    std::fflush(stdout);
  }

  std::printf("\n| shape | kernel | time (us) | GB/s | of copy BW | vs cuBLAS fp32 |\n|---|---|---:|---:|---:|---:|\n");
  for (const Row& r : rows_out)
    std::printf("| %s | %s | %.1f | %.0f | %.0f%% | %.2fx |\n", r.shape.c_str(), r.kernel.c_str(), r.us, r.gbps,
                100.0 * r.of_copy, r.vs_cublas);
  if (csv_path) {
    if (FILE* f = std::fopen(csv_path, "w")) {
      std::fprintf(f, "device,copy_gbps,shape,kernel,us,gbps,of_copy,vs_cublas_fp32\n");
      for (const Row& r : rows_out)
        std::fprintf(f, "%s,%.1f,%s,%s,%.3f,%.1f,%.4f,%.4f\n", prop.name, copy_gbps, r.shape.c_str(), r.kernel.c_str(),
                     r.us, r.gbps, r.of_copy, r.vs_cublas);
      std::fclose(f);
    }
  }
  return 0;
}
