// The CUDA 1-bit-activation kernels (kernels/cuda/sign_matvec.cuh) against the CPU: the matvec (default
// dispatch, the float4 and the general kernel, a misaligned W that must take the general one) against
// sign_matvec_reference on the SmolLM2 shapes and odd ones (1x1, 7x100, 33x1000, 5x17), for random
// signs, all +1 and all −1; the packing kernel bit for bit against pack_signs (0, −0, NaN, padding); the
// row-sum kernel against sign_rowsums. Without a GPU it reports itself as skipped; the shared arithmetic
// is covered on the host by test_kernels_sign.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/sign_matvec.hpp>
#include <lowbit/kernels/cuda/sign_matvec.cuh>
#include <string>
#include <vector>

using namespace lowbit;
namespace kc = lowbit::kernels::cuda;
namespace cpu = lowbit::kernels::cpu;

namespace {

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

template <class T>
T* upload(const std::vector<T>& host, std::size_t extra = 0) {
  void* p = nullptr;
  kc::sign_check_cuda(cudaMalloc(&p, (host.size() + extra) * sizeof(T)), "cudaMalloc");
  kc::sign_check_cuda(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> download(const T* device, std::size_t n) {
  std::vector<T> host(n);
  kc::sign_check_cuda(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy back");
  return host;
}

enum class Signs { Random, AllPlus, AllMinus };
enum class Path { Auto, Vec4, General, Misaligned };

void check_matvec(index_t rows, index_t cols, Signs kind, Path path, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(rows * cols)), v(static_cast<std::size_t>(cols));
  for (auto& x : w) x = static_cast<float>(rng.normal());
  for (auto& x : v) x = kind == Signs::AllPlus ? 1.0f : kind == Signs::AllMinus ? -1.0f : static_cast<float>(rng.normal());
  std::vector<std::uint64_t> bits(static_cast<std::size_t>(cpu::signs_words(cols)));
  cpu::pack_signs(v.data(), cols, bits.data());
  std::vector<float> rowsum(static_cast<std::size_t>(rows)), ref(static_cast<std::size_t>(rows));
  cpu::sign_rowsums(w.data(), rows, cols, rowsum.data());
  cpu::sign_matvec_reference(w.data(), rowsum.data(), bits.data(), rows, cols, ref.data());

  // Misaligned: W one float into its buffer, so the float4 kernel must not be taken.
  std::vector<float> w_dev_host = w;
  if (path == Path::Misaligned) w_dev_host.insert(w_dev_host.begin(), 0.0f);
  float* w_buf = upload(w_dev_host);
  const float* w_dev = w_buf + (path == Path::Misaligned ? 1 : 0);
  float* rowsum_dev = upload(rowsum);
  std::uint64_t* bits_dev = upload(bits);
  float* y_dev = nullptr;
  kc::sign_check_cuda(cudaMalloc(&y_dev, ref.size() * sizeof(float)), "cudaMalloc y");
  kc::sign_check_cuda(cudaMemset(y_dev, 0xff, ref.size() * sizeof(float)), "poison y");  // NaN: unwritten rows fail
  switch (path) {
    case Path::Auto:
    case Path::Misaligned: kc::launch_sign_matvec(w_dev, rowsum_dev, bits_dev, rows, cols, y_dev); break;
    case Path::Vec4: kc::launch_sign_matvec_vec4<8>(w_dev, rowsum_dev, bits_dev, rows, cols, y_dev); break;
    case Path::General: kc::launch_sign_matvec_general(w_dev, rowsum_dev, bits_dev, rows, cols, y_dev); break;
  }
  kc::sign_check_cuda(cudaDeviceSynchronize(), "sync");
  const auto got = download(y_dev, ref.size());
  cudaFree(w_buf);
  cudaFree(rowsum_dev);
  cudaFree(bits_dev);
  cudaFree(y_dev);

  index_t bad = 0;
  for (index_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (index_t c = 0; c < cols; ++c) scale += std::fabs(double(w[r * cols + c]));
    if (!(std::fabs(double(got[r]) - ref[r]) <= 1e-5 * scale + 1e-6) && bad++ == 0)
      std::printf("%lldx%lld path %d: row %lld: GPU %.7g vs CPU %.7g\n", static_cast<long long>(rows),
                  static_cast<long long>(cols), static_cast<int>(path), static_cast<long long>(r),
                  static_cast<double>(got[r]), static_cast<double>(ref[r]));
  }
  CHECK_MESSAGE(bad == 0, rows, "x", cols, ": ", bad, " rows differ");
}

}  // namespace

TEST_CASE("sign: CUDA matvec equals the CPU reference") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  constexpr index_t shapes[][2] = {{1, 1},      {7, 100},    {64, 64},   {576, 576}, {1536, 576},
                                   {576, 1536}, {33, 1000},  {5, 17},    {4096, 4096}, {11008, 4096}};
  std::uint64_t seed = 1;
  for (const auto& s : shapes)
    for (Signs kind : {Signs::Random, Signs::AllPlus, Signs::AllMinus}) check_matvec(s[0], s[1], kind, Path::Auto, seed++);
}

TEST_CASE("sign: CUDA float4 and general kernels, misaligned weights") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  check_matvec(576, 576, Signs::Random, Path::Vec4, 20);
  check_matvec(37, 1000, Signs::Random, Path::Vec4, 21);
  check_matvec(576, 576, Signs::Random, Path::General, 22);
  check_matvec(37, 1001, Signs::Random, Path::General, 23);
  check_matvec(3, 31, Signs::Random, Path::General, 24);
  check_matvec(64, 576, Signs::Random, Path::Misaligned, 25);
  CHECK_THROWS_AS(kc::launch_sign_matvec_vec4(reinterpret_cast<const float*>(16), reinterpret_cast<const float*>(16),
                                              reinterpret_cast<const std::uint64_t*>(16), 4, 6,
                                              reinterpret_cast<float*>(16)),
                  lowbit::Error);
}

TEST_CASE("sign: CUDA pack_signs equals the host bit for bit, and row sums") {
  if (!have_device()) {
    std::printf("[skipped] no CUDA device\n");
    return;
  }
  Rng rng(30);
  for (index_t n : {1, 31, 32, 33, 63, 64, 65, 100, 576, 1000, 4097}) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) {
      const auto k = rng.next_u32() % 6;
      x = k == 0 ? 0.0f : k == 1 ? -0.0f : k == 2 ? std::nanf("") : static_cast<float>(rng.normal());
    }
    std::vector<std::uint64_t> want(static_cast<std::size_t>(cpu::signs_words(n)));
    cpu::pack_signs(v.data(), n, want.data());
    float* v_dev = upload(v);
    std::uint64_t* bits_dev = upload(std::vector<std::uint64_t>(want.size(), ~std::uint64_t{0}));
    kc::launch_pack_signs(v_dev, n, bits_dev);
    kc::sign_check_cuda(cudaDeviceSynchronize(), "sync");
    CHECK_MESSAGE(download(bits_dev, want.size()) == want, "n = ", n);
    cudaFree(v_dev);
    cudaFree(bits_dev);
  }
  const index_t rows = 300, cols = 1001;
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (auto& x : w) x = static_cast<float>(rng.normal());
  std::vector<float> want(static_cast<std::size_t>(rows));
  cpu::sign_rowsums(w.data(), rows, cols, want.data());
  float* w_dev = upload(w);
  float* rs_dev = nullptr;
  kc::sign_check_cuda(cudaMalloc(&rs_dev, want.size() * sizeof(float)), "cudaMalloc");
  kc::launch_sign_rowsums(w_dev, rows, cols, rs_dev);
  kc::sign_check_cuda(cudaDeviceSynchronize(), "sync");
  const auto got = download(rs_dev, want.size());
  index_t bad = 0;
  for (index_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (index_t c = 0; c < cols; ++c) scale += std::fabs(double(w[r * cols + c]));
    bad += !(std::fabs(double(got[r]) - want[r]) <= 1e-5 * scale);
  }
  CHECK(bad == 0);
  cudaFree(w_dev);
  cudaFree(rs_dev);
}
