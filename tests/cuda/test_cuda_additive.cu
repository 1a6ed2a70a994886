// The CUDA additive (AQLM) kernels against the CPU reference: Kx8 matvec with shared-memory codebooks,
// the 1x16 / 2x15 gather matvec, dequantize, and the beam-search top-k scoring step against a host
// sort of the same scores. Without a GPU every case prints "[skipped] no CUDA device"; the LOWBIT_HD
// arithmetic the kernels use is tested on the host by test_additive_format.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <lowbit/core/bitpack.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/additive_reference.hpp>
#include <lowbit/kernels/cuda/additive_beam.cuh>
#include <lowbit/kernels/cuda/additive_matvec.cuh>

#include "../test_util.hpp"

using namespace lowbit;
using namespace lowbit::kernels::cuda;

namespace {

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Random codes with fp16-exact codebooks and scales, packed as format/additive.hpp stores them.
struct HostMatrix {
  AdditiveCodes a;
  std::vector<std::uint32_t> words;
  index_t words_per_row = 0;
  std::vector<std::uint16_t> codebooks, scales;
};

HostMatrix make_matrix(const AdditiveShape& s, std::uint64_t seed) {
  Rng rng(seed);
  HostMatrix h;
  h.a = AdditiveCodes(s);
  for (auto& c : h.a.codes) c = static_cast<std::uint32_t>(rng.below(static_cast<std::uint64_t>(s.codebook_size())));
  for (auto& v : h.a.codebooks) v = half_bits_to_float(float_to_half_bits(static_cast<float>(rng.normal() * 0.1)));
  for (auto& v : h.a.scales) v = half_bits_to_float(float_to_half_bits(static_cast<float>(0.5 + rng.uniform())));
  h.words_per_row = packed_words(s.codes_per_row(), s.code_bits);
  h.words.assign(static_cast<std::size_t>(s.rows * h.words_per_row), 0u);
  for (index_t o = 0; o < s.rows; ++o)
    for (index_t i = 0; i < s.codes_per_row(); ++i)
      pack_code(h.words.data() + o * h.words_per_row, i, s.code_bits, h.a.codes[static_cast<std::size_t>(o * s.codes_per_row() + i)]);
  for (float v : h.a.codebooks) h.codebooks.push_back(float_to_half_bits(v));
  for (float v : h.a.scales) h.scales.push_back(float_to_half_bits(v));
  return h;
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  void* p = nullptr;
  check_cuda_status(cudaMalloc(&p, std::max<std::size_t>(1, host.size()) * sizeof(T)), "cudaMalloc");
  check_cuda_status(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return static_cast<T*>(p);
}
template <class T>
std::vector<T> host_copy(const T* device, std::size_t n) {
  std::vector<T> out(n);
  check_cuda_status(cudaMemcpy(out.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy back");
  return out;
}

enum class Path { Auto, General, Tiled4x8 };

void check_matvec(const AdditiveShape& s, Path path = Path::Auto) {
  const HostMatrix h = make_matrix(s, 7 + static_cast<std::uint64_t>(s.rows));
  Rng rng(3);
  std::vector<float> x(static_cast<std::size_t>(s.cols));
  for (auto& v : x) v = static_cast<float>(rng.normal());
  std::vector<float> ref(static_cast<std::size_t>(s.rows)), dense_ref(static_cast<std::size_t>(s.rows * s.cols));
  additive_matvec_reference(h.a, x.data(), ref.data());
  additive_dequantize_reference(h.a, as_matrix(dense_ref, s.rows, s.cols));
  DeviceAdditiveMatrix m(s, h.words, h.words_per_row, h.codebooks, h.scales);
  float* x_dev = device_copy(x);
  std::vector<float> zeros(static_cast<std::size_t>(s.rows * s.cols), 0.0f);
  // NaN-poisoned output: a row the kernel never writes fails the comparison.
  float* y_dev = device_copy(std::vector<float>(static_cast<std::size_t>(s.rows), std::nanf("")));
  float* w_dev = device_copy(zeros);
  switch (path) {
    case Path::Auto: m.matvec(x_dev, y_dev); break;
    case Path::General: launch_additive_matvec_general(m.view(), x_dev, y_dev); break;
    case Path::Tiled4x8: launch_additive_matvec_tiled<4, 8>(m.view(), x_dev, y_dev); break;
  }
  m.dequantize(w_dev);
  check_cuda_status(cudaDeviceSynchronize(), "sync");
  const auto y = host_copy(y_dev, ref.size());
  const auto w = host_copy(w_dev, zeros.size());
  cudaFree(x_dev);
  cudaFree(y_dev);
  cudaFree(w_dev);
  double max_ref = 0.0, max_err = 0.0;
  bool all_finite = true;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max<double>(max_ref, std::abs(ref[i]));
    max_err = std::max<double>(max_err, std::abs(y[i] - ref[i]));
    all_finite = all_finite && std::isfinite(y[i]);
  }
  INFO(s.num_codebooks << "x" << s.code_bits << " g" << s.group_size << " " << s.rows << "x" << s.cols
                       << (additive_tiled_applies(s, x_dev) ? " (tiled)" : " (general)"));
  CHECK(all_finite);
  CHECK(max_err <= 1e-5 * (max_ref + 1.0) * std::sqrt(static_cast<double>(s.cols)));
  CHECK(w == dense_ref);
}

}  // namespace

TEST_CASE("CUDA additive matvec and dequantize equal the CPU reference") {
  if (!have_device()) LOWBIT_SKIP("no CUDA device");
  for (const AdditiveShape s : {AdditiveShape{4096, 4096, 2, 8, 8}, AdditiveShape{133, 250, 2, 8, 8},
                                AdditiveShape{70, 120, 4, 8, 8}, AdditiveShape{300, 576, 1, 16, 8},
                                AdditiveShape{33, 52, 2, 15, 8}, AdditiveShape{29, 70, 3, 5, 4}})
    check_matvec(s);
}

TEST_CASE("CUDA additive tiled matvec: every group size, partial tiles, 64 KiB of codebooks, forced paths") {
  if (!have_device()) LOWBIT_SKIP("no CUDA device");
  for (const AdditiveShape s : {AdditiveShape{1001, 576, 4, 6, 8}, AdditiveShape{77, 1536, 3, 7, 8},
                                AdditiveShape{9, 64, 8, 8, 8}, AdditiveShape{13, 96, 2, 8, 16},
                                AdditiveShape{5, 64, 1, 8, 32}, AdditiveShape{31, 34, 2, 4, 2},
                                AdditiveShape{1536, 576, 2, 8, 8}})
    check_matvec(s);
  check_matvec(AdditiveShape{1537, 4096, 2, 8, 8}, Path::Tiled4x8);
  check_matvec(AdditiveShape{300, 2048, 2, 8, 8}, Path::General);
}

TEST_CASE("CUDA beam-search scoring keeps each row's best candidates") {
  if (!have_device()) LOWBIT_SKIP("no CUDA device");
  for (const index_t K : {index_t{256}, index_t{4096}}) {
    const index_t rows = 37;
    const int G = 8, beam = 5;
    Rng rng(11);
    std::vector<float> q(static_cast<std::size_t>(rows * G)), scales(static_cast<std::size_t>(rows)),
        codebook(static_cast<std::size_t>(K * G)), quad(static_cast<std::size_t>(K));
    for (auto& v : q) v = static_cast<float>(rng.normal());
    for (auto& v : scales) v = static_cast<float>(0.5 + rng.uniform());
    for (auto& v : codebook) v = static_cast<float>(rng.normal());
    for (auto& v : quad) v = static_cast<float>(rng.uniform());
    float *q_d = device_copy(q), *s_d = device_copy(scales), *c_d = device_copy(codebook), *quad_d = device_copy(quad);
    std::uint32_t* codes_d = device_copy(std::vector<std::uint32_t>(static_cast<std::size_t>(rows * beam), 0u));
    float* scores_d = device_copy(std::vector<float>(static_cast<std::size_t>(rows * beam), 0.0f));
    launch_additive_beam_topk(q_d, s_d, c_d, quad_d, rows, K, G, beam, codes_d, scores_d);
    check_cuda_status(cudaDeviceSynchronize(), "sync");
    const auto codes = host_copy(codes_d, static_cast<std::size_t>(rows * beam));
    const auto scores = host_copy(scores_d, static_cast<std::size_t>(rows * beam));
    for (void* p : {static_cast<void*>(q_d), static_cast<void*>(s_d), static_cast<void*>(c_d), static_cast<void*>(quad_d),
                    static_cast<void*>(codes_d), static_cast<void*>(scores_d)})
      cudaFree(p);
    for (index_t o = 0; o < rows; ++o) {
      std::vector<float> host(static_cast<std::size_t>(K));
      const float s2 = scales[o] * scales[o];
      for (index_t k = 0; k < K; ++k)
        host[k] = additive_candidate_score(codebook.data() + k * G, q.data() + o * G, G, s2, quad[k]);
      std::vector<index_t> order(static_cast<std::size_t>(K));
      std::iota(order.begin(), order.end(), index_t{0});
      std::partial_sort(order.begin(), order.begin() + beam, order.end(), [&](index_t a, index_t b) { return host[a] < host[b]; });
      for (int t = 0; t < beam; ++t) {
        CHECK(scores[o * beam + t] == doctest::Approx(host[order[t]]).epsilon(1e-5));
        CHECK(host[codes[o * beam + t]] == doctest::Approx(scores[o * beam + t]).epsilon(1e-5));
      }
    }
  }
}
