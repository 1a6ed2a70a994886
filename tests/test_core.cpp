// Core vocabulary: bit packing round trips for every width, fp16/bf16 conversion against exact
// references, the RNG's determinism and state round trip, parallel_for coverage, errors, progress logs.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <lowbit/lowbit.hpp>
#include <set>

using namespace lowbit;

TEST_CASE("bit packing round-trips every width and every length") {
  Rng rng(7);
  for (int bits : {1, 2, 3, 4, 5, 6, 7, 8, 16}) {
    for (index_t n : {0, 1, 5, 31, 32, 33, 97, 1000}) {
      std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
      for (auto& c : codes) c = static_cast<std::uint32_t>(rng.below(1ull << bits));
      auto words = pack_codes(codes.data(), n, bits);
      CHECK(static_cast<index_t>(words.size()) == packed_words(n, bits));
      CHECK(unpack_codes(words.data(), n, bits) == codes);
      for (index_t i = 0; i < n; ++i) {
        std::uint32_t v = 0;
        switch (bits) {
          case 3: v = unpack_code<3>(words.data(), i); break;
          case 4: v = unpack_code<4>(words.data(), i); break;
          case 16: v = unpack_code<16>(words.data(), i); break;
          default: v = unpack_code(words.data(), i, bits);
        }
        REQUIRE(v == codes[static_cast<std::size_t>(i)]);
      }
    }
  }
}

TEST_CASE("packing layout is the documented little-endian bit stream") {
  const std::uint32_t codes[3] = {5, 2, 7};  // 3-bit codes: 101, 010, 111 -> bits 0..8 = 1 0 1 0 1 0 1 1 1
  auto words = pack_codes(codes, 3, 3);
  CHECK(words[0] == (5u | (2u << 3) | (7u << 6)));
  std::uint32_t big = 9;
  CHECK_THROWS_AS(pack_codes(&big, 1, 3), lowbit::Error);
  CHECK_THROWS_AS(pack_codes(codes, 3, 9), lowbit::Error);
}

TEST_CASE("fp16 conversion is exact round-to-nearest-even") {
  // Every half value converts to float and back unchanged.
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_bits_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(half_bits_to_float(float_to_half_bits(f))));
      continue;
    }
    REQUIRE(float_to_half_bits(f) == h);
  }
  CHECK(half_bits_to_float(float_to_half_bits(1.0f)) == 1.0f);
  CHECK(float_to_half_bits(65504.0f) == 0x7bff);
  CHECK(float_to_half_bits(65520.0f) == 0x7c00);                      // rounds to inf
  CHECK(float_to_half_bits(1.0f + 0x1.0p-11f) == 0x3c00);             // tie -> even
  CHECK(float_to_half_bits(1.0f + 3 * 0x1.0p-11f) == 0x3c02);         // tie -> even (up)
  CHECK(float_to_half_bits(0x1.0p-25f) == 0x0000);                    // tie at half min subnormal -> 0
  CHECK(float_to_half_bits(0x1.8p-25f) == 0x0001);
  // Random floats: the result is the nearest half (checked against neighbours).
  Rng rng(3);
  for (int i = 0; i < 100000; ++i) {
    const float f = static_cast<float>(rng.normal() * std::pow(10.0, rng.uniform() * 8 - 5));
    const std::uint16_t h = float_to_half_bits(f);
    const float back = half_bits_to_float(h);
    if (std::isinf(back)) continue;
    const float up = half_bits_to_float(static_cast<std::uint16_t>(h + 1));
    const float down = half_bits_to_float(static_cast<std::uint16_t>(h == 0 || h == 0x8000 ? h : h - 1));
    REQUIRE(std::fabs(back - f) <= std::fabs(up - f));
    REQUIRE(std::fabs(back - f) <= std::fabs(down - f));
  }
}

TEST_CASE("bf16 conversion") {
  CHECK(float_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(bf16_bits_to_float(0x3f80) == 1.0f);
  CHECK(float_to_bf16_bits(bits_as_float(0x3f808000u)) == 0x3f80);  // tie -> even
  CHECK(float_to_bf16_bits(bits_as_float(0x3f818000u)) == 0x3f82);  // tie -> even (up)
  CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits(NAN))));
}

TEST_CASE("Rng is deterministic, restorable and unbiased enough") {
  Rng a(42), b(42), c(43);
  CHECK(a.next_u64() == b.next_u64());
  CHECK(a.next_u64() != c.next_u64());
  auto saved = a.state();
  const auto x = a.next_u64();
  a.set_state(saved);
  CHECK(a.next_u64() == x);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double z = a.normal();
    sum += z;
    sq += z * z;
  }
  CHECK(std::fabs(sum / n) < 0.01);
  CHECK(std::fabs(sq / n - 1.0) < 0.02);
  for (int i = 0; i < 1000; ++i) CHECK(a.below(7) < 7);
}

TEST_CASE("parallel_for covers every index exactly once") {
  std::vector<int> hits(10007, 0);
  parallel_for(0, 10007, [&](index_t lo, index_t hi) {
    for (index_t i = lo; i < hi; ++i) hits[static_cast<std::size_t>(i)] += 1;
  });
  for (int h : hits) REQUIRE(h == 1);
}

TEST_CASE("errors carry their message") {
  try {
    LOWBIT_CHECK(1 + 1 == 3, "file ", "x.bin", ": expected ", 3, ", found ", 2);
    FAIL("no throw");
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()) == "file x.bin: expected 3, found 2");
  }
}

namespace {
// Runs `body` with stderr redirected to a temporary file (not a terminal) and returns what it wrote.
template <class Body>
std::string captured_stderr(Body body) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(::fileno(tmp), STDERR_FILENO);
  body();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  std::rewind(tmp);
  for (int c; (c = std::fgetc(tmp)) != EOF;) out.push_back(static_cast<char>(c));
  std::fclose(tmp);
  return out;
}
std::size_t count_lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST_CASE("Progress in a log prints the completed line once, and a final line for unfinished work") {
  const std::string done = captured_stderr([] {
    lowbit::Progress p("work", 3, "step");
    for (int i = 0; i < 3; ++i) p.update(1, "ok");
    p.finish();
  });
  CHECK(count_lines(done) == 1);
  CHECK(done.find("[work] 3/3 (100.0%)") != std::string::npos);
  const std::string partial = captured_stderr([] {
    lowbit::Progress p("work", 3, "step");
    p.update(2);
  });  // the destructor finishes it
  CHECK(count_lines(partial) == 1);
  CHECK(partial.find("[work] 2/3") != std::string::npos);
  CHECK(captured_stderr([] { lowbit::Progress("quiet", 2, "step", true).update(2); }).empty());
}
