// Additive<M, B, G>: the explicitly instantiated formats satisfy QuantizerFor, pack/unpack round-trips
// exactly, bits_per_weight counts codes + codebooks + scales exactly, every matvec kernel (LUT scalar,
// AVX2, AVX-512, gather) equals dequantize-then-GEMV, and padded columns are masked.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/format/additive.hpp>
#include <lowbit/formats.hpp>
#include <lowbit/kernels/cpu/additive_matvec.hpp>
#include <lowbit/format/additive_shared.hpp>

using namespace lowbit;

// The four formats the issue names, instantiated in full.
template struct lowbit::Quantizer<lowbit::Additive<2, 15, 8>>;
template struct lowbit::Quantizer<lowbit::Additive<1, 16, 8>>;
template struct lowbit::Quantizer<lowbit::Additive<2, 8, 8>>;
template struct lowbit::Quantizer<lowbit::Additive<4, 8, 8>>;

static_assert(QuantizerFor<Quantizer<Additive<2, 15, 8>>>);
static_assert(QuantizerFor<Quantizer<Additive<1, 16, 8>>>);
static_assert(QuantizerFor<Quantizer<Additive<2, 8, 8>>>);
static_assert(QuantizerFor<Quantizer<Additive<4, 8, 8>>>);

namespace {

// Random codes, codebooks and scales for a shape.
AdditiveCodes random_codes(const AdditiveShape& s, std::uint64_t seed) {
  Rng rng(seed);
  AdditiveCodes a(s);
  for (auto& c : a.codes) c = static_cast<std::uint32_t>(rng.below(static_cast<std::uint64_t>(s.codebook_size())));
  for (auto& v : a.codebooks) v = static_cast<float>(rng.normal() * 0.1);
  for (auto& v : a.scales) v = static_cast<float>(0.5 + rng.uniform());
  return a;
}

std::vector<float> random_vector(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = static_cast<float>(rng.normal());
  return x;
}

// y = Ŵ x through the dequantized matrix, in double.
std::vector<double> gemv_dequantized(const AdditivePacked& p, const std::vector<float>& x) {
  std::vector<float> W(static_cast<std::size_t>(p.rows() * p.cols()));
  additive_dequantize(additive_kernel_view(p), as_matrix(W, p.rows(), p.cols()));
  std::vector<double> y(static_cast<std::size_t>(p.rows()), 0.0);
  for (index_t o = 0; o < p.rows(); ++o)
    for (index_t c = 0; c < p.cols(); ++c) y[o] += static_cast<double>(W[o * p.cols() + c]) * x[c];
  return y;
}

void check_kernel(const AdditivePacked& p, AdditiveKernel kernel, const std::vector<float>& x) {
  if (!additive_kernel_available(p.shape(), kernel)) return;
  if (kernel == AdditiveKernel::Avx512Table && !additive_kernel_view(p).tiled_codes) return;
  const auto ref = gemv_dequantized(p, x);
  std::vector<float> y(static_cast<std::size_t>(p.rows()));
  additive_matvec(additive_kernel_view(p), x.data(), y.data(), kernel);
  double max_err = 0.0, max_ref = 0.0;
  for (index_t o = 0; o < p.rows(); ++o) {
    max_err = std::max(max_err, std::abs(y[o] - ref[o]));
    max_ref = std::max(max_ref, std::abs(ref[o]));
  }
  INFO("kernel " << static_cast<int>(kernel) << " shape " << p.rows() << "x" << p.cols());
  double bound = 1e-5 * (max_ref + 1.0) * std::sqrt(static_cast<double>(p.cols()));
  if (kernel == AdditiveKernel::Avx512Table) {
    // int16 table: each lookup is off by at most Δ/2, Δ = max|lut| / 32767, times the row scale.
    std::vector<float> lut(static_cast<std::size_t>(additive_lut_size(p.shape()))), scratch;
    additive_build_lut(additive_kernel_view(p), x.data(), lut.data(), scratch);
    double max_lut = 0.0, max_scale = 0.0;
    for (float v : lut) max_lut = std::max<double>(max_lut, std::abs(v));
    for (index_t o = 0; o < p.rows(); ++o) max_scale = std::max<double>(max_scale, std::abs(additive_kernel_view(p).scales[o]));
    bound += static_cast<double>(p.shape().codes_per_row()) * 0.5 * max_lut / 32767.0 * max_scale * 1.01;
  }
  CHECK(max_err <= bound);
}

}  // namespace

TEST_CASE("Additive names and exact bits per weight") {
  CHECK(Quantizer<Additive<2, 8, 8>>::name() == "additive:2:8:8");
  CHECK(Quantizer<Additive<1, 16, 8>>::name() == "additive:1:16:8");
  // 2x8 g8 on 4096x4096: 2 bits of codes + 2·256·8·16 / 4096² + 16 / 4096.
  const double bpw = Quantizer<Additive<2, 8, 8>>::bits_per_weight(4096, 4096);
  CHECK(bpw == doctest::Approx(2.0 + 2.0 * 256 * 8 * 16 / (4096.0 * 4096.0) + 16.0 / 4096.0).epsilon(1e-12));
  // 1x16 g8: 2 + 65536·8·16/4096² + 16/4096 ≈ 2.504 (the "2.50" of ALGORITHMS.md §1.1).
  CHECK(Quantizer<Additive<1, 16, 8>>::bits_per_weight(4096, 4096) ==
        doctest::Approx(2.0 + 65536.0 * 8 * 16 / (4096.0 * 4096.0) + 16.0 / 4096.0).epsilon(1e-12));
  // The packed object agrees with the closed form, including per-row word padding (15-bit codes).
  const AdditiveShape s{24, 40, 2, 15, 8};  // 5 groups · 2 codes · 15 bits = 150 bits -> 5 words per row
  const auto p = Quantizer<Additive<2, 15, 8>>::pack(random_codes(s, 1));
  CHECK(p.words_per_row() == 5);
  CHECK(p.bytes() == 24u * 5 * 4 + 2u * 32768 * 8 * 2 + 24u * 2);
  CHECK(Quantizer<Additive<2, 15, 8>>::bits_per_weight(p) == doctest::Approx(Quantizer<Additive<2, 15, 8>>::bits_per_weight(24, 40)));
}

TEST_CASE("Additive pack/unpack round-trips codes and fp16-rounds codebooks and scales") {
  for (const AdditiveShape s : {AdditiveShape{7, 50, 2, 15, 8}, AdditiveShape{5, 64, 1, 16, 8},
                                AdditiveShape{9, 37, 2, 8, 8}, AdditiveShape{4, 48, 4, 8, 8}, AdditiveShape{6, 30, 3, 5, 4}}) {
    const AdditiveCodes a = random_codes(s, 7);
    const AdditivePacked p(a);
    const AdditiveCodes b = p.unpack();
    CHECK(b.codes == a.codes);
    for (std::size_t i = 0; i < a.codebooks.size(); ++i) CHECK(b.codebooks[i] == to_float(to_half(a.codebooks[i])));
    for (std::size_t i = 0; i < a.scales.size(); ++i) CHECK(b.scales[i] == to_float(to_half(a.scales[i])));
    // The fast dequantize equals the reference reconstruction of the stored values.
    std::vector<float> fast(static_cast<std::size_t>(s.rows * s.cols)), ref(fast.size());
    additive_dequantize(additive_kernel_view(p), as_matrix(fast, s.rows, s.cols));
    additive_dequantize_reference(b, as_matrix(ref, s.rows, s.cols));
    CHECK(fast == ref);
  }
}

TEST_CASE("Additive rejects codes that do not fit and mismatched storage") {
  AdditiveCodes a = random_codes(AdditiveShape{2, 16, 1, 4, 8}, 3);
  a.codes[1] = 16;
  CHECK_THROWS_AS(AdditivePacked{a}, Error);
  CHECK_THROWS_AS(AdditivePacked(AdditiveShape{2, 16, 1, 4, 8}, {}, {}, {}), Error);
  // Descriptors resolve through the format registry (formats.hpp): the additive ones to their policy.
  constexpr auto additive = []<class F>() { return AdditiveFormat<F>; };
  auto shape_of = [&](const std::string& d) {
    return visit_format_if(d, additive, []<class F>(FormatTag<F>) { return F::shape(0, 0); }, "additive format");
  };
  CHECK_THROWS_AS(shape_of("additive:2:8:7"), Error);
  CHECK_THROWS_AS(shape_of("uniform:4:128"), Error);
  const AdditiveShape s = shape_of("additive:2:8:8");
  CHECK(s.num_codebooks == 2);
  CHECK(s.code_bits == 8);
  CHECK(s.group_size == 8);
}

TEST_CASE("LUT matvec equals dequantize-then-GEMV for every kernel, with padded columns") {
  // Kx8 shapes exercise the LUT kernels (tails of 16-code chunks, odd row counts, padded last group);
  // 1x16 / 2x15 exercise the gather path; B < 8 (1x4, 3x5, 4x6, 3x7) the scalar LUT over unpacked
  // codes and the in-register int16 tables of 64 (B ≤ 6, zero-padded) and 128 entries.
  for (const AdditiveShape s : {AdditiveShape{133, 256, 2, 8, 8}, AdditiveShape{64, 44, 2, 8, 8},
                                AdditiveShape{70, 120, 4, 8, 8}, AdditiveShape{17, 64, 1, 8, 8},
                                AdditiveShape{31, 90, 3, 8, 16}, AdditiveShape{40, 64, 1, 16, 8},
                                AdditiveShape{33, 52, 2, 15, 8}, AdditiveShape{21, 36, 1, 4, 2},
                                AdditiveShape{29, 70, 3, 5, 4}, AdditiveShape{300, 96, 8, 8, 32},
                                AdditiveShape{70, 120, 4, 6, 8}, AdditiveShape{45, 64, 3, 7, 8}}) {
    const AdditivePacked p(random_codes(s, 11 + static_cast<std::uint64_t>(s.rows)));
    const auto x = random_vector(s.cols, 5);
    for (auto k : {AdditiveKernel::Auto, AdditiveKernel::Scalar, AdditiveKernel::Avx2, AdditiveKernel::Avx512,
                   AdditiveKernel::Avx512Table, AdditiveKernel::Gather})
      check_kernel(p, k, x);
  }
}

TEST_CASE("Multithreaded matvec equals the single-threaded result bit for bit") {
  const AdditivePacked p(random_codes(AdditiveShape{512, 512, 2, 8, 8}, 21));
  const auto x = random_vector(512, 22);
  std::vector<float> y1(512), y2(512);
  const int threads = max_threads();
  set_num_threads(1);
  additive_matvec(additive_kernel_view(p), x.data(), y1.data());
  set_num_threads(std::max(2, threads));
  additive_matvec(additive_kernel_view(p), x.data(), y2.data());
  set_num_threads(threads);
  CHECK(y1 == y2);
}

TEST_CASE("Data-free quantize: Additive<2,8,8> reconstructs a Gaussian matrix far better than chance") {
  const index_t rows = 96, cols = 128;
  auto w = random_vector(rows * cols, 31);
  const auto packed = Quantizer<Additive<2, 8, 8>>::quantize(as_matrix(std::as_const(w), rows, cols));
  std::vector<float> wq(w.size());
  Quantizer<Additive<2, 8, 8>>::dequantize(packed, as_matrix(wq, rows, cols));
  double err = 0.0, energy = 0.0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    err += (w[i] - wq[i]) * (w[i] - wq[i]);
    energy += w[i] * w[i];
  }
  // 2 bits per weight on i.i.d. Gaussian data: the rate-distortion bound is 2^-4 = 0.0625; scalar 2-bit
  // Lloyd-Max reaches 0.117. 96 rows give 3072 codes per codebook, enough for a meaningful fit.
  CHECK(err / energy < 0.2);
}

TEST_CASE("shared LOWBIT_HD group decode and dot equal the fp32 reference") {
  const AdditiveShape s{9, 42, 3, 7, 8};  // 7-bit codes straddle words; last group padded
  const auto packed = AdditivePacked(random_codes(s, 41));
  const AdditiveCodes a = packed.unpack();
  const auto x = random_vector(s.cols, 42);
  std::vector<std::uint16_t> bits;
  for (const half_t h : packed.codebooks()) bits.push_back(h.bits);
  std::vector<float> u(static_cast<std::size_t>(s.padded_cols()));
  for (index_t o = 0; o < s.rows; ++o) {
    additive_unscaled_row_reference(a, o, u.data());
    const std::uint32_t* row = packed.codes().data() + o * packed.words_per_row();
    double dot = 0.0;
    for (index_t j = 0; j < s.groups(); ++j) {
      float decoded[8];
      additive_decode_group(bits.data(), s.codebook_size(), s.num_codebooks, s.group_size, row, s.code_bits, j, decoded);
      for (int d = 0; d < 8; ++d) CHECK(decoded[d] == doctest::Approx(u[static_cast<std::size_t>(j * 8 + d)]).epsilon(1e-6));
      dot += additive_group_dot(bits.data(), s.codebook_size(), s.num_codebooks, s.group_size, row, s.code_bits, j, x.data(), s.cols);
    }
    double ref = 0.0;
    for (index_t c = 0; c < s.cols; ++c) ref += static_cast<double>(u[static_cast<std::size_t>(c)]) * x[c];
    CHECK(dot == doctest::Approx(ref).epsilon(1e-5));
  }
}

TEST_CASE("shared LOWBIT_HD fp32-codebook group dot (the tiled CUDA kernel's step) equals the reference") {
  const AdditiveShape s{7, 48, 3, 7, 8};  // 7-bit codes straddle words; whole groups
  const auto packed = AdditivePacked(random_codes(s, 43));
  const AdditiveCodes a = packed.unpack();
  const auto x = random_vector(s.cols, 44);
  std::vector<float> books;
  for (const half_t h : packed.codebooks()) books.push_back(to_float(h));
  std::vector<float> u(static_cast<std::size_t>(s.padded_cols()));
  for (index_t o = 0; o < s.rows; ++o) {
    additive_unscaled_row_reference(a, o, u.data());
    const std::uint32_t* row = packed.codes().data() + o * packed.words_per_row();
    double dot = 0.0;
    for (index_t j = 0; j < s.groups(); ++j)
      dot += additive_group_dot_f32<8>(books.data(), s.codebook_size(), s.num_codebooks, row, s.code_bits, j,
                                       x.data() + j * 8);
    double ref = 0.0;
    for (index_t c = 0; c < s.cols; ++c) ref += static_cast<double>(u[static_cast<std::size_t>(c)]) * x[c];
    CHECK(dot == doctest::Approx(ref).epsilon(1e-5));
  }
}
