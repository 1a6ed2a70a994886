// The CUDA Uniform matvec against the CPU reference on odd shapes (rows and columns multiples of nothing,
// a short last group, whole-row groups, symmetric mode). Without a GPU it reports itself as skipped;
// the same row routine is covered on the host by test_kernels_uniform.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <lowbit/core/rng.hpp>
#include <lowbit/cuda.cuh>
#include <lowbit/kernels/cpu/uniform_matvec.hpp>
#include <lowbit/quantizer.hpp>
#include <vector>

using namespace lowbit;

namespace {

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

template <class Format>
void check_against_cpu(index_t rows, index_t cols, std::uint64_t seed) {
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
  device.matvec(x_dev, y_dev, stream);
  kernels::cuda::check_cuda(cudaStreamSynchronize(stream), "sync");
  kernels::cuda::check_cuda(cudaMemcpy(got.data(), y_dev, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy y");
  cudaStreamDestroy(stream);
  cudaFree(x_dev);
  cudaFree(y_dev);

  index_t bad_rows = 0;
  for (index_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (index_t c = 0; c < cols; ++c) scale += std::fabs(double(packed.weight(r, c)) * x[c]);
    if (std::fabs(double(got[r]) - ref[r]) > 1e-5 * scale + 1e-6) {
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
