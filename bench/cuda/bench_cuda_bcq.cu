// GPU matvec speed of the BCQ kernels (kernels/cuda/bcq_matvec.cuh) against baselines measured in the
// same run on the same card: the Uniform kernel of the same bit width and group (the fastest lowbit
// kernel, bench_cuda_matvec.cu times it against cuBLAS) and the card's device-to-device copy bandwidth as
// the memory roofline. A batch-1 matvec is memory-bound, so a kernel's ceiling is (bytes it must read) /
// (copy bandwidth); the table prints each kernel's time, its bandwidth over the packed bytes, that as a
// fraction of the copy's, and its time relative to the Uniform kernel.
//
// Timing: CUDA events around a batch of back-to-back launches that rotate over enough copies of the
// matrix to exceed 3x the L2 cache (every launch reads from HBM), median of several batches. The
// matrices hold random planes and scales: speed does not depend on the values (tests/cuda checks them).
//
// Usage: bench_cuda_bcq [--quick] [--variants] [--csv FILE]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <lowbit/core/half.hpp>
#include <lowbit/kernels/cuda/bcq_matvec.cuh>
#include <lowbit/kernels/cuda/uniform_matvec.cuh>

using namespace lowbit;
namespace kc = lowbit::kernels::cuda;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda_bcq: %s failed: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

struct Mix64 {  // a deterministic, fast fill
  std::uint64_t s;
  std::uint64_t next() {
    s += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = s;
    z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdull;
    z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ull;
    return z ^ (z >> 33);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
};

struct EventTimer {
  cudaStream_t stream;
  cudaEvent_t start, stop;
  EventTimer() {
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
  }
  // Median over `reps` batches of the time per call of `calls` back-to-back calls.
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

int rotation(std::size_t bytes, std::size_t l2) {
  return static_cast<int>(std::clamp<std::size_t>((3 * l2 + bytes - 1) / std::max<std::size_t>(bytes, 1), 1, 64));
}

struct Result {
  std::string shape, kernel;
  double bits_per_weight, us, gbps, of_copy, vs_uniform;
};

using BCQLaunch = std::function<void(const BCQMatrixView&, const float*, float*, cudaStream_t)>;

template <class Format>
std::pair<double, std::size_t> time_bcq(EventTimer& t, index_t rows, index_t cols, const float* x, float* y,
                                        std::size_t l2, int reps, const BCQLaunch& launch) {
  BCQPacked<Format> p(rows, cols);
  Mix64 rng{static_cast<std::uint64_t>(rows * 31 + cols + Format::bits)};
  for (auto& w : p.planes()) w = static_cast<std::uint32_t>(rng.next());
  for (auto& a : p.alphas()) a = to_half(0.001f + 0.01f * rng.uniform());
  for (auto& o : p.offsets()) o = to_half(0.01f * (rng.uniform() - 0.5f));
  const int n = rotation(p.bytes(), l2);
  std::vector<std::unique_ptr<kc::DeviceBCQMatrix<Format>>> mats;
  for (int i = 0; i < n; ++i) mats.push_back(std::make_unique<kc::DeviceBCQMatrix<Format>>(p));
  const double us = t.median_us([&](int i) { launch(mats[static_cast<std::size_t>(i % n)]->view(), x, y, t.stream); },
                                4 * n, reps);
  return {us, p.bytes()};
}

template <class Format>
std::pair<double, std::size_t> time_uniform(EventTimer& t, index_t rows, index_t cols, const float* x, float* y,
                                            std::size_t l2, int reps) {
  UniformPacked<Format> p(rows, cols);
  Mix64 rng{static_cast<std::uint64_t>(rows * 17 + cols)};
  for (auto& w : p.codes()) w = static_cast<std::uint32_t>(rng.next());
  for (auto& s : p.scales()) s = to_half(0.001f + 0.01f * rng.uniform());
  for (auto& z : p.zero_words()) z = static_cast<std::uint32_t>(rng.next());
  const int n = rotation(p.bytes(), l2);
  std::vector<std::unique_ptr<kc::DeviceUniformMatrix<Format>>> mats;
  for (int i = 0; i < n; ++i) mats.push_back(std::make_unique<kc::DeviceUniformMatrix<Format>>(p));
  const double us =
      t.median_us([&](int i) { mats[static_cast<std::size_t>(i % n)]->matvec(x, y, t.stream); }, 4 * n, reps);
  return {us, p.bytes()};
}

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
                  "  --variants  also time the tiled and general kernels and other tile shapes\n"
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
  EventTimer t;

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

  struct Shape {
    index_t rows, cols;
  };
  std::vector<Shape> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {8192, 8192}, {1536, 576}};
  if (quick) shapes = {{4096, 4096}, {11008, 4096}};

  std::vector<Result> results;
  for (const Shape& sh : shapes) {
    const index_t R = sh.rows, C = sh.cols;
    Mix64 rng{7};
    std::vector<float> xh(static_cast<std::size_t>(C));
    for (auto& v : xh) v = rng.uniform() - 0.5f;
    float *x = nullptr, *y = nullptr;
    check(cudaMalloc(&x, xh.size() * sizeof(float)), "cudaMalloc x");
    check(cudaMalloc(&y, static_cast<std::size_t>(R) * sizeof(float)), "cudaMalloc y");
    check(cudaMemcpy(x, xh.data(), xh.size() * sizeof(float), cudaMemcpyHostToDevice), "copy x");
    const std::string shape = std::to_string(R) + "x" + std::to_string(C);
    const double n_weights = static_cast<double>(R) * static_cast<double>(C);

    auto record = [&](const std::string& kernel, std::pair<double, std::size_t> timed, double uniform_us) {
      const auto [us, bytes] = timed;
      const double gbps = static_cast<double>(bytes) / (us * 1e3);
      results.push_back({shape, kernel, 8.0 * static_cast<double>(bytes) / n_weights, us, gbps, gbps / copy_gbps,
                         uniform_us > 0 ? uniform_us / us : 0.0});
    };
    auto run_bits = [&]<int Bits>(std::integral_constant<int, Bits>) {
      const auto uni = time_uniform<Uniform<Bits, 128>>(t, R, C, x, y, l2, reps);
      record("uniform:" + std::to_string(Bits) + ":128 (baseline)", uni, uni.first);
      auto bcq = [&]<class Format>(std::type_identity<Format>, const std::string& variant, const BCQLaunch& launch) {
        record(Format::name() + variant, time_bcq<Format>(t, R, C, x, y, l2, reps, launch), uni.first);
      };
      using G = BCQ<Bits, 128>;
      using W = BCQ<Bits, whole_row>;
      bcq(std::type_identity<G>{}, "", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
        kc::launch_bcq_matvec<G>(m, xx, yy, s);
      });
      bcq(std::type_identity<W>{}, "", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
        kc::launch_bcq_matvec<W>(m, xx, yy, s);
      });
      if (variants) {
        bcq(std::type_identity<G>{}, " tiled 8x4", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
          kc::launch_bcq_matvec_tiled<G>(m, xx, yy, s);
        });
        bcq(std::type_identity<G>{}, " general", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
          kc::launch_bcq_matvec_general<G>(m, xx, yy, s);
        });
        bcq(std::type_identity<G>{}, " staged 16x4", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
          kc::launch_bcq_matvec_staged<G, 16, 4>(m, xx, yy, s);
        });
        bcq(std::type_identity<G>{}, " staged 4x8", [](const BCQMatrixView& m, const float* xx, float* yy, cudaStream_t s) {
          kc::launch_bcq_matvec_staged<G, 4, 8>(m, xx, yy, s);
        });
      }
    };
    run_bits(std::integral_constant<int, 2>{});
    run_bits(std::integral_constant<int, 3>{});
    run_bits(std::integral_constant<int, 4>{});
    cudaFree(x);
    cudaFree(y);
    check(cudaDeviceSynchronize(), "shape done");
    std::printf("  %s done\n", shape.c_str());
    std::fflush(stdout);
  }

  std::printf("\n| shape | kernel | bits/w | time (us) | GB/s | of copy BW | vs uniform |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results)
    std::printf("| %s | %s | %.3f | %.1f | %.0f | %.0f%% | %.2fx |\n", r.shape.c_str(), r.kernel.c_str(),
                r.bits_per_weight, r.us, r.gbps, 100.0 * r.of_copy, r.vs_uniform);
  if (csv_path) {
    if (FILE* f = std::fopen(csv_path, "w")) {
      std::fprintf(f, "device,copy_gbps,shape,kernel,bits_per_weight,us,gbps,of_copy,vs_uniform\n");
      for (const Result& r : results)
        std::fprintf(f, "%s,%.1f,%s,%s,%.4f,%.3f,%.1f,%.4f,%.4f\n", prop.name, copy_gbps, r.shape.c_str(),
                     r.kernel.c_str(), r.bits_per_weight, r.us, r.gbps, r.of_copy, r.vs_uniform);
      std::fclose(f);
    }
  }
  return 0;
}
