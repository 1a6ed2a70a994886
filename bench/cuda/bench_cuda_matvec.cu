// GPU matvec speed of lowbit's CUDA kernels (Uniform, Additive) against baselines measured in the same
// run on the same card: cuBLAS fp16 GEMV (cublasGemmEx, fp32 accumulate) and fp32 SGEMV, plus the
// card's device-to-device copy bandwidth as the memory roofline. Batch-1 decoding is memory-bound, so a
// kernel's ceiling is (bytes it must read) / (copy bandwidth); the table prints each kernel's time, its
// achieved bandwidth over the packed bytes, that bandwidth as a fraction of the copy's, and its speedup
// over the two cuBLAS baselines.
//
// Timing: CUDA events around a batch of back-to-back launches that rotate over enough copies of the
// matrix to exceed 3x the L2 cache (so every launch reads from HBM), median of several batches. The
// matrices hold random codes, scales and codebooks: speed does not depend on the values, and
// correctness is the job of tests/cuda/. cuBLAS is loaded with dlopen, so the benchmark runs (without the
// cuBLAS columns) where only the CUDA runtime is present.
//
// Usage: bench_cuda_matvec [--quick] [--variants] [--csv FILE]
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <lowbit/core/half.hpp>
#include <lowbit/kernels/cuda/additive_matvec.cuh>
#include <lowbit/kernels/cuda/uniform_matvec.cuh>

using namespace lowbit;
namespace kc = lowbit::kernels::cuda;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda_matvec: %s failed: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Deterministic fill without <random> overhead on hundreds of millions of values.
struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
};

template <class T>
T* upload(const std::vector<T>& host) {
  void* p = nullptr;
  check(cudaMalloc(&p, std::max<std::size_t>(1, host.size()) * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return static_cast<T*>(p);
}

// ---- cuBLAS through dlopen -------------------------------------------------------------------------
// Only the handful of entry points the baselines need; the enum values are cuBLAS's stable ABI.
struct Cublas {
  using Handle = void*;
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*sgemv)(Handle, int, int, int, const float*, const float*, int, const float*, int, const float*, float*,
               int) = nullptr;
  int (*gemm_ex)(Handle, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                 const void*, void*, int, int, int, int) = nullptr;
  Handle handle = nullptr;
  std::string where;

  bool load() {
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
      destroy = reinterpret_cast<decltype(destroy)>(dlsym(lib, "cublasDestroy_v2"));
      set_stream = reinterpret_cast<decltype(set_stream)>(dlsym(lib, "cublasSetStream_v2"));
      sgemv = reinterpret_cast<decltype(sgemv)>(dlsym(lib, "cublasSgemv_v2"));
      gemm_ex = reinterpret_cast<decltype(gemm_ex)>(dlsym(lib, "cublasGemmEx"));
      if (create && destroy && set_stream && sgemv && gemm_ex && create(&handle) == 0) {
        where = name;
        return true;
      }
    }
    return false;
  }
  ~Cublas() {
    if (handle) destroy(handle);
  }
};
constexpr int kOpN = 0, kOpT = 1, kR16F = 2, kR32F = 0, kCompute32F = 68, kGemmDefault = -1;

// ---- timing ----------------------------------------------------------------------------------------
struct Timer {
  cudaStream_t stream;
  cudaEvent_t start, stop;
  Timer() {
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
  }
  // Median over `reps` batches of the mean time of one call, in microseconds; `run(i)` launches call i.
  double median_us(const std::function<void(int)>& run, int calls_per_batch, int reps) {
    for (int i = 0; i < calls_per_batch; ++i) run(i);  // warm-up
    check(cudaStreamSynchronize(stream), "warm-up");
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) {
      check(cudaEventRecord(start, stream), "cudaEventRecord");
      for (int i = 0; i < calls_per_batch; ++i) run(i);
      check(cudaEventRecord(stop, stream), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      times.push_back(1e3 * ms / calls_per_batch);
    }
    check(cudaGetLastError(), "kernel launches");
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }
};

// Copies of one matrix so that a rotation over them exceeds 3x L2.
int copies_for(std::size_t bytes, std::size_t l2) {
  const std::size_t want = 3 * l2;
  return static_cast<int>(std::clamp<std::size_t>((want + bytes - 1) / std::max<std::size_t>(bytes, 1), 1, 64));
}

struct Row {
  std::string shape, kernel;
  double bits_per_weight, us, gbps, frac_copy, vs_fp16, vs_fp32;
};

// ---- the kernels under test --------------------------------------------------------------------------
// Each returns {microseconds per matvec, packed bytes}; `launch(view, x, y, stream)` picks the kernel.
template <class Format, class Launch>
std::pair<double, std::size_t> time_uniform(Timer& t, index_t rows, index_t cols, const float* x, float* y, std::size_t l2,
                                            int reps, Launch launch) {
  UniformPacked<Format> p(rows, cols);
  SplitMix rng{static_cast<std::uint64_t>(rows * 131 + cols)};
  for (auto& w : p.codes()) w = static_cast<std::uint32_t>(rng.next());
  for (auto& s : p.scales()) s = to_half(0.001f + 0.01f * rng.uniform());
  for (auto& z : p.zero_words()) z = static_cast<std::uint32_t>(rng.next());
  const int n = copies_for(p.bytes(), l2);
  std::vector<std::unique_ptr<kc::DeviceUniformMatrix<Format>>> mats;
  for (int i = 0; i < n; ++i) mats.push_back(std::make_unique<kc::DeviceUniformMatrix<Format>>(p));
  const double us =
      t.median_us([&](int i) { launch(mats[static_cast<std::size_t>(i % n)]->view(), x, y, t.stream); }, 4 * n, reps);
  return {us, p.bytes()};
}

template <class Launch>
std::pair<double, std::size_t> time_additive(Timer& t, const AdditiveShape& s, const float* x, float* y, std::size_t l2,
                                             int reps, Launch launch) {
  SplitMix rng{static_cast<std::uint64_t>(s.rows * 7 + s.cols * 3 + s.code_bits)};
  const index_t wpr = packed_words(s.codes_per_row(), s.code_bits);
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(s.rows * wpr));
  for (auto& w : codes) w = static_cast<std::uint32_t>(rng.next());
  if (s.code_bits == 16 || 32 % s.code_bits != 0) {  // keep codes < 2^B in every field: repack
    for (index_t o = 0; o < s.rows; ++o) {
      std::uint32_t* row = codes.data() + o * wpr;
      std::fill(row, row + wpr, 0u);
      for (index_t i = 0; i < s.codes_per_row(); ++i)
        pack_code(row, i, s.code_bits, static_cast<std::uint32_t>(rng.next() & ((1u << s.code_bits) - 1u)));
    }
  }
  std::vector<std::uint16_t> books(static_cast<std::size_t>(s.num_codebooks * s.codebook_size() * s.group_size));
  for (auto& v : books) v = float_to_half_bits(rng.uniform() - 0.5f);
  std::vector<std::uint16_t> scales(static_cast<std::size_t>(s.rows));
  for (auto& v : scales) v = float_to_half_bits(0.01f + 0.01f * rng.uniform());
  const std::size_t bytes = codes.size() * 4 + books.size() * 2 + scales.size() * 2;
  const int n = copies_for(bytes, l2);
  std::vector<std::unique_ptr<kc::DeviceAdditiveMatrix>> mats;
  for (int i = 0; i < n; ++i) mats.push_back(std::make_unique<kc::DeviceAdditiveMatrix>(s, codes, wpr, books, scales));
  const double us =
      t.median_us([&](int i) { launch(mats[static_cast<std::size_t>(i % n)]->view(), x, y, t.stream); }, 4 * n, reps);
  return {us, bytes};
}

template <class Format>
struct UniformLaunch {  // the default dispatch
  void operator()(const UniformMatrixView& m, const float* x, float* y, cudaStream_t s) const {
    kc::launch_uniform_matvec<Format>(m, x, y, s);
  }
};
template <class Format>
struct UniformGeneral {
  void operator()(const UniformMatrixView& m, const float* x, float* y, cudaStream_t s) const {
    kc::launch_uniform_matvec_general<Format>(m, x, y, s);
  }
};
template <class Format, int Rows, int Warps>
struct UniformStaged {
  void operator()(const UniformMatrixView& m, const float* x, float* y, cudaStream_t s) const {
    kc::launch_uniform_matvec_staged<Format, Rows, Warps>(m, x, y, s);
  }
};
template <class Format, int Rows, int Warps>
struct UniformTiled {
  void operator()(const UniformMatrixView& m, const float* x, float* y, cudaStream_t s) const {
    kc::launch_uniform_matvec_tiled<Format, Rows, Warps>(m, x, y, s);
  }
};
struct AdditiveLaunch {
  void operator()(const kc::AdditiveDeviceView& v, const float* x, float* y, cudaStream_t s) const {
    kc::launch_additive_matvec(v, x, y, s);
  }
};
struct AdditiveGeneral {
  void operator()(const kc::AdditiveDeviceView& v, const float* x, float* y, cudaStream_t s) const {
    kc::launch_additive_matvec_general(v, x, y, s);
  }
};
template <int Rows, int Warps>
struct AdditiveTiled {
  void operator()(const kc::AdditiveDeviceView& v, const float* x, float* y, cudaStream_t s) const {
    kc::launch_additive_matvec_tiled<Rows, Warps>(v, x, y, s);
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, variants = false;
  const char* csv_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--variants")) {
      variants = true;
    } else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) {
      csv_path = argv[++i];
    } else {
      std::printf("usage: %s [--quick] [--variants] [--csv FILE]\n"
                  "  --quick     two shapes, fewer repetitions\n"
                  "  --variants  also time the general kernels and other tile shapes (tuning)\n"
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
  std::printf("device: %s, %d SMs, L2 %.0f MiB, %.1f GiB\n", prop.name, prop.multiProcessorCount, l2 / 1048576.0,
              prop.totalGlobalMem / 1073741824.0);
  const int reps = quick ? 5 : 15;
  Timer t;

  // Roofline: device-to-device copy of 2 GiB (bytes read + bytes written).
  double copy_gbps = 0.0;
  {
    const std::size_t bytes = std::size_t{1} << 31;
    void *a = nullptr, *b = nullptr;
    check(cudaMalloc(&a, bytes), "cudaMalloc copy");
    check(cudaMalloc(&b, bytes), "cudaMalloc copy");
    check(cudaMemset(a, 1, bytes), "cudaMemset");
    const double us = t.median_us([&](int) { check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, t.stream), "copy"); }, 3, reps);
    copy_gbps = 2.0 * bytes / (us * 1e3);
    cudaFree(a);
    cudaFree(b);
  }
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbps);

  Cublas blas;
  const bool have_blas = blas.load();
  if (have_blas) {
    check(static_cast<cudaError_t>(blas.set_stream(blas.handle, t.stream) == 0 ? cudaSuccess : cudaErrorUnknown), "cublasSetStream");
    std::printf("baselines: cuBLAS (%s) fp16 GEMV via cublasGemmEx (fp32 accumulate), fp32 cublasSgemv\n",
                blas.where.c_str());
  } else {
    std::printf("baselines: cuBLAS not found (dlopen libcublas.so.13/12 failed); cuBLAS columns are empty\n");
  }

  struct Shape {
    index_t rows, cols;
    const char* what;
  };
  std::vector<Shape> shapes = {{4096, 4096, "LLaMA-7B q/k/v/o"}, {11008, 4096, "LLaMA-7B gate/up"},
                               {4096, 11008, "LLaMA-7B down"},     {8192, 8192, "LLaMA-70B q/o"},
                               {28672, 8192, "LLaMA-70B gate/up"}, {1536, 576, "SmolLM2 gate/up"}};
  if (quick) shapes = {{4096, 4096, "LLaMA-7B q/k/v/o"}, {11008, 4096, "LLaMA-7B gate/up"}};

  std::vector<Row> rows_out;
  for (const Shape& sh : shapes) {
    const index_t R = sh.rows, C = sh.cols;
    SplitMix rng{42};
    std::vector<float> xh(static_cast<std::size_t>(C));
    for (auto& v : xh) v = rng.uniform() - 0.5f;
    float* x = upload(xh);
    float* y = upload(std::vector<float>(static_cast<std::size_t>(R), 0.0f));
    const std::string shape = std::to_string(R) + "x" + std::to_string(C);
    const double n_weights = static_cast<double>(R) * static_cast<double>(C);

    // cuBLAS baselines (y = W x with W row-major [R, C] = column-major [C, R], so op T).
    double fp16_us = 0.0, fp32_us = 0.0;
    if (have_blas) {
      std::vector<std::uint16_t> w16(static_cast<std::size_t>(n_weights));
      for (auto& v : w16) v = float_to_half_bits(rng.uniform() - 0.5f);
      std::vector<std::uint16_t> x16(xh.size());
      for (std::size_t i = 0; i < xh.size(); ++i) x16[i] = float_to_half_bits(xh[i]);
      const std::size_t bytes16 = w16.size() * 2;
      const int n16 = copies_for(bytes16, l2);
      std::vector<std::uint16_t*> m16;
      for (int i = 0; i < n16; ++i) m16.push_back(upload(w16));
      std::uint16_t* x16d = upload(x16);
      const float alpha = 1.0f, beta = 0.0f;
      fp16_us = t.median_us(
          [&](int i) {
            const int st = blas.gemm_ex(blas.handle, kOpT, kOpN, static_cast<int>(R), 1, static_cast<int>(C), &alpha,
                                        m16[static_cast<std::size_t>(i % n16)], kR16F, static_cast<int>(C), x16d, kR16F,
                                        static_cast<int>(C), &beta, y, kR32F, static_cast<int>(R), kCompute32F, kGemmDefault);
            if (st != 0) {
              std::fprintf(stderr, "cublasGemmEx failed: %d\n", st);
              std::exit(1);
            }
          },
          4 * n16, reps);
      for (auto* p : m16) cudaFree(p);
      cudaFree(x16d);
      w16.clear();
      w16.shrink_to_fit();
      rows_out.push_back({shape, "cuBLAS fp16 GEMV", 16.0, fp16_us, bytes16 / (fp16_us * 1e3),
                          bytes16 / (fp16_us * 1e3) / copy_gbps, 1.0, 0.0});

      std::vector<float> w32(static_cast<std::size_t>(n_weights));
      for (auto& v : w32) v = rng.uniform() - 0.5f;
      const std::size_t bytes32 = w32.size() * 4;
      const int n32 = copies_for(bytes32, l2);
      std::vector<float*> m32;
      for (int i = 0; i < n32; ++i) m32.push_back(upload(w32));
      fp32_us = t.median_us(
          [&](int i) {
            const int st = blas.sgemv(blas.handle, kOpT, static_cast<int>(C), static_cast<int>(R), &alpha,
                                      m32[static_cast<std::size_t>(i % n32)], static_cast<int>(C), x, 1, &beta, y, 1);
            if (st != 0) {
              std::fprintf(stderr, "cublasSgemv failed: %d\n", st);
              std::exit(1);
            }
          },
          4 * n32, reps);
      for (auto* p : m32) cudaFree(p);
      rows_out.push_back({shape, "cuBLAS fp32 SGEMV", 32.0, fp32_us, bytes32 / (fp32_us * 1e3),
                          bytes32 / (fp32_us * 1e3) / copy_gbps, fp16_us / fp32_us, 1.0});
    }

    auto add = [&](const std::string& kernel, double us, std::size_t bytes) {
      rows_out.push_back({shape, kernel, 8.0 * bytes / n_weights, us, bytes / (us * 1e3), bytes / (us * 1e3) / copy_gbps,
                          fp16_us > 0 ? fp16_us / us : 0.0, fp32_us > 0 ? fp32_us / us : 0.0});
    };
    auto uni = [&](const std::string& name, auto tag, auto launch) {
      using F = typename decltype(tag)::type;
      const auto [us, bytes] = time_uniform<F>(t, R, C, x, y, l2, reps, launch);
      add(name, us, bytes);
    };
    auto add_ = [&](const std::string& name, const AdditiveShape& s, auto launch) {
      const auto [us, bytes] = time_additive(t, s, x, y, l2, reps, launch);
      add(name, us, bytes);
    };
    using W4 = Uniform<4, 128>;
    using W2 = Uniform<2, 128>;
    uni("uniform:4:128", std::type_identity<W4>{}, UniformLaunch<W4>{});
    if (variants) {
      uni("uniform:4:128 general", std::type_identity<W4>{}, UniformGeneral<W4>{});
      uni("uniform:4:128 tiled 8x4", std::type_identity<W4>{}, UniformTiled<W4, 8, 4>{});
      uni("uniform:4:128 tiled 16x2", std::type_identity<W4>{}, UniformTiled<W4, 16, 2>{});
      uni("uniform:4:128 staged 4x4", std::type_identity<W4>{}, UniformStaged<W4, 4, 4>{});
      uni("uniform:4:128 staged 16x4", std::type_identity<W4>{}, UniformStaged<W4, 16, 4>{});
      uni("uniform:4:128 staged 8x8", std::type_identity<W4>{}, UniformStaged<W4, 8, 8>{});
      uni("uniform:4:128 staged 16x2", std::type_identity<W4>{}, UniformStaged<W4, 16, 2>{});
    }
    uni("uniform:3:128", std::type_identity<Uniform<3, 128>>{}, UniformLaunch<Uniform<3, 128>>{});
    uni("uniform:2:128", std::type_identity<W2>{}, UniformLaunch<W2>{});
    if (variants) {
      uni("uniform:2:128 general", std::type_identity<W2>{}, UniformGeneral<W2>{});
      uni("uniform:2:128 tiled 8x4", std::type_identity<W2>{}, UniformTiled<W2, 8, 4>{});
      uni("uniform:2:128 staged 16x4", std::type_identity<W2>{}, UniformStaged<W2, 16, 4>{});
    }
    uni("uniform:4:32", std::type_identity<Uniform<4, 32>>{}, UniformLaunch<Uniform<4, 32>>{});
    const AdditiveShape a28{R, C, 2, 8, 8};
    add_("additive:2:8:8", a28, AdditiveLaunch{});
    if (variants) {
      add_("additive:2:8:8 general", a28, AdditiveGeneral{});
      add_("additive:2:8:8 tiled 4x8", a28, AdditiveTiled<4, 8>{});
      add_("additive:2:8:8 tiled 4x4", a28, AdditiveTiled<4, 4>{});
      add_("additive:2:8:8 tiled 8x2", a28, AdditiveTiled<8, 2>{});
    }
    add_("additive:4:6:8", AdditiveShape{R, C, 4, 6, 8}, AdditiveLaunch{});
    if (!quick || R * C <= 4096 * 4096) add_("additive:1:16:8", AdditiveShape{R, C, 1, 16, 8}, AdditiveLaunch{});
    cudaFree(x);
    cudaFree(y);
    check(cudaDeviceSynchronize(), "shape done");
    std::printf("  %s (%s) done\n", shape.c_str(), sh.what);
    std::fflush(stdout);
  }

  std::printf("\n| shape | kernel | bits/w | time (us) | GB/s | of copy BW | vs cuBLAS fp16 | vs cuBLAS fp32 |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows_out)
    std::printf("| %s | %s | %.3f | %.1f | %.0f | %.0f%% | %.2fx | %.2fx |\n", r.shape.c_str(), r.kernel.c_str(),
                r.bits_per_weight, r.us, r.gbps, 100.0 * r.frac_copy, r.vs_fp16, r.vs_fp32);
  if (csv_path) {
    if (FILE* f = std::fopen(csv_path, "w")) {
      std::fprintf(f, "device,copy_gbps,shape,kernel,bits_per_weight,us,gbps,frac_copy,vs_cublas_fp16,vs_cublas_fp32\n");
      for (const Row& r : rows_out)
        std::fprintf(f, "%s,%.1f,%s,%s,%.4f,%.3f,%.1f,%.4f,%.4f,%.4f\n", prop.name, copy_gbps, r.shape.c_str(),
                     r.kernel.c_str(), r.bits_per_weight, r.us, r.gbps, r.frac_copy, r.vs_fp16, r.vs_fp32);
      std::fclose(f);
    }
  }
  return 0;
}
