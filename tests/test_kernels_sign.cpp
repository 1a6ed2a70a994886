// The 1-bit-activation kernels (issue 17): pack_signs (convention for 0, −0 and NaN, zero padding); every
// sign_matvec path this build has (scalar, AVX2, AVX-512) against the double reference and against the
// dense W'·s computed in double, on shapes from 1x1 to 1536x576 and odd tails (cols 1, 100, 1000), for
// random signs, all +1 and all −1, with garbage bits past cols, at 1 and 2 threads; the LOWBIT_HD
// arithmetic of the CUDA kernels (general and float4 kernels emulated on the host); and the BCQ
// XNOR/popcount path against dequantize(Ŵ)·s for bcq:1:128, bcq:2:128, bcq:3:row and tail shapes.
// Correctness only: speed is bench/bench_sign.cpp's job.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/bcq_sign_matvec.hpp>
#include <lowbit/kernels/cpu/sign_matvec.hpp>
#include <lowbit/quantizer/bcq.hpp>
#include <string>
#include <vector>

#include "test_kernels_util.hpp"

using namespace lowbit;
namespace cpu = lowbit::kernels::cpu;
namespace kn = lowbit::kernels;
using lowbit::test::random_vector;

namespace {

enum class Signs { Random, AllPlus, AllMinus };

const char* signs_name(Signs s) { return s == Signs::Random ? "random" : s == Signs::AllPlus ? "all +1" : "all -1"; }

// Packed signs of n columns, with garbage in the bits past n when `dirty` (kernels must ignore them).
std::vector<std::uint64_t> make_signs(index_t n, Signs kind, Rng& rng, bool dirty) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = kind == Signs::AllPlus ? 1.0f : kind == Signs::AllMinus ? -1.0f : static_cast<float>(rng.normal());
  std::vector<std::uint64_t> bits(static_cast<std::size_t>(cpu::signs_words(n)));
  cpu::pack_signs(v.data(), n, bits.data());
  if (dirty && n % 64) bits.back() |= ~std::uint64_t{0} << (n % 64);
  return bits;
}

// 32-bit view of packed signs (what the CUDA kernels read).
std::vector<std::uint32_t> as_u32(const std::vector<std::uint64_t>& bits) {
  std::vector<std::uint32_t> s(bits.size() * 2);
  std::memcpy(s.data(), bits.data(), bits.size() * 8);
  return s;
}

struct Layer {
  index_t rows, cols;
  std::vector<float> w;       // W' = W·diag(α)
  std::vector<float> rowsum;  // W'·1
};

Layer make_layer(index_t rows, index_t cols, Rng& rng) {
  Layer l{rows, cols, random_vector(rows * cols, rng, rows % 2 == 1), std::vector<float>(static_cast<std::size_t>(rows))};
  std::vector<float> alpha(static_cast<std::size_t>(cols));
  for (auto& a : alpha) a = 0.5f + static_cast<float>(rng.next_u32() % 1000) / 1000.0f;
  const std::vector<float> w0 = l.w;
  cpu::fold_channel_scales(l.w.data(), rows, cols, alpha.data());
  index_t bad = 0;
  for (index_t i = 0; i < rows * cols; ++i) bad += l.w[i] != w0[i] * alpha[i % cols];
  REQUIRE_MESSAGE(bad == 0, "fold_channel_scales: ", bad, " wrong elements");
  cpu::sign_rowsums(l.w.data(), rows, cols, l.rowsum.data());
  return l;
}

// Dense W'·s in double, and Σ|W'| per row (the scale of any summation order's rounding).
void dense(const Layer& l, const std::vector<std::uint64_t>& bits, std::vector<double>& y, std::vector<double>& scale) {
  y.assign(static_cast<std::size_t>(l.rows), 0.0);
  scale.assign(static_cast<std::size_t>(l.rows), 0.0);
  for (index_t r = 0; r < l.rows; ++r)
    for (index_t c = 0; c < l.cols; ++c) {
      const double w = l.w[r * l.cols + c];
      y[r] += w * cpu::unpack_sign(bits.data(), c);
      scale[r] += std::fabs(w);
    }
}

void check_close(const std::string& what, const std::vector<float>& got, const std::vector<double>& want,
                 const std::vector<double>& scale, double rel = 1e-5) {
  for (std::size_t r = 0; r < got.size(); ++r) {
    const double tol = rel * scale[r] + 1e-6;
    if (!(std::fabs(double(got[r]) - want[r]) <= tol)) {  // NaN (an unwritten row) fails too
      FAIL_CHECK(what, " row ", r, ": ", got[r], " vs ", want[r], " (tolerance ", tol, ")");
      return;
    }
  }
}

void check_sign_paths(index_t rows, index_t cols, Signs kind, std::uint64_t seed) {
  Rng rng(seed);
  const Layer l = make_layer(rows, cols, rng);
  const auto bits = make_signs(cols, kind, rng, seed % 2 == 0);
  std::vector<double> want, scale;
  dense(l, bits, want, scale);
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols) + " " + signs_name(kind);
  std::vector<float> ref(static_cast<std::size_t>(rows)), got(static_cast<std::size_t>(rows));
  cpu::sign_matvec_reference(l.w.data(), l.rowsum.data(), bits.data(), rows, cols, ref.data());
  check_close(shape + " reference vs dense", ref, want, scale);
  const std::vector<double> ref_d(ref.begin(), ref.end());
  auto run = [&](const std::string& path, auto&& fn) {
    std::fill(got.begin(), got.end(), std::nanf(""));
    fn();
    check_close(shape + " " + path + " vs reference", got, ref_d, scale);
    check_close(shape + " " + path + " vs dense", got, want, scale);
  };
  run("scalar", [&] { cpu::sign_matvec_scalar(l.w.data(), l.rowsum.data(), bits.data(), rows, cols, got.data()); });
#if defined(LOWBIT_HAVE_SIGN_AVX2)
  run("avx2", [&] { cpu::sign_matvec_avx2(l.w.data(), l.rowsum.data(), bits.data(), rows, cols, got.data()); });
#endif
#if defined(LOWBIT_HAVE_SIGN_AVX512)
  run("avx512", [&] { cpu::sign_matvec_avx512(l.w.data(), l.rowsum.data(), bits.data(), rows, cols, got.data()); });
#endif
  run(std::string("dispatch ") + cpu::sign_matvec_path(),
      [&] { cpu::sign_matvec(l.w.data(), l.rowsum.data(), bits.data(), rows, cols, got.data()); });

  // The CUDA kernels' arithmetic on the host: the general kernel (a warp per row, lane l on columns
  // l, l + 32, ...) and, when rows are whole float4 units, the vector kernel.
  const auto s32 = as_u32(bits);
  std::vector<float> warp(static_cast<std::size_t>(rows)), quads(static_cast<std::size_t>(rows));
  for (index_t r = 0; r < rows; ++r) {
    float sel = 0.0f, selq = 0.0f;
    for (index_t lane = 0; lane < 32; ++lane) {
      sel += kn::sign_row_partial(l.w.data() + r * cols, s32.data(), cols, lane, 32);
      if (cols % 4 == 0) selq += kn::sign_row_partial_quads(l.w.data() + r * cols, s32.data(), cols / 4, lane, 32);
    }
    warp[r] = kn::sign_combine(sel, l.rowsum[r]);
    quads[r] = kn::sign_combine(selq, l.rowsum[r]);
  }
  check_close(shape + " cuda general (host)", warp, want, scale);
  if (cols % 4 == 0) check_close(shape + " cuda quads (host)", quads, want, scale);
}

// Σ|ŵ|·1 scale and dequantize(Ŵ)·s in double for a BCQ matrix.
template <class Format>
void check_bcq_sign(index_t rows, index_t cols, std::uint64_t seed, Signs kind = Signs::Random) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  const auto w = random_vector(rows * cols, rng, seed % 2 == 1);
  auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> w_hat(static_cast<std::size_t>(rows * cols));
  Q::dequantize(packed, MatrixView<float>(w_hat.data(), rows, cols));
  const auto bits = make_signs(cols, kind, rng, seed % 2 == 0);
  std::vector<double> want(static_cast<std::size_t>(rows), 0.0), scale(static_cast<std::size_t>(rows), 0.0);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      want[r] += double(w_hat[r * cols + c]) * cpu::unpack_sign(bits.data(), c);
      scale[r] += std::fabs(double(w_hat[r * cols + c]));
    }
  const std::string shape = Q::name() + " " + std::to_string(rows) + "x" + std::to_string(cols) + " " + signs_name(kind);
  std::vector<float> ref(static_cast<std::size_t>(rows)), got(static_cast<std::size_t>(rows), std::nanf(""));
  cpu::bcq_sign_matvec_reference(packed, bits.data(), ref.data());
  check_close(shape + " reference vs dequantize", ref, want, scale);
  cpu::bcq_sign_matvec(packed, bits.data(), got.data());
  check_close(shape + " popcount vs dequantize", got, want, scale);
  // Nonzero plane padding bits (the format keeps them zero) must not change the popcount path.
  if (cols % 32) {
    for (index_t r = 0; r < rows; ++r)
      for (int i = 0; i < Format::bits; ++i)
        packed.planes()[static_cast<std::size_t>((r * Format::bits + i) * packed.words_per_plane() +
                                                 packed.words_per_plane() - 1)] |= ~((1u << (cols % 32)) - 1u);
    std::vector<float> dirty(static_cast<std::size_t>(rows));
    cpu::bcq_sign_matvec(packed, bits.data(), dirty.data());
    CHECK_MESSAGE(dirty == got, shape, ": plane padding bits changed the result");
  }
}

}  // namespace

TEST_CASE("sign kernels: pack_signs convention, padding and round trip") {
  Rng rng(7);
  for (index_t n : {1, 15, 16, 17, 63, 64, 65, 100, 576, 1000}) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (index_t c = 0; c < n; ++c) {
      const auto k = rng.next_u32() % 8;
      v[c] = k == 0 ? 0.0f : k == 1 ? -0.0f : k == 2 ? std::nanf("") : k == 3 ? 1e-30f : static_cast<float>(rng.normal());
    }
    std::vector<std::uint64_t> bits(static_cast<std::size_t>(cpu::signs_words(n)), ~std::uint64_t{0});
    CHECK(cpu::signs_words(n) == (n + 63) / 64);
    cpu::pack_signs(v.data(), n, bits.data());
    index_t bad = 0;
    for (index_t c = 0; c < n; ++c) {
      const bool positive = v[c] > 0.0f;  // 0, -0 and NaN are -1
      bad += ((bits[c >> 6] >> (c & 63)) & 1u) != (positive ? 1u : 0u);
      bad += cpu::unpack_sign(bits.data(), c) != (positive ? 1.0f : -1.0f);
      bad += kn::sign_is_positive(v[c]) != positive;
    }
    CHECK_MESSAGE(bad == 0, "n = ", n, ": ", bad, " wrong bits");
    if (n % 64) CHECK_MESSAGE((bits.back() >> (n % 64)) == 0, "n = ", n, ": padding bits are not zero");
    // round trip: unpacked ±1 packs to the same bits; the 32-bit view agrees
    std::vector<float> s(static_cast<std::size_t>(n));
    for (index_t c = 0; c < n; ++c) s[c] = cpu::unpack_sign(bits.data(), c);
    std::vector<std::uint64_t> again(bits.size());
    cpu::pack_signs(s.data(), n, again.data());
    CHECK(again == bits);
    const auto s32 = as_u32(bits);
    for (index_t c = 0; c < n; ++c) bad += kn::sign_bit(s32.data(), c) != ((bits[c >> 6] >> (c & 63)) & 1u);
    CHECK(bad == 0);
  }
}

TEST_CASE("sign kernels: the CUDA per-element arithmetic (LOWBIT_HD) on the host") {
  CHECK(kn::sign_select_add(1.5f, 2.0f, 1u) == 3.5f);
  CHECK(kn::sign_select_add(1.5f, 2.0f, 0u) == 1.5f);
  CHECK(kn::sign_combine(3.0f, 4.0f) == 2.0f);
  const float w[4] = {1.0f, 2.0f, 4.0f, 8.0f};
  for (std::uint32_t nibble = 0; nibble < 16; ++nibble)
    CHECK(kn::sign_quad_selected(w[0], w[1], w[2], w[3], nibble) == static_cast<float>(nibble));
  // sign_quad_nibble: bits 4q..4q+3
  std::vector<std::uint32_t> s32 = {0x87654321u, 0xFEDCBA98u};
  for (index_t q = 0; q < 16; ++q) {
    std::uint32_t want = 0;
    for (int j = 0; j < 4; ++j) want |= kn::sign_bit(s32.data(), 4 * q + j) << j;
    CHECK(kn::sign_quad_nibble(s32.data(), q) == want);
    CHECK(kn::sign_quad_nibble(s32.data(), q) == ((q < 8 ? 0x87654321u : 0xFEDCBA98u) >> (4 * (q % 8)) & 0xFu));
  }
}

TEST_CASE("sign kernels: every path equals the reference and dense W x s, small and odd shapes") {
  constexpr index_t shapes[][2] = {{1, 1}, {7, 100}, {64, 64}, {33, 1000}, {5, 17}, {3, 31}, {9, 33}, {4, 48}};
  std::uint64_t seed = 100;
  for (const auto& s : shapes)
    for (Signs kind : {Signs::Random, Signs::AllPlus, Signs::AllMinus}) check_sign_paths(s[0], s[1], kind, seed++);
}

TEST_CASE("sign kernels: every path equals the reference and dense W x s, model shapes") {
  constexpr index_t shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}};
  std::uint64_t seed = 200;
  for (const auto& s : shapes)
    for (Signs kind : {Signs::Random, Signs::AllPlus, Signs::AllMinus}) check_sign_paths(s[0], s[1], kind, seed++);
}

TEST_CASE("sign kernels: results do not depend on the thread count") {
  Rng rng(300);
  const Layer l = make_layer(577, 1000, rng);
  const auto bits = make_signs(1000, Signs::Random, rng, true);
  std::vector<float> one(577), two(577);
  const int saved = max_threads();
  set_num_threads(1);
  cpu::sign_matvec(l.w.data(), l.rowsum.data(), bits.data(), 577, 1000, one.data());
  set_num_threads(2);
  cpu::sign_matvec(l.w.data(), l.rowsum.data(), bits.data(), 577, 1000, two.data());
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("sign kernels: BCQ popcount path equals dequantized W times s") {
  check_bcq_sign<BCQ<2, 128>>(64, 576, 1);
  check_bcq_sign<BCQ<2, 128>>(576, 1536, 2);
  check_bcq_sign<BCQ<3, whole_row>>(64, 576, 3);
  check_bcq_sign<BCQ<3, whole_row>>(17, 1536, 4);
  check_bcq_sign<BCQ<1, 128>>(576, 576, 5);
  check_bcq_sign<BCQ<1, 128>>(3, 1536, 6, Signs::AllPlus);
  check_bcq_sign<BCQ<2, 128>>(5, 576, 7, Signs::AllMinus);
  // tails: a short last group, a partial last word, whole-row groups of odd width, a single column
  check_bcq_sign<BCQ<2, 128>>(37, 1000, 8);
  check_bcq_sign<BCQ<3, 32>>(5, 129, 9);
  check_bcq_sign<BCQ<4, whole_row>>(17, 4097, 10);
  check_bcq_sign<BCQ<1, whole_row>>(3, 100, 11);
  check_bcq_sign<BCQ<3, 64>>(2, 1, 12);
}
