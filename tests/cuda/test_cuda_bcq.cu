// The CUDA BCQ kernels against the CPU reference: the default dispatch (staged), the tiled and the general
// kernels on odd shapes (rows and columns multiples of nothing, a short last group, whole-row groups,
// partial row tiles, every bit width, other tile sizes), a row too wide to stage, and the dequantize
// kernel element by element. Without a GPU it reports itself as skipped; the shared arithmetic is
// covered on the host by test_kernels_bcq.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/bcq_matvec.hpp>
#include <lowbit/kernels/cuda/bcq_matvec.cuh>
#include <lowbit/quantizer/bcq.hpp>
#include <vector>

using namespace lowbit;
namespace kc = lowbit::kernels::cuda;

namespace {

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

enum class Path { Auto, Staged, Tiled, General, Staged16x2, Tiled4x8 };

template <class Format>
void check_against_cpu(index_t rows, index_t cols, std::uint64_t seed, Path path = Path::Auto) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(rows * cols)), x(static_cast<std::size_t>(cols));
  for (auto& v : w) v = static_cast<float>(rng.normal());
  for (auto& v : x) v = static_cast<float>(rng.normal());
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> ref(static_cast<std::size_t>(rows)), got(static_cast<std::size_t>(rows));
  kernels::cpu::bcq_matvec_reference(packed, x.data(), ref.data());

  kc::DeviceBCQMatrix<Format> device(packed);
  float *x_dev = nullptr, *y_dev = nullptr;
  kc::bcq_check_cuda(cudaMalloc(&x_dev, x.size() * sizeof(float)), "cudaMalloc x");
  kc::bcq_check_cuda(cudaMalloc(&y_dev, got.size() * sizeof(float)), "cudaMalloc y");
  kc::bcq_check_cuda(cudaMemcpy(x_dev, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "copy x");
  cudaStream_t stream;
  kc::bcq_check_cuda(cudaStreamCreate(&stream), "stream");
  kc::bcq_check_cuda(cudaMemset(y_dev, 0xff, got.size() * sizeof(float)), "poison y");  // NaN: unwritten rows fail
  switch (path) {
    case Path::Auto: device.matvec(x_dev, y_dev, stream); break;
    case Path::Staged: kc::launch_bcq_matvec_staged<Format>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled: kc::launch_bcq_matvec_tiled<Format>(device.view(), x_dev, y_dev, stream); break;
    case Path::General: kc::launch_bcq_matvec_general<Format>(device.view(), x_dev, y_dev, stream); break;
    case Path::Staged16x2: kc::launch_bcq_matvec_staged<Format, 16, 2>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled4x8: kc::launch_bcq_matvec_tiled<Format, 4, 8>(device.view(), x_dev, y_dev, stream); break;
  }
  kc::bcq_check_cuda(cudaStreamSynchronize(stream), "sync");
  kc::bcq_check_cuda(cudaMemcpy(got.data(), y_dev, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy y");
  cudaStreamDestroy(stream);
  cudaFree(x_dev);
  cudaFree(y_dev);

  index_t bad_rows = 0;
  for (index_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (index_t c = 0; c < cols; ++c) scale += std::fabs(double(packed.weight(r, c)) * x[c]);
    if (!(std::fabs(double(got[r]) - ref[r]) <= 1e-4 * scale + 1e-6)) {  // NaN (unwritten) fails too
      if (bad_rows++ == 0)
        std::printf("%s %lldx%lld: row %lld: GPU %.7g vs CPU reference %.7g\n", Q::name().c_str(),
                    static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(r),
                    static_cast<double>(got[r]), static_cast<double>(ref[r]));
    }
  }
  CHECK(bad_rows == 0);
}

template <class Format>
void check_dequantize(index_t rows, index_t cols, std::uint64_t seed) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (auto& v : w) v = static_cast<float>(rng.normal());
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> ref(w.size()), got(w.size());
  Q::dequantize(packed, MatrixView<float>(ref.data(), rows, cols));
  kc::DeviceBCQMatrix<Format> device(packed);
  float* w_dev = nullptr;
  kc::bcq_check_cuda(cudaMalloc(&w_dev, got.size() * sizeof(float)), "cudaMalloc w");
  device.dequantize(w_dev);
  kc::bcq_check_cuda(cudaDeviceSynchronize(), "sync");
  kc::bcq_check_cuda(cudaMemcpy(got.data(), w_dev, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy w");
  cudaFree(w_dev);
  index_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) bad += got[i] != ref[i];  // the same fp32 operations: exact
  CHECK_MESSAGE(bad == 0, Q::name(), " ", rows, "x", cols, ": ", bad, " elements differ");
}

}  // namespace

TEST_CASE("bcq: CUDA matvec equals the CPU reference") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  check_against_cpu<BCQ<3, 128>>(4096, 4096, 1);
  check_against_cpu<BCQ<3, whole_row>>(4096, 4096, 2);
  check_against_cpu<BCQ<2, 128>>(37, 1000, 3);
  check_against_cpu<BCQ<4, 64>>(129, 333, 4);
  check_against_cpu<BCQ<1, whole_row>>(3, 200, 5);
  check_against_cpu<BCQ<2, 32>>(1001, 576, 6);
  check_against_cpu<BCQ<4, whole_row>>(17, 4097, 7);
  check_against_cpu<BCQ<3, 64>>(1, 1536, 8);
  check_against_cpu<BCQ<1, 128>>(576, 1536, 9);
}

TEST_CASE("bcq: CUDA staged, tiled and general kernels on every bit width and partial tiles") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  check_against_cpu<BCQ<1, 32>>(5, 96, 10, Path::Staged);
  check_against_cpu<BCQ<2, whole_row>>(130, 200, 11, Path::Tiled);
  check_against_cpu<BCQ<3, 128>>(61, 1537, 12, Path::General);
  check_against_cpu<BCQ<4, 128>>(577, 4096, 13, Path::Tiled);
  check_against_cpu<BCQ<3, 32>>(99, 2048, 14, Path::Staged16x2);
  check_against_cpu<BCQ<2, 64>>(1003, 1000, 15, Path::Tiled4x8);
  check_against_cpu<BCQ<4, 32>>(300, 576, 16, Path::General);
  // more than 48 KiB of activations in shared memory (opt-in), and a row too wide to stage at all
  check_against_cpu<BCQ<3, 128>>(70, 28672, 17);
  check_against_cpu<BCQ<2, whole_row>>(3, 45056, 18);
}

TEST_CASE("bcq: CUDA dequantize equals the CPU dequantize") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  check_dequantize<BCQ<3, 128>>(33, 1000, 20);
  check_dequantize<BCQ<1, whole_row>>(3, 200, 21);
  check_dequantize<BCQ<4, 32>>(17, 4096, 22);
  check_dequantize<BCQ<2, 64>>(1, 96, 23);
}
