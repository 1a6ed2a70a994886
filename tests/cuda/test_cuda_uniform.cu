// The CUDA Uniform matvec against the CPU reference: the general kernel on odd shapes (rows and columns
// multiples of nothing, a short last group, whole-row groups, symmetric mode), the tiled kernel on every
// bit width with row counts that leave a partial tile, each tile variant the benchmark times, and the
// general kernel forced on a shape the tiled one would take. Without a GPU it reports itself as skipped;
// the shared arithmetic is covered on the host by test_kernels_uniform and test_format_uniform.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <lowbit/core/rng.hpp>
#include <lowbit/cuda.cuh>
#include <lowbit/kernels/cpu/uniform_matvec.hpp>
#include <lowbit/quantizer/uniform.hpp>
#include <vector>

using namespace lowbit;

namespace {

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

enum class Path { Auto, General, Tiled2x4, Tiled8x8, Tiled4x4, Tiled8x4, Staged16x4, Staged4x8 };

template <class Format>
void check_against_cpu(index_t rows, index_t cols, std::uint64_t seed, Path path = Path::Auto) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(rows * cols)), x(static_cast<std::size_t>(cols));
  for (auto& v : w) v = static_cast<float>(rng.normal());
  for (auto& v : x) v = static_cast<float>(rng.normal());
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> ref(static_cast<std::size_t>(rows)), got(static_cast<std::size_t>(rows));
  kernels::cpu::uniform_matvec_reference(packed, x.data(), ref.data());

  kernels::cuda::DeviceUniformMatrix<Format> device(packed);
  float *x_dev = nullptr, *y_dev = nullptr;
  kernels::cuda::check_cuda(cudaMalloc(&x_dev, x.size() * sizeof(float)), "cudaMalloc x");
  kernels::cuda::check_cuda(cudaMalloc(&y_dev, got.size() * sizeof(float)), "cudaMalloc y");
  kernels::cuda::check_cuda(cudaMemcpy(x_dev, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "copy x");
  cudaStream_t stream;
  kernels::cuda::check_cuda(cudaStreamCreate(&stream), "stream");
  kernels::cuda::check_cuda(cudaMemset(y_dev, 0xff, got.size() * sizeof(float)), "poison y");  // NaN: unwritten rows fail
  switch (path) {
    case Path::Auto: device.matvec(x_dev, y_dev, stream); break;
    case Path::General: kernels::cuda::launch_uniform_matvec_general<Format>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled2x4: kernels::cuda::launch_uniform_matvec_tiled<Format, 2, 4>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled8x8: kernels::cuda::launch_uniform_matvec_tiled<Format, 8, 8>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled4x4: kernels::cuda::launch_uniform_matvec_tiled<Format, 4, 4>(device.view(), x_dev, y_dev, stream); break;
    case Path::Tiled8x4: kernels::cuda::launch_uniform_matvec_tiled<Format, 8, 4>(device.view(), x_dev, y_dev, stream); break;
    case Path::Staged16x4: kernels::cuda::launch_uniform_matvec_staged<Format, 16, 4>(device.view(), x_dev, y_dev, stream); break;
    case Path::Staged4x8: kernels::cuda::launch_uniform_matvec_staged<Format, 4, 8>(device.view(), x_dev, y_dev, stream); break;
  }
  kernels::cuda::check_cuda(cudaStreamSynchronize(stream), "sync");
  kernels::cuda::check_cuda(cudaMemcpy(got.data(), y_dev, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy y");
  cudaStreamDestroy(stream);
  cudaFree(x_dev);
  cudaFree(y_dev);

  index_t bad_rows = 0;
  for (index_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (index_t c = 0; c < cols; ++c) scale += std::fabs(double(packed.weight(r, c)) * x[c]);
    if (!(std::fabs(double(got[r]) - ref[r]) <= 1e-5 * scale + 1e-6)) {  // NaN (unwritten) fails too
      if (bad_rows++ == 0)
        std::printf("%s %lldx%lld: row %lld: GPU %.7g vs CPU reference %.7g\n", Q::name().c_str(),
                    static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(r),
                    static_cast<double>(got[r]), static_cast<double>(ref[r]));
    }
  }
  CHECK(bad_rows == 0);
}

}  // namespace

TEST_CASE("uniform: CUDA matvec equals the CPU reference") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  check_against_cpu<Uniform<4, 128>>(4096, 4096, 1);
  check_against_cpu<Uniform<4, 128>>(37, 1000, 2);
  check_against_cpu<Uniform<2, 64>>(129, 333, 3);
  check_against_cpu<Uniform<2, 128>>(5632, 2048, 4);
  check_against_cpu<Uniform<3, 128>>(61, 1537, 5);
  check_against_cpu<Uniform<3, 64, UniformMode::Symmetric>>(1536, 576, 6);
  check_against_cpu<Uniform<4, 100>>(17, 777, 7);
  check_against_cpu<Uniform<8, whole_row>>(9, 4097, 8);
  check_against_cpu<Uniform<1, 64>>(3, 65, 9);
}

TEST_CASE("uniform: CUDA staged and tiled matvec on every bit width, partial tiles and each tile variant") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  REQUIRE(kernels::cuda::uniform_tiled_applies(UniformPacked<Uniform<4, 128>>(8, 576).view(),
                                               reinterpret_cast<const float*>(std::uintptr_t{256})));
  check_against_cpu<Uniform<1, 64>>(5, 128, 10);
  check_against_cpu<Uniform<2, 32>>(1001, 576, 11);
  check_against_cpu<Uniform<3, 128>>(130, 1536, 12);
  check_against_cpu<Uniform<4, 32>>(577, 4096, 13);
  check_against_cpu<Uniform<4, 128>>(1, 4096, 14);
  check_against_cpu<Uniform<5, 64>>(33, 640, 15);
  check_against_cpu<Uniform<8, whole_row>>(7, 4096, 16);
  check_against_cpu<Uniform<4, 64, UniformMode::Symmetric>>(50, 1024, 17);
  check_against_cpu<Uniform<4, 128>>(1537, 11008, 18, Path::Tiled2x4);
  check_against_cpu<Uniform<2, 128>>(1537, 4096, 19, Path::Tiled8x8);
  check_against_cpu<Uniform<3, 64>>(99, 2048, 20, Path::Tiled4x4);
  check_against_cpu<Uniform<4, 128>>(300, 4096, 21, Path::General);
  check_against_cpu<Uniform<4, 128>>(1001, 4096, 22, Path::Tiled8x4);
  check_against_cpu<Uniform<2, 64>>(1003, 2048, 23, Path::Staged16x4);
  check_against_cpu<Uniform<3, 32>>(77, 8192, 24, Path::Staged4x8);
  // more than 48 KiB of activations in shared memory (opt-in), and a row too wide to stage at all
  check_against_cpu<Uniform<4, 128>>(70, 28672, 25);
  check_against_cpu<Uniform<4, 128>>(3, 45056, 26);
}
